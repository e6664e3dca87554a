"""Distributed pretraining with real `torchrun` processes on gloo (2 ranks): FSDP2, TP+SP, resharding resume."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")

pytestmark = pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed beside python")

TOML = """
[model]
preset = "tiny-1m"
dim = 64
n_layers = 2
n_heads = 4
n_kv_heads = 2
multiple_of = 16

[train]
steps = 12
batch_size = 4
seq_len = 32

[optim]
lr = 1e-2
warmup_steps = 3

[checkpoint]
every = 3
keep = 3

[logging]
every = 1
eval_every = 0
eval_windows = 8
progress = false
plots = false
"""


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def launch(n: int, out: Path, cfg: Path, data: Path, *extra: str, fault: str = "", samples: Path | None = None,
           check: bool = True) -> subprocess.CompletedProcess:
    args = ["pretrain", "--config", str(cfg), "--out", str(out), "--data.path", str(data), *extra]
    if n == 1:
        cmd = [sys.executable, "-m", "llamaforge", *args]
    else:
        cmd = [str(TORCHRUN), "--standalone", f"--nproc_per_node={n}", "-m", "llamaforge", *args]
    env = _env(LLAMAFORGE_FAULT=fault, **({"LLAMAFORGE_SAMPLE_LOG": str(samples)} if samples else {}))
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def losses(out: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def trajectory(*logs: tuple[Path, range]) -> list[tuple]:
    """Samples of the given steps from each run's per-rank logs, in step and rank order."""
    out = []
    for samples, steps in logs:
        rows = {}
        for f in sorted(samples.parent.glob(samples.name + ".rank*")):
            rank = int(f.name.rsplit("rank", 1)[1])
            for line in f.read_text().splitlines():
                r = json.loads(line)
                if r["step"] in steps:
                    rows.setdefault((r["step"], rank), []).extend(map(tuple, r["ids"]))
        out += [i for k in sorted(rows) for i in rows[k]]
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory, dist_shards):
    d = tmp_path_factory.mktemp("dist")
    cfg = d / "tiny.toml"
    cfg.write_text(TOML)
    ref = d / "ref"
    launch(1, ref, cfg, dist_shards, samples=d / "ref_samples")
    return d, cfg, dist_shards, ref


def test_dp2_and_tp2_match_single_process(setup):
    d, cfg, data, ref = setup
    five = ("--train.steps=5", "--checkpoint.every=0", "--checkpoint.final=false")
    launch(1, d / "single5", cfg, data, *five)
    want = losses(d / "single5")
    for name, flag in (("dp2", "--parallel.dp_shard=2"), ("tp2", "--parallel.tp=2")):
        out = d / name
        launch(2, out, cfg, data, flag, *five)
        got = losses(out)
        assert sorted(got) == [1, 2, 3, 4, 5]
        for s in want:
            assert got[s] == pytest.approx(want[s], rel=1e-4), (name, s)


def test_kill_two_ranks_resume_two_ranks(setup):
    d, cfg, data, ref = setup
    out = d / "kill22"
    full = d / "full2"
    launch(2, full, cfg, data, "--parallel.dp_shard=2", "--checkpoint.final=false")
    p = launch(2, out, cfg, data, "--parallel.dp_shard=2", fault="kill_in_save:9", check=False)
    assert p.returncode != 0 and not (out / "checkpoints" / "step_9").exists()
    launch(2, out, cfg, data, "--parallel.dp_shard=2", "--checkpoint.final=false")
    assert losses(out) == losses(full)


@pytest.mark.parametrize("first,second", [(2, 1), (1, 2)])
def test_resume_on_another_world_size(setup, first, second):
    d, cfg, data, ref = setup
    out, samples = d / f"re{first}{second}", d / f"re{first}{second}_samples"
    flags = {1: [], 2: ["--parallel.dp_shard=2"]}
    p = launch(first, out, cfg, data, *flags[first], fault="kill_at_step:7", samples=samples, check=False)
    assert p.returncode != 0
    assert (out / "checkpoints" / "step_6" / "trainer_state.json").is_file()
    r = launch(second, out, cfg, data, *flags[second], samples=d / f"re{first}{second}_samples_b")
    assert f"saved on {first} ranks, resuming on {second}" in r.stdout
    got, want = losses(out), losses(ref)
    assert sorted(got) == list(range(1, 13))
    for s in range(7, 13):
        assert got[s] == pytest.approx(want[s], rel=1e-5, abs=1e-5), s
    seen = trajectory((samples, range(1, 7)), (d / f"re{first}{second}_samples_b", range(7, 13)))
    assert len(seen) == len(set(seen)) == 12 * 4  # every sample once, none repeated
    assert seen == trajectory((d / "ref_samples", range(1, 13)))  # and the same global batches in order
    shutil.rmtree(out / "checkpoints", ignore_errors=True)


def test_tp_checkpoint_loads_single_process(setup):
    d, cfg, data, ref = setup
    out = d / "tp_then_1"
    p = launch(2, out, cfg, data, "--parallel.tp=2", fault="kill_at_step:4", check=False)
    assert p.returncode != 0
    launch(1, out, cfg, data, "--train.steps=12")
    got, want = losses(out), losses(ref)
    for s in range(5, 13):
        assert got[s] == pytest.approx(want[s], rel=1e-5, abs=1e-5), s
    from llamaforge.checkpoint import load_model

    assert load_model(out / "final").args.n_heads == 4


def test_shipped_tiny_config_runs_with_tp2(setup):
    d, _, data, _ = setup
    out = d / "tiny_tp2"
    launch(2, out, REPO / "configs" / "pretrain" / "tiny.toml", data, "--parallel.tp=2", "--train.steps=2",
           "--logging.every=1", "--logging.eval_every=0", "--checkpoint.every=0")
    assert sorted(losses(out)) == [1, 2]
    from llamaforge.checkpoint import load_model

    assert load_model(out / "final").args.n_kv_heads == 2


@pytest.mark.slow
def test_2d_mesh_and_full_stack_match_single_process(setup):
    """dp_shard=2 x tp=2 on 4 processes, and FSDP2 + selective checkpointing + compile on 2 (torchtitan's order)."""
    d, cfg, data, _ = setup
    five = ("--train.steps=5", "--checkpoint.every=0", "--checkpoint.final=false")
    if not (d / "single5").exists():
        launch(1, d / "single5", cfg, data, *five)
    want = losses(d / "single5")
    launch(4, d / "mesh2d", cfg, data, "--parallel.dp_shard=2", "--parallel.tp=2", *five)
    launch(2, d / "stack", cfg, data, "--parallel.dp_shard=2", "--parallel.activation_checkpointing=selective",
           "--parallel.compile=true", *five)
    for name in ("mesh2d", "stack"):
        got = losses(d / name)
        for s in want:
            assert got[s] == pytest.approx(want[s], rel=1e-4), (name, s)
