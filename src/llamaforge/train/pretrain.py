"""`llamaforge pretrain`: next-token prediction on token shards with the one Trainer.

The recipe builds the model from `[model]`, the single-pass mixture loader from `[data]`, the
cross-entropy loss and the validation pass, and hands them to `Trainer`. Run it again with the
same arguments to resume from the newest complete checkpoint; under torchrun it trains with
FSDP2 / tensor parallel as `[parallel]` says.
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path
from typing import Any

import torch

from llamaforge.config import dump_toml, load_config
from llamaforge.data.loader import PretrainLoader, Source, ValBatches
from llamaforge.data.shards import INDEX, TokenShards, resolve_split
from llamaforge.errors import UserError
from llamaforge.io import atomic_write_text
from llamaforge.model.args import ModelArgs
from llamaforge.model.llama import Transformer
from llamaforge.train import parallel as par
from llamaforge.train.config import PretrainConfig
from llamaforge.train.losses import lm_cross_entropy
from llamaforge.train.trainer import Trainer

EPILOG = """examples:
  llamaforge pretrain --config configs/pretrain/tiny.toml --out runs/tiny --data.path shards/
  llamaforge pretrain --config configs/pretrain/tiny.toml --out runs/tiny --train.steps 200 --optim.lr=1e-3
  torchrun --standalone --nproc_per_node 2 -m llamaforge pretrain --config configs/pretrain/tiny.toml \\
      --out runs/tiny-dp2 --data.path shards/ --parallel.dp_shard=2
