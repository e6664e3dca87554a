"""`llamaforge sft`: supervised fine-tuning on chat data (Llama 2 3.1) with the one Trainer.

Loss only on assistant tokens (and their eos), from the tokenizer's Llama 2 chat encoding.
Packing `isolated` (default) concatenates whole samples into seq_len rows where each sample
attends only to itself and its positions restart; `concat` is the paper's plain concatenation;
`none` pads one sample per row. Runs for `data.epochs` (2 in the paper) unless train.steps is set.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from llamaforge.align.common import EpochTrain, in_val_split, rank_batches, weighted
from llamaforge.config import dump_toml, load_config, parse_overrides
from llamaforge.data.chat import IGNORE, EncodeStats, EpochBatches, collate, encode_sft_file, pack, packing_efficiency
from llamaforge.errors import UserError
from llamaforge.io import atomic_write_text
from llamaforge.model.llama import causal_block_mask
from llamaforge.train import parallel as par
from llamaforge.train.config import (
    CheckpointSection,
    LoggingSection,
    OptimSection,
    ParallelSection,
)
from llamaforge.train.trainer import Trainer

EPILOG = """examples:
  llamaforge world make --out world/
  llamaforge sft --config configs/sft/tiny.toml --init runs/demo/final --data.path world/sft.jsonl --out runs/sft
  llamaforge sft --config configs/sft/tiny.toml --init base/ --data.path chat.jsonl --out runs/sft \\
      --data.packing=concat --train.batch_size 16
