"""Forward and forward+backward tokens/s of our Transformer vs transformers.LlamaForCausalLM, same config.

d256, 4 layers, 8 heads, 4 kv heads, vocab 32000, batch 8 x 256, 2 threads, fp32 (and bf16 autocast).
The two models run alternately in one process (this machine's speed drifts), median of the reps.
    .venv/bin/python benchmarks/model_speed.py [--reps 5] [--threads 2]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as llamaforge.train sets it; applies to both engines

import argparse
import contextlib
import statistics
import time

import torch

from llamaforge.model.args import ModelArgs
from llamaforge.model.llama import Transformer


def hf_model(args: ModelArgs):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=args.dim, intermediate_size=args.hidden_dim, num_hidden_layers=args.n_layers,
                      num_attention_heads=args.n_heads, num_key_value_heads=args.n_kv_heads,
                      vocab_size=args.vocab_size, max_position_embeddings=args.max_seq_len, rms_norm_eps=args.norm_eps,
                      tie_word_embeddings=False, attn_implementation="sdpa")
    return LlamaForCausalLM(cfg)


def gqa_forward(self, x, cos, sin, mask, cache=None, layer=0, input_pos=None):
    """Attention.forward with SDPA's enable_gqa instead of repeat_interleave (a proposed model change)."""
    import torch.nn.functional as F

    from llamaforge.model.llama import apply_rotary

    bsz, seqlen, _ = x.shape
    q = self.wq(x).view(bsz, seqlen, -1, self.head_dim)
    k = self.wk(x).view(bsz, seqlen, -1, self.head_dim)
    v = self.wv(x).view(bsz, seqlen, -1, self.head_dim)
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=mask is None, attn_mask=mask,
                                         enable_gqa=q.shape[1] != k.shape[1])
    return self.wo(out.transpose(1, 2).reshape(bsz, seqlen, -1))


CLOCK = time.perf_counter


def timed(fn, reps: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(reps):
        t = CLOCK()
        fn()
        out.append(CLOCK() - t)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--gqa", action="store_true", help="ours with SDPA enable_gqa (patched in, not in model/)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="cpu: process CPU time (robust when other jobs share the cores; use with --threads 1)")
    a = p.parse_args()
    global CLOCK
    if a.clock == "cpu":
        CLOCK = time.process_time
    if a.gqa:
        from llamaforge.model.llama import Attention

        Attention.forward = gqa_forward
    torch.set_num_threads(a.threads)
    args = ModelArgs(dim=256, n_layers=4, n_heads=8, n_kv_heads=4, vocab_size=32000, max_seq_len=a.seq)
    torch.manual_seed(0)
    ours = Transformer(args)
    ours.init_weights()
    hf = hf_model(args)
    x = torch.randint(0, args.vocab_size, (a.batch, a.seq))
    ntok = a.batch * a.seq
    print(f"config: d{args.dim} L{args.n_layers} H{args.n_heads} KV{args.n_kv_heads} ffn {args.hidden_dim} "
          f"vocab {args.vocab_size}; batch {a.batch} x {a.seq}; {a.threads} threads; {a.clock} clock; "
          f"torch {torch.__version__}" + ("; ours with enable_gqa" if a.gqa else ""))
    print(f"{'case':28s} {'ours tok/s':>11s} {'hf tok/s':>10s} {'ours/hf':>8s}")
    for dtype in ("fp32", "bf16"):
        ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if dtype == "bf16" else contextlib.nullcontext

        def fwd_ours(ctx=ctx):
            with torch.no_grad(), ctx():
                ours(x)

        def fwd_hf(ctx=ctx):
            with torch.no_grad(), ctx():
                hf(input_ids=x, use_cache=False)

        def bwd_ours(ctx=ctx):
            with ctx():
                ours(x).float().logsumexp(-1).mean().backward()

        def bwd_hf(ctx=ctx):
            with ctx():
                hf(input_ids=x, use_cache=False).logits.float().logsumexp(-1).mean().backward()

        for name, fo, fh in (("forward", fwd_ours, fwd_hf), ("forward+backward", bwd_ours, bwd_hf)):
            to, th = [], []
            for _ in range(a.reps):  # alternate so drift hits both
                to += timed(fo, 1)
                th += timed(fh, 1)
            so, sh = ntok / statistics.median(to), ntok / statistics.median(th)
            print(f"{name + ' ' + dtype:28s} {so:11,.0f} {sh:10,.0f} {so / sh:8.2f}")


if __name__ == "__main__":
    main()
