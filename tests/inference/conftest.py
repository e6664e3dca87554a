"""Fixtures of the inference tests: the tiny model loaded once, and a real server subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

API_KEY = "test-key"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    from llamaforge.checkpoint import load_model

    return load_model(tiny_checkpoint).eval()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@pytest.fixture(scope="session")
def server(tiny_checkpoint):
    """`llamaforge serve` on a free port: 4 slots, 40 waiting rows, an API key. Yields the base URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "llamaforge", "serve", "--model", str(tiny_checkpoint), "--port", str(port),
           "--api-key", API_KEY, "--max-batch", "4", "--max-queue", "40", "--threads", "1"]
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"server did not start:\n{proc.stdout.read()}")
        time.sleep(0.2)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def sub_env() -> dict[str, str]:
    """Environment for `python -m llamaforge ...` subprocesses (finds the source tree)."""
    return subprocess_env()
