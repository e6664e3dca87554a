"""Pieces the alignment recipes share: an epoch-based train section and the held-out split."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from llamaforge.errors import UserError
from llamaforge.train.config import TrainSection


@dataclass
class EpochTrain(TrainSection):
    """`train.steps = 0` means as many optimizer steps as the recipe's epochs give."""

    steps: int = 0

    def validate(self) -> None:
        if self.steps < 0 or self.batch_size <= 0 or self.seq_len <= 0:
            raise UserError("train.steps must be >= 0 and train.batch_size, train.seq_len > 0")


def in_val_split(key: str, fraction: float, seed: int) -> bool:
    """A stable, seeded choice of held-out records by key (e.g. `file:line`), independent of order."""
    h = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < fraction


def weighted(items: list, weight: float, rng: random.Random, where: str) -> list:
    """A source's share of a mixture: `weight` copies of it (a fraction takes a seeded subset)."""
    if weight <= 0:
        raise UserError(f"data.sources: weight of {where} must be > 0")
    whole, frac = divmod(weight, 1.0)
    return items * int(whole) + rng.sample(items, round(frac * len(items)))
