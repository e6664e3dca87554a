"""Helpers for the pretraining tests: run the CLI in a subprocess, read losses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def run_cli(args: list[str], env: dict[str, str] | None = None, check: bool = True,
            timeout: float = 240) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "llamaforge", *args], env=env or cli_env(), capture_output=True,
                       text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"llamaforge {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def losses(run: Path) -> dict[int, float]:
    from llamaforge.train.metrics import read_metrics

    return {r["step"]: r["loss"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r}
