"""AdamW and the learning-rate schedule of LLaMA (PAPERS.md, Pretraining).

Linear warmup from lr/warmup to lr over `warmup_steps`, then cosine decay to `min_lr_ratio * lr`
at the last step (LLaMA: 2,000 warmup steps, 10%), or constant after warmup (PPO uses constant).
The schedule is a pure function of the step, so resuming needs only the step number.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from llamaforge.train.config import OptimSection


def lr_at(step: int, cfg: OptimSection, total_steps: int) -> float:
    """Learning rate of optimizer step `step` (1-based)."""
    warm = max(0, cfg.warmup_steps)
    if warm and step <= warm:
        return cfg.lr * step / warm
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(1, total_steps - warm)
    progress = min(1.0, (step - warm) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: nn.Module, cfg: OptimSection) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (norm gains are not decayed, as in nanoGPT/Megatron)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr
