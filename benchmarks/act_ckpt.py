"""Activation checkpointing none / selective / full at seq_len 4096: peak RSS and step time.

A small LLaMA (d256, 4 layers, 8 heads, 4 kv heads, vocab 32000), batch 2 x 4096, one fresh process
per mode (peak RSS of that process via getrusage), AdamW steps, median step time after a warm-up.
    .venv/bin/python benchmarks/act_ckpt.py [--steps 3] [--seq 4096]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as llamaforge.train sets it; applies to both engines

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def child(mode: str, steps: int, seq: int, batch: int, threads: int, dtype: str, clock: str, vocab: int) -> dict:
    import contextlib

    import torch

    from llamaforge.model.args import ModelArgs
    from llamaforge.model.llama import Transformer
    from llamaforge.train.parallel import apply_ac

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    args = ModelArgs(dim=256, n_layers=4, n_heads=8, n_kv_heads=4, vocab_size=vocab, max_seq_len=seq)
    model = Transformer(args)
    model.init_weights()
    apply_ac(model, mode)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, vocab, (batch, seq + 1))
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if dtype == "bf16" else contextlib.nullcontext
    times, losses = [], []
    now = time.process_time if clock == "cpu" else time.perf_counter
    for _ in range(steps + 1):
        t = now()
        with ctx():
            logits = model(x[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), x[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(now() - t)
        losses.append(loss.item())
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": mode, "step_s": statistics.median(times[1:]), "peak_rss_mb": rss_mb, "loss0": losses[0]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="cpu: process CPU time (robust when other jobs share the cores; use with --threads 1)")
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--rounds", type=int, default=1, help="repeat the three modes, interleaved")
    a = p.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.steps, a.seq, a.batch, a.threads, a.dtype, a.clock, a.vocab)))
        return
    res: dict[str, list[dict]] = {m: [] for m in ("none", "selective", "full")}
    for _ in range(a.rounds):
        for mode in res:
            cmd = [sys.executable, __file__, "--child", mode, "--steps", str(a.steps), "--seq", str(a.seq), "--batch",
                   str(a.batch), "--threads", str(a.threads), "--dtype", a.dtype, "--clock", a.clock,
                   "--vocab", str(a.vocab)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            res[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"d256 L4 H8 KV4 vocab {a.vocab}, batch {a.batch} x {a.seq}, {a.dtype}, {a.threads} threads, AdamW; "
          f"median of {a.steps} steps after warm-up, best of {a.rounds} round(s)")
    base = min(r["step_s"] for r in res["none"])
    print(f"{'mode':10s} {'step s':>7s} {'vs none':>8s} {'peak RSS MB':>12s} {'loss step 0':>12s}")
    for mode, rows in res.items():
        st, rss = min(r["step_s"] for r in rows), min(r["peak_rss_mb"] for r in rows)
        print(f"{mode:10s} {st:7.2f} {st / base:8.2f} {rss:12.0f} {rows[0]['loss0']:12.5f}")


if __name__ == "__main__":
    main()
