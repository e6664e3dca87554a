"""Server throughput: aggregate tokens/s with 1, 4 and 16 concurrent streaming clients.

Builds a tiny-15m-shaped model (dim 288, 6 layers, 6 heads; random weights; vocab of a tokenizer
trained on the Python standard library), starts `llamaforge serve --max-batch 16` as a subprocess
on a free port, and has C clients each stream --requests completions of --tokens tokens
(ignore_eos, temperature 0.8) back to back. Aggregate = completion tokens of all clients / wall time.

    .venv/bin/python benchmarks/serve_load.py [--tokens 64] [--requests 6] [--clients 1,4,16] [--threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def build_checkpoint(out: Path) -> Path:
    import torch

    from llamaforge.checkpoint import save_model
    from llamaforge.data.corpus import stdlib_files
    from llamaforge.model.args import ModelArgs
    from llamaforge.model.llama import Transformer
    from llamaforge.tokenizer import Tokenizer, train_tokenizer

    tok = Tokenizer(train_tokenizer(stdlib_files(max_bytes=3_000_000), 2000, out / "tok"))
    torch.manual_seed(0)
    model = Transformer(ModelArgs.from_name("tiny-15m", vocab_size=tok.n_words))
    model.init_weights()
    return save_model(model, out / "tiny15m", tokenizer=tok)


async def client(http: httpx.AsyncClient, url: str, n_req: int, tokens: int, seed: int) -> tuple[int, list[float]]:
    got, ttft = 0, []
    for r in range(n_req):
        body = {"model": "tiny15m", "prompt": f"def handler_{seed}_{r}(request):", "max_tokens": tokens,
                "temperature": 0.8, "seed": seed * 100 + r, "stream": True, "ignore_eos": True,
                "stream_options": {"include_usage": True}}
        t0 = time.perf_counter()
        first = None
        async with http.stream("POST", f"{url}/v1/completions", json=body) as resp:
            resp.raise_for_status()
            async for line in resp.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if first is None and chunk["choices"]:
                    first = time.perf_counter() - t0
                if chunk.get("usage"):
                    got += chunk["usage"]["completion_tokens"]
        ttft.append(first or 0.0)
    return got, ttft


async def load(url: str, clients: int, n_req: int, tokens: int) -> tuple[float, float, float]:
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=64)) as http:
        t0 = time.perf_counter()
        res = await asyncio.gather(*(client(http, url, n_req, tokens, i) for i in range(clients)))
        wall = time.perf_counter() - t0
    total = sum(r[0] for r in res)
    ttft = statistics.median(t for r in res for t in r[1])
    return total / wall, total / wall / clients, ttft


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--requests", type=int, default=6,
                    help="requests per client, back to back (more: closer to steady state, less ramp-up and drain)")
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--threads", type=int, default=2, help="server torch threads (1 on a busy shared machine)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    ap.add_argument("--compile", action="store_true", help="serve with --compile (decode step per batch bucket)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lf-serve-"))
    ckpt = build_checkpoint(tmp)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "llamaforge", "serve", "--model", str(ckpt), "--port", str(port),
           "--max-batch", "16", "--threads", str(args.threads)] + (["--compile"] if args.compile else [])
    proc = subprocess.Popen(cmd, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        for c in ((1, 2, 4, 8, 16) if args.compile else (2,)):  # warm-up (compiles every batch bucket)
            asyncio.run(load(url, c, 1, 8))
        counts = [int(c) for c in args.clients.split(",")]
        got: dict[int, list] = {c: [] for c in counts}
        for _ in range(args.rounds):  # interleaved: this machine's speed drifts between passes
            for c in counts:
                got[c].append(asyncio.run(load(url, c, args.requests, args.tokens)))
        rows = [(c, *sorted(got[c])[len(got[c]) // 2]) for c in counts]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    base = rows[0][1]
    print(f"\nserver: tiny-15m shape (vocab 2000), --max-batch 16{' --compile' if args.compile else ''}, "
          f"{args.threads} torch threads; each client "
          f"streams {args.requests} x {args.tokens} tokens; median of {args.rounds} interleaved rounds")
    print("| clients | aggregate tokens/s | tokens/s per client | median time to first token | vs 1 client |")
    print("|---|---|---|---|---|")
    for c, agg, per, ttft in rows:
        print(f"| {c} | {agg:.0f} | {per:.0f} | {ttft * 1000:.0f} ms | {agg / base:.1f}x |")


if __name__ == "__main__":
    main()
