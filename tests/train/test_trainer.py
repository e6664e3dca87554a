"""The Trainer in-process: schedule, accumulation, checkpointing modes, NaN stop, configs, MFU."""

from __future__ import annotations

import math

import pytest
import torch
from train_helpers import losses

from llamaforge.config import load_config
from llamaforge.data.loader import PretrainLoader, Source
from llamaforge.errors import UserError
from llamaforge.model.args import ModelArgs
from llamaforge.model.llama import Transformer
from llamaforge.train import parallel as par
from llamaforge.train.config import OptimSection, PretrainConfig, batch_layout
from llamaforge.train.metrics import mfu
from llamaforge.train.optim import lr_at
from llamaforge.train.pretrain import lm_loss
from llamaforge.train.trainer import Trainer, TrainingDiverged

ARGS = dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=16, max_seq_len=64)


def test_schedule_warmup_cosine_to_ten_percent():
    cfg = OptimSection(lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(1, cfg, 100) == pytest.approx(0.1) and lr_at(10, cfg, 100) == pytest.approx(1.0)
    assert lr_at(55, cfg, 100) == pytest.approx(0.55)  # half way down the cosine: (1 + 0.1) / 2
    assert lr_at(100, cfg, 100) == pytest.approx(0.1)
    assert all(lr_at(s, cfg, 100) >= lr_at(s + 1, cfg, 100) for s in range(10, 100))
    const = OptimSection(lr=1.0, warmup_steps=0, schedule="constant")
    assert lr_at(1, const, 100) == lr_at(100, const, 100) == 1.0


def test_batch_layout():
    assert batch_layout(8, 0, 1) == (8, 1) and batch_layout(8, 2, 2) == (2, 2)
    with pytest.raises(UserError, match="multiple of train.micro_batch"):
        batch_layout(8, 3, 1)


def test_config_overrides_and_unknown_keys(tiny_toml):
    cfg = load_config(PretrainConfig, tiny_toml, ["--train.steps=7", "--optim.lr", "0.01",
                                                  "--parallel.activation_checkpointing", "selective"])
    assert cfg.train.steps == 7 and cfg.optim.lr == 0.01 and cfg.parallel.activation_checkpointing == "selective"
    with pytest.raises(UserError, match="valid keys.*steps"):
        load_config(PretrainConfig, tiny_toml, ["--train.stepz=3"])
    with pytest.raises(UserError, match="not one of"):
        load_config(PretrainConfig, tiny_toml, ["--train.dtype=fp8"])


def test_flops_and_mfu_formula():
    a = ModelArgs.from_name("llama2-7b")
    # 6N + 12 L d T with N = 6.48B non-embedding parameters: about 4.2e10 FLOPs/token at T = 4096.
    assert a.flops_per_token(4096) == pytest.approx(6 * (6_738_415_616 - 32000 * 4096) + 12 * 32 * 4096 * 4096)
    assert mfu(1000.0, 1e9, 1e12, devices=2) == pytest.approx(0.5)


def _trainer(tmp_path, shards_dir, overrides, loss_fn=lm_loss, steps=4):
    cfg = load_config(PretrainConfig, None, [f"--train.steps={steps}", "--train.batch_size=4", "--train.seq_len=32",
                                             "--logging.progress=false", "--logging.plots=false",
                                             "--checkpoint.final=false", "--logging.every=1", "--optim.lr=3e-3",
                                             "--optim.warmup_steps=1", *overrides])
    info = par.DistInfo()
    micro, _ = Trainer.layout(cfg, info)
    loader = PretrainLoader([Source(str(shards_dir / "train"))], 32, 4, micro)
    torch.manual_seed(0)
    model = Transformer(ModelArgs(vocab_size=1000, **ARGS))
    model.init_weights()
    return Trainer(model, loss_fn, loader, cfg, tmp_path, info)


def test_grad_accumulation_matches_full_batch(tmp_path, shards):
    a = _trainer(tmp_path / "a", shards, []).fit()
    b = _trainer(tmp_path / "b", shards, ["--train.micro_batch=1"]).fit()
    assert a["last"]["loss"] == pytest.approx(b["last"]["loss"], rel=1e-5)
    la, lb = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert all(la[s] == pytest.approx(lb[s], rel=1e-5) for s in la) and len(la) == 4


@pytest.mark.parametrize("mode", ["selective", "full"])
def test_activation_checkpointing_same_losses(tmp_path, shards, mode):
    ref = _trainer(tmp_path / "none", shards, [], steps=2).fit()
    got = _trainer(tmp_path / mode, shards, [f"--parallel.activation_checkpointing={mode}"], steps=2).fit()
    assert got["last"]["loss"] == pytest.approx(ref["last"]["loss"], rel=1e-6)


def test_selective_policy_saves_matmuls():
    ops = par._save_ops()
    assert torch.ops.aten.mm.default in ops and torch.ops.aten.mul.Tensor not in ops


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path, shards):
    calls = {"n": 0}

    def poisoned(model, batch):
        calls["n"] += 1
        loss, m = lm_loss(model, batch)
        return (loss * math.nan if calls["n"] >= 3 else loss), m

    tr = _trainer(tmp_path, shards, ["--checkpoint.every=2"], loss_fn=poisoned, steps=6)
    with pytest.raises(TrainingDiverged, match=r"loss is nan .* at step 3.*step_2"):
        tr.fit()
    assert (tmp_path / "checkpoints" / "step_2" / "trainer_state.json").is_file()
    assert not (tmp_path / "checkpoints" / "step_3").exists()


