"""The decoder alone (no HTTP): tokens/s of BatchDecoder at 1 and 16 rows, with and without text.

Same model as serve_load.py (tiny-15m shape, vocab 2000, random weights); each row decodes 96
tokens at temperature 0.8 from a short prompt. Separates the decoder's batching gain from the
server's overhead.

    .venv/bin/python benchmarks/decoder_rows.py [--threads 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from serve_load import build_checkpoint

from llamaforge.checkpoint import find_tokenizer, load_model
from llamaforge.generate import BatchDecoder
from llamaforge.sampling import SamplingParams


def run(dec: BatchDecoder, tok, rows: int, text: bool, tokens: int = 96) -> float:
    for i in range(rows):
        ids = tok.encode(f"def handler_{i}_0(request):", bos=True)
        dec.add(i, ids, SamplingParams(tokens, 0.8, 1.0, 0, [], [], i), text=text, prefix_id=ids[-1])
    t0, n = time.perf_counter(), 0
    while dec.busy:
        n += len(dec.step())
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ckpt = build_checkpoint(Path(tempfile.mkdtemp(prefix="lf-dec-")))
    model, tok = load_model(ckpt), find_tokenizer(ckpt)
    dec = BatchDecoder(model, tok, 16)
    run(dec, tok, 16, True, 8)  # warm-up
    cases = [(r, t) for t in (True, False) for r in (1, 16)]
    got: dict = {c: [] for c in cases}
    for _ in range(args.rounds):
        for c in cases:
            got[c].append(run(dec, tok, *c))
    print(f"\nBatchDecoder, tiny-15m shape (vocab 2000), {args.threads} thread(s); median of {args.rounds} rounds")
    print("| text streams | 1 row tokens/s | 16 rows tokens/s | 16 vs 1 |")
    print("|---|---|---|---|")
    for t in (True, False):
        one, many = statistics.median(got[(1, t)]), statistics.median(got[(16, t)])
        print(f"| {'yes' if t else 'no'} | {one:.0f} | {many:.0f} | {many / one:.1f}x |")


if __name__ == "__main__":
    main()
