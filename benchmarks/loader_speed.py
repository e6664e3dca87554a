"""Loader overhead: samples/s of PretrainLoader alone (a 3-source mixture over memory-mapped shards).

Compare with the trainer's step time: the loader must not show up in it.
    .venv/bin/python benchmarks/loader_speed.py [--seq 2048] [--batch 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from llamaforge.data.loader import PretrainLoader, Source
from llamaforge.data.shards import ShardWriter


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--micro", type=int, default=8)
    p.add_argument("--tokens", type=int, default=40_000_000, help="tokens per source")
    p.add_argument("--seconds", type=float, default=5.0)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        srcs = []
        for i, (w, e) in enumerate(((0.6, 1.0), (0.3, 2.45), (0.1, 0.64))):
            wr = ShardWriter(Path(tmp) / f"s{i}", vocab_size=32000, eos_id=2, shard_tokens=1 << 24)
            for _ in range(a.tokens // (1 << 22)):
                wr.add_tokens(rng.integers(0, 32000, 1 << 22), 1)
            wr.close()
            srcs.append(Source(str(Path(tmp) / f"s{i}"), w, e))
        ld = PretrainLoader(srcs, a.seq, a.batch, a.micro, rank=0, world=1, seed=0)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < a.seconds:
            try:
                n += next(ld)["tokens"].shape[0]
            except StopIteration:  # all sources spent: the measurement ends early
                break
        dt = time.perf_counter() - t0
        print(f"3 sources x {a.tokens / 1e6:.0f}M tokens (weights 0.6/0.3/0.1, epochs 1/2.45/0.64), seq {a.seq}, "
              f"global batch {a.batch}, micro {a.micro}")
        print(f"loader alone: {n / dt:,.0f} samples/s = {n * a.seq / dt / 1e6:.1f}M tokens/s "
              f"({dt / n * 1e6:.0f} us per sample)")


if __name__ == "__main__":
    main()
