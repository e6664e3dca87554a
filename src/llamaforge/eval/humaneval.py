"""HumanEval execution sandbox and the unbiased pass@k estimator (Chen et al. 2021).

Generated code is untrusted. Each program runs in its own subprocess: `python -I` (isolated
mode: no user site, no PYTHON* variables) in a fresh temporary directory that is deleted after,
with a wall-clock timeout, CPU / memory / file-size / process-count limits (setrlimit), its own
session (the whole process group is killed on timeout), an empty environment, and no network:
inside a new user + network namespace (`unshare -rn`, only a loopback that is down) where the
kernel allows it. Where it does not, `network_isolated()` is False and the result says so; run
HumanEval in a container without network there. This is not a security boundary against a
determined attacker (no seccomp); it stops accidents and the usual damage of a bad completion.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass


@functools.lru_cache(maxsize=1)
def network_isolated() -> bool:
    """True when `unshare -rn` works here (new user and network namespace, no interfaces up)."""
    exe = shutil.which("unshare")
    if exe is None:
        return False
    try:
        r = subprocess.run([exe, "-rn", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def _limits(memory_mb: int, cpu_s: int) -> None:  # runs in the child before exec
    import resource

    os.setsid()
    mem = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024 * 1024, 16 * 1024 * 1024))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


@dataclass
class RunResult:
    passed: bool
    status: str  # "passed", "failed", "timeout"
    output: str


def run_program(program: str, timeout: float = 5.0, memory_mb: int = 1024) -> RunResult:
    """Run `program` as a Python script in the sandbox; passed = exit status 0 within the timeout."""
    with tempfile.TemporaryDirectory(prefix="llamaforge-exec-") as tmp:
        script = os.path.join(tmp, "program.py")
        with open(script, "w", encoding="utf-8") as f:
            f.write(program)
        cmd = [sys.executable, "-I", "-B", script]
        if network_isolated():
            cmd = [shutil.which("unshare") or "unshare", "-rn", *cmd]
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT,
                                preexec_fn=functools.partial(_limits, memory_mb, int(math.ceil(timeout)) + 1))
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, _ = proc.communicate()
            return RunResult(False, "timeout", out.decode("utf-8", "replace")[-2000:])
        text = out.decode("utf-8", "replace")[-2000:]
        return RunResult(proc.returncode == 0, "passed" if proc.returncode == 0 else "failed", text)


def humaneval_program(prompt: str, completion: str, test: str, entry_point: str) -> str:
    """The program HumanEval's `check_correctness` runs: prompt + completion, the tests, check()."""
    return f"{prompt}{completion}\n\n{test}\n\ncheck({entry_point})\n"


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimator 1 - C(n-c, k) / C(n, k) of Chen et al. (2021), computed stably."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem, got {n}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def score_problem(doc: dict, completions: Sequence[str], ks: Sequence[int] = (1,), timeout: float = 5.0
                  ) -> dict[str, float]:
    """pass@k of one HumanEval problem (fields prompt, test, entry_point) for its completions."""
    c = sum(run_program(humaneval_program(doc["prompt"], comp, doc["test"], doc["entry_point"]), timeout).passed
            for comp in completions)
    return {f"pass@{k}": pass_at_k(len(completions), c, k) for k in ks if k <= len(completions)}
