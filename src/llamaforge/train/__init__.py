"""Training: the one Trainer loop, its optimizer and schedule, parallelism, checkpoints and metrics.

OpenMP threads that wait by spinning steal the cores their peers need when a CPU is shared (other
jobs, several ranks per machine): measured 10x slower training of the tiny config at load 5 on 2
cores. Waiting passively costs nothing measurable when the machine is idle, so it is the default
unless the user set OMP_WAIT_POLICY (it must be set before torch loads its OpenMP runtime).
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
