"""SFT and reward models under real torchrun processes (gloo, FSDP2): the same losses as one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _losses(out):
    return {r["step"]: r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
            if "loss" in r}


@pytest.mark.parametrize("recipe", ["sft", "reward"])
def test_dp2_matches_one_process(tmp_path, tiny_checkpoint, world_dir, recipe):
    if recipe == "sft":
        args = ["sft", "--config", "configs/sft/tiny.toml", "--init", str(tiny_checkpoint),
                "--data.path", str(world_dir / "sft.jsonl"), "--train.seq_len=128"]
    else:
        args = ["reward", "train", "--config", "configs/reward/tiny.toml", "--init", str(tiny_checkpoint),
                "--data.path", str(world_dir / "prefs_helpful.jsonl"), "--kind", "helpfulness", "--train.seq_len=128"]
    common = ["--train.steps=3", "--train.batch_size=8", "--train.micro_batch=4", "--logging.every=1",
              "--logging.eval_every=0", "--logging.progress=false", "--checkpoint.every=0", "--optim.warmup_steps=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "llamaforge", *args, *common, "--out", str(tmp_path / "one")],
                         cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "llamaforge", *args, *common, "--parallel.dp_shard=2", "--out", str(tmp_path / "two")],
                         cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert sorted(a) == sorted(b) == [1, 2, 3]
    for s in a:
        assert abs(a[s] - b[s]) <= 1e-4 * abs(a[s]), (a, b)
    assert (tmp_path / "two" / "final" / "llamaforge.json").is_file()


def test_rank_batches_same_count_on_every_rank():
    """An evaluation under FSDP must run as many forwards on every rank, or the others wait forever."""
    from llamaforge.align.common import rank_batches

    items = list(range(9))
    per_rank = [rank_batches(items, 4, r, 2) for r in range(2)]
    assert [len(b) for b in per_rank] == [2, 2]
    real = sorted(x for b in per_rank for chunk, pad in b if not pad for x in chunk)
    assert real == items  # every item scored once
    assert per_rank[1][1] == ([0], True)  # rank 1 is short: one padding batch
    assert rank_batches(items, 4, 0, 1) == [([0, 1, 2, 3], False), ([4, 5, 6, 7], False), ([8], False)]
    assert rank_batches([], 4, 0, 2) == []