def test_bf16_autocast_trains(tmp_path, shards):
    r = _trainer(tmp_path, shards, ["--train.dtype=bf16"], steps=3).fit()
    assert math.isfinite(r["last"]["loss"])


def test_tp_needs_divisible_heads():
    from llamaforge.train.parallel import apply_tp

    class Mesh:
        def size(self):
            return 3

    with pytest.raises(UserError, match="n_heads = 4 is not divisible by parallel.tp = 3"):
        apply_tp(Transformer(ModelArgs(vocab_size=100, **ARGS)), Mesh())
    with pytest.raises(UserError, match="must equal the world size"):
        par.resolve_degrees(4, 3, -1)
    assert par.resolve_degrees(4, -1, 2) == (2, 2)


@pytest.mark.parametrize("name", ["tiny", "llama2-7b", "llama2-13b", "llama2-70b", "tinyllama-1.1b"])
def test_shipped_configs_are_consistent(name):
    from pathlib import Path

    from llamaforge.train.pretrain import model_args

    path = Path(__file__).resolve().parents[2] / "configs" / "pretrain" / f"{name}.toml"
    cfg = load_config(PretrainConfig, path, [])
    args = model_args(cfg, 32000 if cfg.model.vocab_size else 4096)
    tp = cfg.parallel.tp
    assert args.n_heads % tp == 0 and args.n_kv_heads % tp == 0
    if name == "tiny":
        assert args.n_heads % 2 == 0 and args.n_kv_heads % 2 == 0  # runs with --parallel.tp=2
        return
    dp = max(1, cfg.parallel.dp_shard)
    assert dp * tp in (1, 8, 16, 64)
    batch_layout(cfg.train.batch_size, cfg.train.micro_batch, dp)
    if name.startswith("llama2"):  # the paper's hyperparameters (Llama 2 section 2.2)
        assert cfg.train.batch_size * cfg.train.seq_len == 4 * 1024 * 1024
        assert (cfg.optim.beta1, cfg.optim.beta2, cfg.optim.eps, cfg.optim.weight_decay, cfg.optim.grad_clip,
                cfg.optim.warmup_steps, cfg.optim.min_lr_ratio) == (0.9, 0.95, 1e-5, 0.1, 1.0, 2000, 0.1)
        assert cfg.optim.lr == (1.5e-4 if name == "llama2-70b" else 3e-4)


@pytest.mark.slow
def test_compile_per_block_same_losses(tmp_path, shards):
    ref = _trainer(tmp_path / "eager", shards, [], steps=2).fit()
    got = _trainer(tmp_path / "compiled", shards, ["--parallel.compile=true"], steps=2).fit()
    assert got["last"]["loss"] == pytest.approx(ref["last"]["loss"], rel=1e-4)


def test_run_ends_when_every_source_is_spent(tmp_path, shards):
    import numpy as np

    from llamaforge.data.shards import ShardWriter

    w = ShardWriter(tmp_path / "small", vocab_size=1000, eos_id=2)
    w.add_tokens(np.arange(32 * 4 * 3 + 1) % 1000, 1)  # 12 windows of 32: three steps of 4
    w.close()
    tr = _trainer(tmp_path / "run", shards, [], steps=10)
    tr.batches = PretrainLoader([Source(str(tmp_path / "small"), 1.0, 1.0)], 32, 4, 4)
    summary = tr.fit()
    assert summary["steps"] == 3 and "max epochs" in summary["stop_reason"]


def test_cli_errors_are_user_errors(tmp_path, tiny_toml, capsys):
    from llamaforge.cli import main

    assert main(["pretrain", "--config", str(tiny_toml), "--out", str(tmp_path), "--train.stepz=1"]) == 2
    assert "valid keys" in capsys.readouterr().err
    assert main(["pretrain", "--config", str(tiny_toml), "--out", str(tmp_path)]) == 2
    assert "--data.path" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "tokenize", "--help"])
    assert "example:" in capsys.readouterr().out


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_fused_cross_entropy_matches_plain(dtype):
    from llamaforge.train.losses import can_fuse, lm_cross_entropy

    torch.manual_seed(0)
    model = Transformer(ModelArgs(vocab_size=1000, **ARGS))
    model.init_weights()
    x = torch.randint(0, 1000, (3, 41))
    grads, losses_ = [], []
    for fused in (False, True):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            loss = lm_cross_entropy(model, x[:, :-1], x[:, 1:], fused=fused)
        loss.backward()
        losses_.append(loss.item())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    tol = 1e-5 if dtype is None else 2e-2
    assert can_fuse(model) and losses_[0] == pytest.approx(losses_[1], rel=tol / 10)
    assert torch.allclose(grads[0], grads[1], rtol=tol, atol=tol * 1e-2)
