"""SFT on the one Trainer: runs from the CLI, resumes exactly after SIGKILL, writes a loadable model."""

import json
import os
import subprocess
import sys

import pytest
import torch

from llamaforge.checkpoint import load_model


def _sft_cmd(init, data, out, *extra):
    return [sys.executable, "-m", "llamaforge", "sft", "--config", "configs/sft/tiny.toml", "--init", str(init),
            "--data.path", str(data), "--out", str(out), "--train.steps=6", "--train.batch_size=4",
            "--train.micro_batch=2", "--train.seq_len=128", "--checkpoint.every=2", "--logging.every=1",
            "--logging.eval_every=0", "--logging.progress=false", "--train.threads=1", "--optim.warmup_steps=1", *extra]


def _losses(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_checkpoint, world_dir):
    out = tmp_path_factory.mktemp("sft") / "a"
    r = subprocess.run(_sft_cmd(tiny_checkpoint, world_dir / "sft.jsonl", out), capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def test_sft_trains_and_writes_final(uninterrupted, tiny_checkpoint, world_dir):
    losses = _losses(uninterrupted)
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]
    m = load_model(uninterrupted / "final")
    # Six steps at lr 1e-3 lower the answer-token loss on the training data (single batches are too noisy).
    from llamaforge.align.sft import make_loss
    from llamaforge.checkpoint import find_tokenizer
    from llamaforge.data.chat import collate, encode_sft_file, pack

    tok = find_tokenizer(tiny_checkpoint)
    rows = pack(encode_sft_file(world_dir / "sft.jsonl", tok, 128)[:64], 128, "isolated")
    batch = collate(rows)
    loss_fn = make_loss("isolated")
    with torch.no_grad():
        before, _ = loss_fn(load_model(tiny_checkpoint).eval(), batch)
        after, _ = loss_fn(m.eval(), batch)
    assert after < before - 0.05, (before, after)
    assert (uninterrupted / "final" / "tokenizer.model").read_bytes() == \
        (tiny_checkpoint / "tokenizer.model").read_bytes()
    man = json.loads((uninterrupted / "manifest.json").read_text())
    assert man["command"] == "sft" and 0 < man["packing_efficiency"] <= 1
    assert m.args.vocab_size == load_model(tiny_checkpoint).args.vocab_size


def test_sft_resume_after_sigkill_is_exact(tmp_path, uninterrupted, tiny_checkpoint, world_dir):
    root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    out = tmp_path / "b"
    cmd = _sft_cmd(tiny_checkpoint, world_dir / "sft.jsonl", out)
    killed = subprocess.run(cmd, capture_output=True, text=True, cwd=root,
                            env={**os.environ, "LLAMAFORGE_FAULT": "kill_in_save:4"})
    assert killed.returncode == -9
    assert not (out / "final").exists()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed from" in done.stdout + done.stderr
    a, b = _losses(uninterrupted), _losses(out)
    assert sorted(b) == [1, 2, 3, 4, 5, 6]
    assert all(a[s] == b[s] for s in a), (a, b)


def test_sft_bad_data_names_line(tmp_path, tiny_checkpoint):
    from llamaforge.align.sft import main
    from llamaforge.errors import UserError

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\n{"messages": [{"role": "assistant", "content": "x"}]}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: message 0"):
        main(["--init", str(tiny_checkpoint), "--data.path", str(bad), "--out", str(tmp_path / "o")])
    with pytest.raises(UserError, match="--init"):
        main(["--data.path", str(bad), "--out", str(tmp_path / "o")])