Running the same command again resumes from the newest complete checkpoint in OUT/checkpoints."""


def lm_loss(model: torch.nn.Module, batch: dict[str, Any], fused: bool = True) -> tuple[torch.Tensor, dict[str, Any]]:
    """Mean next-token cross-entropy over a [B, T + 1] window batch (fp32 softmax; train/losses.py)."""
    tokens = batch["tokens"]
    return lm_cross_entropy(model, tokens[:, :-1], tokens[:, 1:], fused), {}


def data_sources(cfg: PretrainConfig) -> list[Source]:
    if cfg.data.sources and cfg.data.path:
        raise UserError("give either data.path or data.sources, not both")
    if cfg.data.sources:
        return [Source(str(resolve_split(s.path, "train")), s.weight, s.epochs) for s in cfg.data.sources]
    if not cfg.data.path:
        raise UserError("no training data: pass --data.path DIR (the output of `llamaforge data tokenize`) "
                        "or set data.sources in the config")
    return [Source(str(resolve_split(cfg.data.path, "train")))]


def _data_root(cfg: PretrainConfig) -> Path:
    p = Path(cfg.data.path or cfg.data.sources[0].path)
    return p.parent if (p / INDEX).is_file() and p.name in ("train", "val") else p


def val_path(cfg: PretrainConfig) -> Path | None:
    if cfg.data.val_path:
        return resolve_split(cfg.data.val_path, "val")
    p = _data_root(cfg) / "val"
    return p if (p / INDEX).is_file() and TokenShards(p).num_tokens > 0 else None


def tokenizer_path(cfg: PretrainConfig) -> Path | None:
    if cfg.data.tokenizer:
        p = Path(cfg.data.tokenizer)
        p = p / "tokenizer.model" if p.is_dir() else p
        if not p.is_file():
            raise UserError(f"data.tokenizer {p} not found")
        return p
    p = _data_root(cfg) / "tokenizer.model"
    return p if p.is_file() else None


def model_args(cfg: PretrainConfig, vocab: int) -> ModelArgs:
    over = cfg.model.overrides()
    over.setdefault("vocab_size", vocab)
    args = ModelArgs.from_name(cfg.model.preset, **over)
    if args.vocab_size < vocab:
        raise UserError(f"model.vocab_size {args.vocab_size} is smaller than the data's vocabulary {vocab}")
    if cfg.train.seq_len > args.max_seq_len:
        raise UserError(f"train.seq_len {cfg.train.seq_len} exceeds the model's max_seq_len {args.max_seq_len}; "
                        f"set --model.max_seq_len={cfg.train.seq_len}")
    return args


def build_model(args: ModelArgs, cfg: PretrainConfig, info: par.DistInfo) -> Transformer:
    torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank and world size
    if cfg.model.init:
        from llamaforge.checkpoint import load_model

        model = load_model(cfg.model.init)
        if model.args.to_dict() != args.to_dict():
            raise UserError(f"model.init {cfg.model.init} has args {model.args.to_dict()}, the config gives "
                            f"{args.to_dict()}")
        return model
    if cfg.parallel.meta_init:
        with torch.device("meta"):
            return Transformer(args)
    model = Transformer(args)
    model.init_weights()
    return model


def make_eval_fn(path: Path, cfg: PretrainConfig, micro: int, info: par.DistInfo):
    val = ValBatches(path, cfg.train.seq_len, micro, cfg.logging.eval_windows, rank=info.dp_rank, world=info.dp)
    if len(val) == 0:
        return None

    def eval_fn(model: torch.nn.Module) -> dict[str, float]:
        total = torch.zeros((), device=info.device)
        count = 0
        for batch in val:
            loss, _ = lm_loss(model, {"tokens": batch["tokens"].to(info.device)})
            total += par.local_value(loss).float() * batch["tokens"].shape[0]
            count += batch["tokens"].shape[0]
        return {"val_loss": float(par.all_mean(total / count, info))}

    return eval_fn


def run(cfg: PretrainConfig, out: str | Path) -> dict[str, Any]:
    out = Path(out)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    info = par.init_distributed(cfg.parallel, cfg.train.device)
    try:
        sources = data_sources(cfg)
        vocab = TokenShards(sources[0].path).vocab_size
        args = model_args(cfg, vocab)
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "config.toml", dump_toml(cfg))
        micro, accum = Trainer.layout(cfg, info)
        loader = PretrainLoader(sources, cfg.train.seq_len, cfg.train.batch_size, micro, rank=info.dp_rank,
                                world=info.dp, seed=cfg.data.seed)
        vpath = val_path(cfg)
        eval_fn = make_eval_fn(vpath, cfg, micro, info) if vpath else None
        tok = tokenizer_path(cfg)
        if tok is None and info.is_main:
            print("note: no tokenizer.model beside the data; OUT/final will hold the weights only")

        def final_fn(sd: dict[str, torch.Tensor], path: Path) -> None:
            from llamaforge.checkpoint.native import save_native

            sd = {k: v.contiguous() for k, v in sd.items()}
            save_native(sd, path, tokenizer=tok, args=args, metadata={"trained_by": "llamaforge pretrain"})

        model = build_model(args, cfg, info)
        loss_fn = functools.partial(lm_loss, fused=cfg.train.fused_loss)
        trainer = Trainer(model, loss_fn, loader, cfg, out, info, eval_fn=eval_fn,
                          flops_per_token=args.flops_per_token(cfg.train.seq_len), final_fn=final_fn,
                          init_fn=lambda m: m.init_weights(buffer_device=info.device), command="pretrain",
                          inputs=[s.path for s in sources],
                          manifest_extra={"model_args": args.to_dict(), "num_params": args.num_params(),
                                          "flops_per_token": args.flops_per_token(cfg.train.seq_len),
                                          "flops_formula": "6 * N (no input embedding) + 12 * L * d * T"})
        summary = trainer.fit()
        summary["epochs_seen"] = loader.epochs_seen()
        return summary
    finally:
        if info.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="llamaforge pretrain", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Pretrain a LLaMA model on token shards (resumable; torchrun for "
                                            "FSDP2 / tensor parallel). Overrides: --section.key=value.")
    p.add_argument("--config", help="TOML file (configs/pretrain/*.toml)")
    p.add_argument("--out", required=True, help="run directory (config.toml, metrics.jsonl, checkpoints/, final/)")
    a, rest = p.parse_known_args(argv)
    cfg = load_config(PretrainConfig, a.config, rest)
    t0 = time.time()
    summary = run(cfg, a.out)
    last = summary.get("last") or {}
    msg = f"{a.out}: {summary['steps']} steps, {summary['stop_reason']}"
    if "loss" in last:
        msg += f", loss {last['loss']:.4f}"
    if "val_loss" in summary:
        msg += f", val_loss {summary['val_loss']:.4f}"
    import os

    if int(os.environ.get("RANK", "0")) == 0:
        print(msg + f" ({time.time() - t0:.0f}s)")
    return 0
