"""GPU batch-1 decode of tinyllama-1.1b in bf16: tokens/s and achieved GB/s against the card's bandwidth.

A measurement, not a test (goal: 80% of the bandwidth roofline). Random weights (no network),
built on the GPU; greedy decoding with eos ignored through llamaforge's BatchDecoder, eager and
with the decode step compiled (torch.compile fullgraph; mode reduce-overhead = CUDA graphs); the
host reads the new tokens (the stop check) once per --sync-every steps, so the GPU never waits
for Python between steps.
Bytes per token = every weight but the embedding table + the KV cache at the mean context.

    python benchmarks/gpu_decode.py                         # on the GPU machine
    python benchmarks/gpu_decode.py --preset tiny-1m --device cpu --dtype float32 --new 32   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

PEAK_GBS = {"H200": 4800.0, "H100": 3350.0, "A100": 2039.0}  # HBM bandwidth of the SXM parts, GB/s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tinyllama-1.1b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--mode", default="reduce-overhead", help="torch.compile mode ('default' on CPU)")
    ap.add_argument("--sync-every", type=int, default=16, help="decode steps per host sync (stop check)")
    ap.add_argument("--peak-gbs", type=float, help="memory bandwidth of the device (default: from its name)")
    ap.add_argument("--out", help="write the results as JSON here too")
    args = ap.parse_args()
    from llamaforge.generate import BatchDecoder, generate_ids
    from llamaforge.model.args import ModelArgs
    from llamaforge.model.llama import Transformer

    dev, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    with dev:
        model = Transformer(ModelArgs.from_name(args.preset))
    model.init_weights()
    model.to(dtype).eval()
    a = model.args
    el = torch.finfo(dtype).bits // 8
    ctx = args.prompt + args.new // 2
    weights = model.num_params() - a.vocab_size * a.dim + a.dim
    per_token = (weights + 2 * a.n_layers * a.n_kv_heads * a.head_dim * ctx) * el
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    peak = args.peak_gbs or next((v for k, v in PEAK_GBS.items() if k in name), None)
    prompt = torch.randint(3, a.vocab_size, (args.prompt,), generator=torch.Generator().manual_seed(1)).tolist()
    max_len = -(-(args.prompt + args.new) // 64) * 64
    results = {"device": name, "preset": args.preset, "dtype": args.dtype, "params": model.num_params(),
               "sync_every": args.sync_every,
               "bytes_per_token": per_token, "peak_GBps": peak, "runs": {}}

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    tokens = {}
    for label, compile in (("eager", False), ("compiled", True)):
        mode = None if args.mode == "default" else args.mode
        dec = BatchDecoder(model, None, 1, max_len, compile=compile, compile_mode=mode if compile else None,
                           sync_every=args.sync_every)
        t = time.perf_counter()
        for _ in range(2 if compile else 1):  # compile + CUDA graph capture happen in the warm-up runs
            generate_ids(model, [prompt], max_new_tokens=args.new, temperature=0, decoder=dec)
        sync()
        warm = time.perf_counter() - t
        t = time.perf_counter()
        g = generate_ids(model, [prompt], max_new_tokens=args.new, temperature=0, decoder=dec)
        sync()
        dt = time.perf_counter() - t
        tokens[label] = g.row(0)
        tps = args.new / dt
        gbs = per_token * tps / 1e9
        results["runs"][label] = {"tokens_per_s": tps, "GBps": gbs, "roofline_fraction": gbs / peak if peak else None,
                                  "warmup_s": warm}
        frac = f"{100 * gbs / peak:.0f}% of {peak:.0f} GB/s" if peak else "peak unknown"
        print(f"{label:9s} {tps:8.1f} tokens/s  {gbs:8.1f} GB/s  ({frac}; warm-up {warm:.0f}s)", flush=True)
    agree = sum(x == y for x, y in zip(tokens["eager"], tokens["compiled"])) / args.new
    results["greedy_agreement_eager_vs_compiled"] = agree  # bf16 ties may flip late tokens
    print(f"{name}, {args.preset} {args.dtype}, batch 1, prompt {args.prompt}, {args.new} new tokens; "
          f"{per_token / 1e9:.2f} GB read per token; eager/compiled greedy agreement {agree:.2f}")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
