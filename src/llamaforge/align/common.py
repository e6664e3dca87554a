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


def rank_batches(items: list, micro: int, rank: int, world: int) -> list[tuple[list, bool]]:
    """This rank's evaluation micro-batches under data parallelism, as (items, is_padding).

    Every rank gets the same number of batches: a sharded model runs collectives in each forward,
    so a rank with one batch fewer would leave the others waiting forever. A rank short of items
    re-runs `items[:1]` flagged as padding (its result is discarded). One process: plain chunks.
    """
    n = -(-len(items) // (world * micro))
    out = []
    for b in range(n):
        start = (b * world + rank) * micro
        chunk = items[start:start + micro]
        out.append((chunk, False) if chunk else (items[:1], True))
    return out
