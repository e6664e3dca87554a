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
                         cwd=ROOT, capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "llamaforge", *args, *common, "--parallel.dp_shard=2", "--out", str(tmp_path / "two")],
                         cwd=ROOT, capture_output=True, text=True, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert sorted(a) == sorted(b) == [1, 2, 3]
    for s in a:
        assert abs(a[s] - b[s]) <= 1e-4 * abs(a[s]), (a, b)
    assert (tmp_path / "two" / "final" / "llamaforge.json").is_file()
