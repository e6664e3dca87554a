"""The pretraining loader: a single-pass, weighted, deterministic, resumable and rank-aware mixture.

Each source is a shard directory cut into windows of `seq_len + 1` tokens at stride `seq_len`
(every token is a target once per epoch). Global sample g picks a source by weight from a hash of
(seed, g) among the sources that still have budget (`epochs * windows`, a float as in LLaMA's
Table 1); within a source, epoch e serves its windows in the order of a seeded pseudo-random
permutation (a Feistel network: O(1) memory for any corpus size). So the whole sample sequence
is a pure function of (seed, sources, seq_len), and the position is two numbers: the global
sample index and how many windows each source has served. Optimizer step k uses global samples
[k*B, (k+1)*B); data-parallel rank r of W reads the r-th contiguous 1/W of them, so a run can
resume on another number of ranks and still see the same global batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llamaforge.data.shards import TokenShards
from llamaforge.errors import UserError

M64 = (1 << 64) - 1


def mix64(x: int, key: int) -> int:
    """splitmix64 finaliser of x + key: a cheap, well-distributed 64-bit hash."""
    x = (x + key + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


class Permutation:
    """A seeded bijection of range(n): 4-round Feistel network on 2^bits >= n, with cycle walking."""

    def __init__(self, n: int, seed: int):
        self.n = n
        bits = max(2, (max(n, 2) - 1).bit_length())
        bits += bits % 2
        self.half, self.mask = bits // 2, (1 << (bits // 2)) - 1
        self.keys = [mix64(seed, 7919 * (i + 1)) for i in range(4)]

    def __call__(self, i: int) -> int:
        if not 0 <= i < self.n:
            raise IndexError(i)
        x, half, mask = i, self.half, self.mask
        while True:
            left, right = x >> half, x & mask
            for k in self.keys:
                left, right = right, left ^ (mix64(right, k) & mask)
            x = (left << half) | right
            if x < self.n:
                return x


@dataclass
class Source:
    path: str
    weight: float = 1.0
    epochs: float = 1.0


class DataExhausted(StopIteration):
    pass


class PretrainLoader:
    """Iterator of this rank's micro-batches: dicts with `tokens` LongTensor [micro, seq_len + 1] and `ids`.

    `batch_size` global sequences per optimizer step, split into `world` contiguous rank slices of
    `micro`-sized micro-batches. `state_dict()` at any point between micro-batches captures the exact
    position; `load_state_dict` on any world size continues with the next unseen sample.
    """

    def __init__(self, sources: list[Source], seq_len: int, batch_size: int, micro: int, rank: int = 0,
                 world: int = 1, seed: int = 0):
        if batch_size % (micro * world):
            raise UserError(f"train.batch_size {batch_size} must be a multiple of train.micro_batch {micro} x "
                            f"{world} data-parallel ranks")
        if not sources:
            raise UserError("no training data: set --data.path or data.sources")
        self.sources = sources
        self.shards = [TokenShards(s.path) for s in sources]
        self.seq_len, self.batch_size, self.micro = seq_len, batch_size, micro
        self.rank, self.world, self.seed = rank, world, seed
        self.windows = [sh.num_windows(seq_len) for sh in self.shards]
        self.budget = [int(s.epochs * n) for s, n in zip(sources, self.windows)]
        for s, sh, n in zip(sources, self.shards, self.windows):
            if s.weight <= 0 or s.epochs <= 0:
                raise UserError(f"data source {s.path}: weight and epochs must be > 0")
            if n == 0:
                raise UserError(f"data source {s.path}: {sh.num_tokens} tokens is less than one window of "
                                f"seq_len + 1 = {seq_len + 1}")
        self._mix_key = mix64(seed, 0xDA7A)
        self._perms: dict[tuple[int, int], Permutation] = {}
        self.sample = 0  # global index of the first sample of the current step
        self.consumed = [0] * len(sources)  # windows served by each source before the current step
        self.micro_index = 0  # micro-batches of the current step already yielded by this rank
        self._plan: list[tuple[int, int]] | None = None
        self._after: list[int] | None = None
        self.exhausted_reason: str | None = None

    # -- the global sample sequence ------------------------------------------------------------
    def _perm(self, s: int, epoch: int) -> Permutation:
        key = (s, epoch)
        if key not in self._perms:
            if len(self._perms) > 64:
                self._perms.clear()
            self._perms[key] = Permutation(self.windows[s], mix64(self.seed, 1_000_003 * (s + 1) + epoch))
        return self._perms[key]

    def _choose(self, g: int, consumed: list[int]) -> int | None:
        active = [i for i, c in enumerate(consumed) if c < self.budget[i]]
        if not active:
            return None
        total = sum(self.sources[i].weight for i in active)
        u = mix64(g, self._mix_key) / 2.0**64 * total
        for i in active:
            u -= self.sources[i].weight
            if u < 0:
                return i
        return active[-1]

    def plan_step(self) -> tuple[list[tuple[int, int]], list[int]]:
        """(source, window) of the current step's global samples, and the counters after it."""
        consumed = list(self.consumed)
        plan = []
        for g in range(self.sample, self.sample + self.batch_size):
            s = self._choose(g, consumed)
            if s is None:
                names = ", ".join(f"{src.path} ({src.epochs:g} epochs)" for src in self.sources)
                self.exhausted_reason = f"every data source reached its max epochs at sample {g}: {names}"
                raise DataExhausted(self.exhausted_reason)
            c = consumed[s]
            plan.append((s, self._perm(s, c // self.windows[s])(c % self.windows[s])))
            consumed[s] += 1
        return plan, consumed

    # -- iteration ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._plan is None:
            self._plan, self._after = self.plan_step()
        per_rank = self.batch_size // self.world
        lo = self.rank * per_rank + self.micro_index * self.micro
        items = self._plan[lo:lo + self.micro]
        tokens = np.stack([self.shards[s].window(w, self.seq_len) for s, w in items])
        batch = {"tokens": torch.from_numpy(tokens), "ids": [(s, w) for s, w in items],
                 "sample": self.sample + lo}
        self.micro_index += 1
        if self.micro_index * self.micro >= per_rank:  # step done on this rank
            self.sample += self.batch_size
            self.consumed, self._plan, self._after = self._after, None, None
            self.micro_index = 0
        return batch

    # -- position -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"version": 1, "sample": self.sample, "consumed": list(self.consumed),
                "micro_index": self.micro_index, "world": self.world, "seq_len": self.seq_len,
                "seed": self.seed, "batch_size": self.batch_size,
                "sources": [str(Path(s.path)) for s in self.sources]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("seq_len") != self.seq_len or state.get("seed") != self.seed:
            raise UserError(f"checkpointed loader has seq_len {state.get('seq_len')}, seed {state.get('seed')}; "
                            f"this run has {self.seq_len}, {self.seed}: resume with the same data settings")
        if len(state["consumed"]) != len(self.sources):
            raise UserError(f"checkpointed loader had {len(state['consumed'])} data sources, this run has "
                            f"{len(self.sources)}: resume with the same data.sources")
        if state.get("micro_index", 0) and (state.get("world") != self.world
                                            or state.get("batch_size") != self.batch_size):
            raise UserError("cannot resume a loader saved in the middle of a step on another world size")
        self.sample, self.consumed = int(state["sample"]), [int(c) for c in state["consumed"]]
        self.micro_index = int(state.get("micro_index", 0))
        self._plan = self._after = None

    def epochs_seen(self) -> list[float]:
        return [c / n for c, n in zip(self.consumed, self.windows)]


class ValBatches:
    """Fixed validation micro-batches: `n` windows spread evenly over a shard directory, split by rank."""

    def __init__(self, path: str | Path, seq_len: int, micro: int, max_windows: int, rank: int = 0, world: int = 1):
        self.shards = TokenShards(path)
        total = self.shards.num_windows(seq_len)
        n = min(total, max_windows)
        n -= n % max(1, world)
        self.idx = [int(i * total / n) for i in range(n)] if n else []
        self.mine = self.idx[rank::world] if world > 1 else self.idx
        self.seq_len, self.micro = seq_len, micro

    def __len__(self) -> int:
        return len(self.idx)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(0, len(self.mine), self.micro):
            ws = self.mine[i:i + self.micro]
            yield {"tokens": torch.from_numpy(np.stack([self.shards.window(w, self.seq_len) for w in ws]))}