Running the same command again resumes from the newest complete checkpoint."""


@dataclass
class SFTSource:
    path: str = ""
    weight: float = 1.0  # samples per epoch = weight x file size (fractions take a seeded subset)


@dataclass
class SFTData:
    path: str | None = None  # one JSONL file of {"messages": [...]} or {"prompt", "response", "system"}
    sources: list[SFTSource] = field(default_factory=list)
    packing: Literal["isolated", "concat", "none"] = "isolated"
    overlong: Literal["truncate", "drop", "error"] = "truncate"
    epochs: float = 2.0
    val_fraction: float = 0.05
    seed: int = 0


@dataclass
class SFTModel:
    init: str | None = None  # the checkpoint to fine-tune (with its tokenizer.model)


@dataclass
class SFTConfig:
    model: SFTModel = field(default_factory=SFTModel)
    data: SFTData = field(default_factory=SFTData)
    train: EpochTrain = field(default_factory=lambda: EpochTrain(batch_size=64, seq_len=4096))
    optim: OptimSection = field(default_factory=lambda: OptimSection(lr=2e-5, warmup_steps=0))
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    parallel: ParallelSection = field(default_factory=ParallelSection)


def load_samples(cfg: SFTConfig, tok, stats: EncodeStats) -> tuple[list, list]:
    """Encoded (train, val) samples of the weighted mixture; the split is by sample, seeded."""
    if cfg.data.path and cfg.data.sources:
        raise UserError("give either data.path or data.sources, not both")
    sources = cfg.data.sources or ([SFTSource(cfg.data.path)] if cfg.data.path else [])
    if not sources:
        raise UserError("no training data: pass --data.path FILE.jsonl or set data.sources")
    train, val = [], []
    rng = random.Random(cfg.data.seed)
    for src in sources:
        samples = encode_sft_file(src.path, tok, cfg.train.seq_len, cfg.data.overlong, stats)
        held = [in_val_split(f"{src.path}:{i}", cfg.data.val_fraction, cfg.data.seed) for i in range(len(samples))]
        tr = [s for s, h in zip(samples, held) if not h]
        val += [s for s, h in zip(samples, held) if h]
        train += weighted(tr, src.weight, rng, src.path)
    if not train:
        raise UserError("no training samples left after the validation split and the over-long policy")
    return train, val


def make_loss(packing: str):
    def sft_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        if packing == "isolated":
            logits = model(batch["tokens"], input_pos=batch["positions"], mask=causal_block_mask(batch["docs"]))
        else:
            logits = model(batch["tokens"])
        labels = batch["labels"]
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE)
        return loss, {"answer_tokens": float((labels != IGNORE).sum())}

    return sft_loss


def make_eval_fn(rows: list, packing: str, micro: int, info: par.DistInfo):
    if not rows:
        return None
    mine = rank_batches(rows, micro, info.dp_rank, info.dp)
    loss_fn = make_loss(packing)

    def eval_fn(model: torch.nn.Module) -> dict[str, float]:
        total = torch.zeros((), device=info.device)
        count = torch.zeros((), device=info.device)
        for chunk, pad in mine:
            batch = {k: v.to(info.device) for k, v in collate(chunk).items()}
            loss, m = loss_fn(model, batch)
            if pad:
                continue
            total += par.local_value(loss).float() * m["answer_tokens"]
            count += m["answer_tokens"]
        return {"val_loss": float(par.all_mean(total, info) / par.all_mean(count, info).clamp(min=1))}

    return eval_fn


def run(cfg: SFTConfig, out: str | Path) -> dict[str, Any]:
    from llamaforge.checkpoint import find_tokenizer, load_model
    from llamaforge.checkpoint.native import save_native

    out = Path(out)
    if not cfg.model.init:
        raise UserError("pass --init CHECKPOINT (the model to fine-tune)")
    tok = find_tokenizer(cfg.model.init)
    if tok is None:
        raise UserError(f"{cfg.model.init} has no tokenizer.model; SFT needs the model's tokenizer")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    info = par.init_distributed(cfg.parallel, cfg.train.device)
    try:
        stats = EncodeStats()
        train_s, val_s = load_samples(cfg, tok, stats)
        train_rows = pack(train_s, cfg.train.seq_len, cfg.data.packing)
        val_rows = pack(val_s, cfg.train.seq_len, cfg.data.packing) if val_s else []
        micro, accum = Trainer.layout(cfg, info)
        epoch_steps = int(len(train_rows) * cfg.data.epochs) // cfg.train.batch_size
        if epoch_steps == 0:
            raise UserError(f"{len(train_rows)} packed rows x {cfg.data.epochs} epochs is less than one batch of "
                            f"train.batch_size {cfg.train.batch_size}; lower the batch size")
        cfg.train.steps = min(cfg.train.steps, epoch_steps) if cfg.train.steps else epoch_steps
        efficiency = packing_efficiency(train_rows)
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "config.toml", dump_toml(cfg))
            print(f"sft: {stats.samples} samples ({stats.truncated} truncated, {stats.dropped} dropped, "
                  f"{stats.no_answer} without answer tokens) -> {len(train_rows)} rows of {cfg.train.seq_len} "
                  f"({cfg.data.packing} packing, efficiency {efficiency:.1%}), {len(val_rows)} val rows, "
                  f"{cfg.train.steps} steps")
        batches = EpochBatches(train_rows, micro, cfg.data.epochs, cfg.data.seed, info.dp_rank, info.dp,
                               limit=cfg.train.steps * cfg.train.batch_size)
        torch.manual_seed(cfg.train.seed)
        model = load_model(cfg.model.init)
        args = model.args
        if cfg.train.seq_len > args.max_seq_len:
            raise UserError(f"train.seq_len {cfg.train.seq_len} exceeds the model's max_seq_len {args.max_seq_len}")

        def final_fn(sd: dict[str, torch.Tensor], path: Path) -> None:
            save_native({k: v.contiguous() for k, v in sd.items()}, path, tokenizer=tok, args=args,
                        metadata={"trained_by": "llamaforge sft", "init": str(cfg.model.init)})

        trainer = Trainer(model, make_loss(cfg.data.packing), batches, cfg, out, info,
                          eval_fn=make_eval_fn(val_rows, cfg.data.packing, micro, info),
                          flops_per_token=args.flops_per_token(cfg.train.seq_len), final_fn=final_fn,
                          command="sft", inputs=[cfg.model.init] + [s.path for s in cfg.data.sources]
                          + ([cfg.data.path] if cfg.data.path else []),
                          manifest_extra={"data_stats": stats.to_dict(), "packing_efficiency": efficiency,
                                          "train_rows": len(train_rows), "val_rows": len(val_rows),
                                          "model_args": args.to_dict()})
        summary = trainer.fit()
        summary["packing_efficiency"] = efficiency
        return summary
    finally:
        if info.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="llamaforge sft", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Supervised fine-tuning on chat JSONL (loss on answers only; "
                                            "isolated/concat/none packing). Overrides: --section.key=value.")
    p.add_argument("--config", help="TOML file (configs/sft/*.toml)")
    p.add_argument("--init", help="checkpoint to fine-tune (same as --model.init)")
    p.add_argument("--out", required=True, help="run directory (config.toml, metrics.jsonl, checkpoints/, final/)")
    a, rest = p.parse_known_args(argv)
    over = parse_overrides(rest)
    if a.init:
        over["model.init"] = a.init
    cfg = load_config(SFTConfig, a.config, over)
    t0 = time.time()
    summary = run(cfg, a.out)
    if int(os.environ.get("RANK", "0")) == 0:
        extra = f", val_loss {summary['val_loss']:.4f}" if "val_loss" in summary else ""
        print(f"{a.out}: {summary['steps']} steps, {summary['stop_reason']}{extra} ({time.time() - t0:.0f}s)")
    return 0
