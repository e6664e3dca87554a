"""`llamaforge pretrain` as a user runs it: outputs, and exact resume after SIGKILL (mid-run and mid-save)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_helpers import cli_env, losses, run_cli

from llamaforge.checkpoint import load_model
from llamaforge.train.metrics import read_metrics


def _args(tiny_toml, shards, out):
    return ["pretrain", "--config", str(tiny_toml), "--out", str(out), "--data.path", str(shards)]


def _samples(log: Path) -> dict[int, list]:
    """Samples of each step in the final trajectory (a step re-run after a kill replaces the lost one)."""
    out: dict[int, list] = {}
    for line in Path(f"{log}.rank0").read_text().splitlines():
        r = json.loads(line)
        out[r["step"]] = r["ids"]
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_toml, shards):
    out = tmp_path_factory.mktemp("ref") / "run"
    log = out.parent / "samples"
    run_cli(_args(tiny_toml, shards, out), env=cli_env(LLAMAFORGE_SAMPLE_LOG=str(log)))
    return out, log


def test_pretrain_outputs(reference, tiny_toml, shards):
    out, _ = reference
    rows = read_metrics(out / "metrics.jsonl")
    train = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train] == list(range(1, 13))
    for k in ("step", "loss", "lr", "grad_norm", "tokens_per_s", "mfu", "tokens_seen"):
        assert k in train[-1]
    vals = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in vals] == [6, 12] and vals[-1]["val_loss"] < vals[0]["val_loss"]
    assert train[-1]["loss"] < train[0]["loss"] - 0.3
    assert "[train]" in (out / "config.toml").read_text() and "steps = 12" in (out / "config.toml").read_text()
    steps = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert steps == ["step_12", "step_9"]  # keep = 2
    model = load_model(out / "final")
    assert model.args.dim == 64 and (out / "final" / "tokenizer.model").is_file()
    man = json.loads((out / "manifest.json").read_text())
    assert man["command"] == "pretrain" and man["summary"]["steps"] == 12 and "compute" in man
    # Running the same command again is a no-op that says so.
    again = run_cli(_args(tiny_toml, shards, out))
    assert "already complete" in again.stdout


def test_sigkill_mid_run_resumes_exactly(reference, tmp_path, tiny_toml, shards):
    ref_out, ref_log = reference
    out, log = tmp_path / "run", tmp_path / "samples"
    env = cli_env(LLAMAFORGE_SAMPLE_LOG=str(log))
    p = subprocess.Popen([sys.executable, "-m", "llamaforge", *_args(tiny_toml, shards, out)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        m = out / "metrics.jsonl"
        if m.exists() and any(r.get("step", 0) >= 5 for r in read_metrics(m)):
            break
        time.sleep(0.02)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    done = losses(out)
    assert 5 <= max(done) < 12, "the kill should land mid-run"
    run_cli(_args(tiny_toml, shards, out), env=env)
    assert losses(out) == losses(ref_out)  # bit-identical, every step
    got, ref = _samples(log), _samples(ref_log)
    assert got == ref
    flat = [tuple(i) for s in sorted(got) for i in got[s]]
    assert len(flat) == len(set(flat))  # no sample served twice


def test_sigkill_during_checkpoint_save(reference, tmp_path, tiny_toml, shards):
    ref_out, _ = reference
    out = tmp_path / "run"
    p = run_cli(_args(tiny_toml, shards, out), env=cli_env(LLAMAFORGE_FAULT="kill_in_save:6"), check=False)
    assert p.returncode == -signal.SIGKILL
    ck = out / "checkpoints"
    assert (ck / "step_3" / "trainer_state.json").is_file() and not (ck / "step_6").exists()
    assert (ck / ".step_6.tmp").exists()  # the half-written save is left aside, never used
    run_cli(_args(tiny_toml, shards, out))
    assert losses(out) == losses(ref_out)
