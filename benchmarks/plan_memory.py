"""Activation memory of LLaMA blocks, measured against `plan_memory.activation_items`.

A stack of reference LLaMA blocks (fused-style RMSNorm, SDPA, SwiGLU) at a preset's width runs one forward
per checkpointing mode; the memory the forward leaves for backward is measured and compared with the
estimate. On CUDA (bf16) it reads torch.cuda.memory_allocated and also reports the forward+backward peak;
on CPU (fp32) it counts the storages the autograd graph keeps alive.

    .venv/bin/python benchmarks/plan_memory.py                       # CPU: tiny-110m width, 2 layers
    .venv/bin/python benchmarks/plan_memory.py --preset llama2-7b     # on a GPU: llama2-7b width, seq 4096
"""

from __future__ import annotations

import argparse
import functools
import time

import torch
import torch.nn.functional as F
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from llamaforge.model.args import ModelArgs
from llamaforge.plan_memory import activation_items


class RMSNorm(torch.autograd.Function):
    """Keeps its input and 1/rms only, as a fused kernel does."""

    @staticmethod
    def forward(ctx, x, w):
        r = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-5)
        ctx.save_for_backward(x, r, w)
        return (x.float() * r).to(x.dtype) * w

    @staticmethod
    def backward(ctx, g):
        x, r, w = ctx.saved_tensors
        xf = x.float()
        n = xf * r
        gn = g.float() * w.float()
        gx = r * (gn - n * (gn * n).mean(-1, keepdim=True))
        return gx.to(x.dtype), (g.float() * n).sum(dim=tuple(range(g.dim() - 1))).to(w.dtype)


def block(x, p, n_heads, n_kv):
    b, s, d = x.shape
    hd = d // n_heads
    h = RMSNorm.apply(x, p["n1"])
    q = F.linear(h, p["wq"]).view(b, s, n_heads, hd).transpose(1, 2)
    k = F.linear(h, p["wk"]).view(b, s, n_kv, hd).transpose(1, 2)
    v = F.linear(h, p["wv"]).view(b, s, n_kv, hd).transpose(1, 2)
    o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=n_kv != n_heads)
    x = x + F.linear(o.transpose(1, 2).reshape(b, s, d), p["wo"])
    h = RMSNorm.apply(x, p["n2"])
    return x + F.linear(F.silu(F.linear(h, p["w1"])) * F.linear(h, p["w3"]), p["w2"])


SAVE = {torch.ops.aten.mm.default, torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default,
        torch.ops.aten._scaled_dot_product_flash_attention.default,
        torch.ops.aten._scaled_dot_product_efficient_attention.default}


def policy(ctx, func, *args, **kwargs):
    return CheckpointPolicy.MUST_SAVE if func in SAVE else CheckpointPolicy.PREFER_RECOMPUTE


class Track(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.refs = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                self.refs.append((StorageWeakRef(st), st.nbytes(), st.data_ptr()))
        return out


def forward(layers, x, mode, a):
    for p in layers:
        fn = functools.partial(block, p=p, n_heads=a.n_heads, n_kv=a.n_kv_heads)
        if mode == "none":
            x = fn(x)
        elif mode == "full":
            x = checkpoint(fn, x, use_reentrant=False)
        else:
            ctx = functools.partial(create_selective_checkpoint_contexts, policy)
            x = checkpoint(fn, x, use_reentrant=False, context_fn=ctx)
    return x


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default=None)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=None)
    ap.add_argument("--micro-batch", type=int, default=1)
    o = ap.parse_args()
    cuda = torch.cuda.is_available()
    dev, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    name = o.preset or ("llama2-7b" if cuda else "tiny-110m")
    a = ModelArgs.from_name(name)
    s = o.seq_len or (a.max_seq_len if cuda else 512)
    d, f, kv = a.dim, a.hidden_dim, a.n_kv_heads * a.head_dim
    shapes = dict(n1=(d,), n2=(d,), wq=(d, d), wk=(kv, d), wv=(kv, d), wo=(d, d), w1=(f, d), w3=(f, d), w2=(d, f))
    torch.manual_seed(0)
    layers = [{k: (torch.randn(*sh, device=dev, dtype=dtype) * 0.02).requires_grad_() for k, sh in shapes.items()}
              for _ in range(o.layers)]
    pptr = {t.untyped_storage().data_ptr() for p in layers for t in p.values()}
    nbytes = 2 if cuda else 4
    items = activation_items(a, s, o.micro_batch, compute_bytes=nbytes)
    print(f"device {torch.cuda.get_device_name() if cuda else 'cpu'}, {dtype}, width of {name}, "
          f"{o.layers} layers, micro batch {o.micro_batch} x {s}")
    print(f"{'mode':<13} {'estimate MiB':>13} {'measured MiB':>13} {'ratio':>6} {'peak fwd+bwd MiB':>17} {'s':>6}")
    for mode in ("none", "selective", "full"):
        x = torch.randn(o.micro_batch, s, d, device=dev, dtype=dtype, requires_grad=True)
        xb = x.untyped_storage().nbytes()
        est = o.layers * sum(b for _, b, m in items if mode in m)
        t0 = time.perf_counter()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            y = forward(layers, x, mode, a)
            torch.cuda.synchronize()
            measured = torch.cuda.memory_allocated() - base - y.untyped_storage().nbytes() + xb
        else:
            tr = Track()
            with tr:
                y = forward(layers, x, mode, a)
            skip = pptr | {y.untyped_storage().data_ptr()}
            live = {r.cdata: n for r, n, ptr in tr.refs if not r.expired() and ptr not in skip}
            measured = sum(live.values()) + xb
        y.float().pow(2).mean().backward()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else float("nan")
        dt = time.perf_counter() - t0
        for p in layers:
            for t in p.values():
                t.grad = None
        print(f"{mode:<13} {est / 2**20:>13.1f} {measured / 2**20:>13.1f} {measured / est:>6.3f} {peak:>17.1f} "
              f"{dt:>6.2f}")


if __name__ == "__main__":
    main()
