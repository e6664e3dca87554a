"""Batch-1 decode speed: llamaforge (eager, compiled; fp32, bf16) vs transformers `generate` on the same weights.

A tiny-15m-like model (dim 288, 6 layers, 6 heads, vocab 32000) with random weights is exported
with save_model(format="hf") and loaded by transformers. Every engine decodes the same prompt
greedily for --new tokens (eos ignored); runs are interleaved (round robin) because this machine
is shared and noisy, and the median is reported. GB/s = bytes read per token (weights except the
embedding table, plus the KV cache at the mean context) x tokens/s: compare it with the machine's
memory bandwidth (FACTS.md: ~17 GB/s fp32 matrix-vector, ~31 GB/s copy).

Rows: our decoder with its default decode-layout weight copies (sampling.DecodeWeights: on CPU the
output head transposed / oneDNN-packed and each block's linears fused and transposed), and the
same without copies ("model layout") to show what they buy.

    .venv/bin/python benchmarks/decode_speed.py [--new 128] [--reps 3] [--threads 2] [--no-compile]
    .venv/bin/python benchmarks/decode_speed.py --head-only   # the output-head product in each layout
    .venv/bin/python benchmarks/decode_speed.py --preset tiny-1m --vocab 4096   # overhead-bound: weights in cache
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path.home() / ".cache" / "llamaforge-inductor"))


def bytes_per_token(model, ctx: int) -> int:
    a = model.args
    el = next(model.parameters()).element_size()
    weights = sum(p.numel() for p in model.parameters()) - model.tok_embeddings.weight.numel() + a.dim
    kv = 2 * a.n_layers * a.n_kv_heads * a.head_dim * ctx
    return (weights + kv) * el


def gqa_table() -> None:  # the case for SDPA's enable_gqa (docs/bench/inference_model_patch.diff)
    """Decode attention with grouped KV heads (tinyllama: 32 heads, 4 kv, head_dim 64)."""
    print("\nGQA decode attention, 32 heads / 4 kv heads, head_dim 64 (us per call, median of 200)")
    print("| batch | context | repeat_interleave + SDPA | SDPA enable_gqa=True |")
    print("|---|---|---|---|")
    for b, s in ((1, 512), (8, 512), (1, 2048)):
        q, k, v = torch.randn(b, 32, 1, 64), torch.randn(b, 4, s, 64), torch.randn(b, 4, s, 64)
        mask = torch.ones(b, 1, 1, s, dtype=torch.bool)

        def rep(q=q, k=k, v=v, mask=mask):
            return F.scaled_dot_product_attention(q, k.repeat_interleave(8, 1), v.repeat_interleave(8, 1),
                                                  attn_mask=mask)

        def gqa(q=q, k=k, v=v, mask=mask):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)

        torch.testing.assert_close(rep(), gqa())
        times = []
        for f in (rep, gqa):
            ts = []
            for _ in range(200):
                t = time.perf_counter()
                f()
                ts.append(time.perf_counter() - t)
            times.append(statistics.median(ts) * 1e6)
        print(f"| {b} | {s} | {times[0]:.0f} | {times[1]:.0f} |")


def head_table(threads: int) -> None:
    """Rows times the tiny-15m output weight (32000 x 288) in nn.Linear's layout and in the decode
    copy DecodeWeights uses for that many rows (us, median of 30, interleaved)."""
    from llamaforge.sampling import _can_pack, _pack, project

    print(f"\noutput head, rows x 288 times 32000 x 288, {threads} threads (us per product, median of 30)")
    print("| dtype | rows | nn.Linear layout | decode copy | layout of the copy | speed-up |")
    print("|---|---|---|---|---|---|")
    for dt in (torch.float32, torch.bfloat16):
        w = torch.randn(32000, 288, dtype=dt) * 0.05
        for rows in (1, 4, 16):
            x = torch.randn(rows, 288, dtype=dt)
            packed = (rows > 1 or dt == torch.bfloat16) and _can_pack()
            wc = _pack(w, packed)
            fs = (lambda x=x, w=w: F.linear(x, w), lambda x=x, wc=wc, packed=packed: project(x, wc, packed))
            ts: list[list[float]] = [[], []]
            with torch.inference_mode():
                torch.testing.assert_close(fs[1]().float(), fs[0]().float(), atol=1e-4, rtol=1e-2)
                for _ in range(30):
                    for i, f in enumerate(fs):
                        t = time.perf_counter()
                        f()
                        ts[i].append(time.perf_counter() - t)
            a, b = (statistics.median(t) * 1e6 for t in ts)
            layout = "oneDNN packed" if packed else "W^T"
            print(f"| {str(dt).split('.')[-1]} | {rows} | {a:.0f} | {b:.0f} | {layout} | {a / b:.2f}x |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-hf", action="store_true")
    ap.add_argument("--preset", default="tiny-15m", help="model shape (tiny-1m: small enough to show overheads)")
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--threads", type=int, default=2, help="1 on a busy shared machine (OpenMP barriers spin)")
    ap.add_argument("--head-only", action="store_true", help="only the output-head layout table")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.head_only:
        return head_table(args.threads)
    from llamaforge.checkpoint import save_model
    from llamaforge.generate import BatchDecoder, generate_ids
    from llamaforge.model.args import ModelArgs
    from llamaforge.model.llama import Transformer

    torch.manual_seed(0)
    m32 = Transformer(ModelArgs.from_name(args.preset, vocab_size=args.vocab)).eval()
    m32.init_weights()
    m16 = Transformer(m32.args).eval()
    m16.load_state_dict(m32.state_dict())
    m16.to(torch.bfloat16)
    prompt = torch.randint(3, args.vocab, (16,), generator=torch.Generator().manual_seed(1)).tolist()
    n = args.new
    ctx = len(prompt) + n // 2
    runs = {}  # name -> (fn, bytes per token)
    ref_tokens = {}

    def ours(model, compile, weights=None):
        dec = BatchDecoder(model, None, 1, -(-(len(prompt) + n) // 64) * 64, compile=compile, sync_every=8,
                           decode_weights=weights)

        def run():
            return generate_ids(model, [prompt], max_new_tokens=n, temperature=0, decoder=dec).row(0)
        return run

    runs["llamaforge eager fp32, model layout"] = (ours(m32, False, "none"), bytes_per_token(m32, ctx))
    for dt, m in (("fp32", m32), ("bf16", m16)):
        runs[f"llamaforge eager {dt}"] = (ours(m, False), bytes_per_token(m, ctx))
        if not args.no_compile:
            runs[f"llamaforge compiled {dt}"] = (ours(m, True), bytes_per_token(m, ctx))
    if not args.no_hf:
        from transformers import LlamaForCausalLM

        tmp = Path(tempfile.mkdtemp(prefix="lf-bench-"))
        save_model(m32, tmp / "hf", format="hf")
        for dt, dtype, m in (("fp32", torch.float32, m32), ("bf16", torch.bfloat16, m16)):
            hf = LlamaForCausalLM.from_pretrained(tmp / "hf", dtype=dtype).eval()
            ids = torch.tensor([prompt])

            def run(hf=hf, ids=ids):
                with torch.inference_mode():
                    out = hf.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0,
                                      eos_token_id=None)
                return out[0, len(prompt):].tolist()
            runs[f"transformers generate {dt}"] = (run, bytes_per_token(m, ctx))

    t0 = time.time()
    for name, (fn, _) in runs.items():  # warm-up (compiles)
        t = time.time()
        ref_tokens[name] = fn()
        print(f"warm-up {name}: {time.time() - t:.1f}s", flush=True)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.reps):
        for name, (fn, _) in runs.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    hf_rate, hf_best = {}, {}
    rows = []
    for name, (_, nbytes) in runs.items():
        tps, best = n / statistics.median(times[name]), n / min(times[name])
        rows.append((name, tps, best, nbytes))
        if name.startswith("transformers"):
            hf_rate[name.split()[-1]], hf_best[name.split()[-1]] = tps, best
    a = m32.args
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n{args.preset} shape (dim {a.dim}, {a.n_layers} layers, {a.n_heads} heads, vocab {a.vocab_size}), "
          f"batch 1, prompt {len(prompt)}, {n} new tokens, greedy; {torch.get_num_threads()} threads; "
          f"median (and best) of {args.reps} interleaved runs ({time.time() - t0:.0f}s); load average {load}")
    print("| engine | tokens/s | ms/token | MB read/token | GB/s | vs transformers fp32 | best tokens/s "
          "| best vs best |")
    print("|---|---|---|---|---|---|---|---|")
    for name, tps, best, nbytes in rows:
        rel = f"{tps / hf_rate['fp32']:.2f}x" if "fp32" in hf_rate else "-"
        brel = f"{best / hf_best['fp32']:.2f}x" if "fp32" in hf_best else "-"
        print(f"| {name} | {tps:.0f} | {1000 / tps:.2f} | {nbytes / 1e6:.1f} | {nbytes * tps / 1e9:.1f} | {rel} "
              f"| {best:.0f} | {brel} |")
    same = {k: v == ref_tokens["llamaforge eager fp32"] for k, v in ref_tokens.items() if "fp32" in k}
    print(f"\ngreedy tokens equal to llamaforge eager fp32: {same}")
    if args.preset == "tiny-15m":
        gqa_table()


if __name__ == "__main__":
    main()
