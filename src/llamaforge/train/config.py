"""The config sections every training recipe shares: model, data, train, optim, checkpoint, logging, parallel.

A recipe's config is a dataclass of these sections (plus its own); `llamaforge.config.load_config`
fills it from TOML and `--section.key=value` overrides. Defaults follow LLaMA's pretraining
(PAPERS.md: AdamW 0.9/0.95, eps 1e-5, weight decay 0.1, clip 1.0, 2,000 warmup steps, cosine to 10%).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from llamaforge.errors import UserError


@dataclass
class ModelSection:
    preset: str = "tiny-1m"
    # Optional overrides of the preset's fields (None keeps the preset's value).
    dim: int | None = None
    n_layers: int | None = None
    n_heads: int | None = None
    n_kv_heads: int | None = None
    vocab_size: int | None = None  # None: the tokenizer's vocabulary
    multiple_of: int | None = None
    ffn_dim_multiplier: float | None = None
    max_seq_len: int | None = None
    init: str | None = None  # a checkpoint directory to start from instead of random weights

    def overrides(self) -> dict[str, Any]:
        names = ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of", "ffn_dim_multiplier",
                 "max_seq_len")
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}


@dataclass
class SourceSection:
    path: str = ""
    weight: float = 1.0
    epochs: float = 1.0


@dataclass
class DataSection:
    path: str | None = None  # one shard directory (or a `data tokenize` output: its train/ split)
    sources: list[SourceSection] = field(default_factory=list)  # a weighted mixture instead of path
    val_path: str | None = None  # default: the val/ split beside data.path, if any
    tokenizer: str | None = None  # default: tokenizer.model of the `data tokenize` output
    seed: int = 0


@dataclass
class TrainSection:
    steps: int = 100
    batch_size: int = 8  # global sequences per optimizer step, at any world size
    micro_batch: int = 0  # sequences per rank per forward; 0 = batch_size / data-parallel ranks
    seq_len: int = 256
    dtype: Literal["fp32", "bf16"] = "fp32"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch CPU threads; 0 = leave torch's default
    fused_loss: bool = True  # chunked output projection + cross-entropy when the head is unsharded

    def validate(self) -> None:
        for name in ("steps", "batch_size", "seq_len"):
            if getattr(self, name) <= 0:
                raise UserError(f"train.{name} must be > 0, got {getattr(self, name)}")
        if self.micro_batch < 0:
            raise UserError(f"train.micro_batch must be >= 0, got {self.micro_batch}")


@dataclass
class OptimSection:
    lr: float = 3e-4
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = 2000
    min_lr_ratio: float = 0.1  # cosine decays to this fraction of lr
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-5
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # 0 = no clipping


@dataclass
class CheckpointSection:
    every: int = 0  # steps between training checkpoints; 0 = only at the end
    keep: int = 2  # newest complete checkpoints kept
    resume: bool = True  # continue from the newest complete checkpoint in OUT/checkpoints
    final: bool = True  # write OUT/final (native checkpoint + tokenizer)


@dataclass
class LoggingSection:
    every: int = 10
    eval_every: int = 0  # steps between validation passes; 0 = at the end only (when val data exists)
    eval_windows: int = 64  # validation windows per pass
    tensorboard: bool = False
    progress: bool = True
    plots: bool = True


@dataclass
class ParallelSection:
    dp_shard: int = -1  # FSDP2 degree; -1 = world size / tp
    tp: int = 1  # tensor (+ sequence) parallel degree
    activation_checkpointing: Literal["none", "selective", "full"] = "none"
    compile: bool = False  # torch.compile each transformer block
    meta_init: bool = False  # build on the meta device and initialise after sharding (large models)


@dataclass
class TrainerSections:
    """What the Trainer reads; a recipe's config carries these as fields of the same names."""

    train: TrainSection = field(default_factory=TrainSection)
    optim: OptimSection = field(default_factory=OptimSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    parallel: ParallelSection = field(default_factory=ParallelSection)


@dataclass
class PretrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    optim: OptimSection = field(default_factory=OptimSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    parallel: ParallelSection = field(default_factory=ParallelSection)


def batch_layout(batch_size: int, micro_batch: int, dp: int) -> tuple[int, int]:
    """(micro, accumulation steps) so that micro * accum * dp == batch_size, or a UserError saying why not."""
    if batch_size % dp:
        raise UserError(f"train.batch_size {batch_size} is not divisible by {dp} data-parallel ranks")
    per_rank = batch_size // dp
    micro = micro_batch or per_rank
    if per_rank % micro:
        raise UserError(f"train.batch_size {batch_size} / {dp} ranks = {per_rank} sequences per rank is not a "
                        f"multiple of train.micro_batch {micro}")
    return micro, per_rank // micro
