"""Training tokens/s and MFU: `llamaforge pretrain` (the Trainer) vs transformers.LlamaForCausalLM in a plain loop.

Same config (d256, 4 layers, 8 heads, 4 kv heads, vocab 32000), batch 8 x 256, AdamW, 2 threads,
fp32 and bf16 autocast, side by side in one process (median step time after a warm-up step).
    .venv/bin/python benchmarks/train_speed.py [--steps 6]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as llamaforge.train sets it; applies to both engines

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from llamaforge.config import load_config
from llamaforge.data.shards import ShardWriter
from llamaforge.model.args import ModelArgs
from llamaforge.train.config import PretrainConfig
from llamaforge.train.metrics import peak_flops

MODEL = dict(dim=256, n_layers=4, n_heads=8, n_kv_heads=4, vocab_size=32000, multiple_of=256)


def random_shards(path: Path, tokens: int) -> Path:
    w = ShardWriter(path / "train", vocab_size=32000, eos_id=2)
    w.add_tokens(np.random.default_rng(0).integers(3, 32000, tokens), 1)
    w.close()
    return path


CLOCK = time.perf_counter


def ours(data: Path, out: Path, steps: int, dtype: str, batch: int, seq: int, extra: list[str]) -> float:
    """Median tokens/s of Trainer.train_step (loader, forward, backward, clip, AdamW) as `pretrain` builds it."""
    from llamaforge.data.loader import PretrainLoader, Source
    from llamaforge.model.llama import Transformer
    from llamaforge.train import parallel as par
    from llamaforge.train.pretrain import lm_loss
    from llamaforge.train.trainer import Trainer

    cfg = load_config(PretrainConfig, None, [
        f"--data.path={data}", f"--train.steps={steps}", f"--train.batch_size={batch}", f"--train.seq_len={seq}",
        f"--train.dtype={dtype}", "--optim.warmup_steps=1", *extra])
    info = par.DistInfo()
    micro, _ = Trainer.layout(cfg, info)
    torch.manual_seed(0)
    model = Transformer(ModelArgs(**MODEL, max_seq_len=seq))
    model.init_weights()
    loader = PretrainLoader([Source(str(data / "train"))], seq, batch, micro)
    tr = Trainer(model, lm_loss, loader, cfg, out, info)
    times = []
    for step in range(1, steps + 1):
        t = CLOCK()
        tr.train_step(step)
        times.append(CLOCK() - t)
    return batch * seq / statistics.median(times[1:])


def hf(steps: int, dtype: str, batch: int, seq: int) -> float:
    from transformers import LlamaConfig, LlamaForCausalLM

    a = ModelArgs(**MODEL, max_seq_len=seq)
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=a.dim, intermediate_size=a.hidden_dim, num_hidden_layers=a.n_layers,
                      num_attention_heads=a.n_heads, num_key_value_heads=a.n_kv_heads, vocab_size=a.vocab_size,
                      max_position_embeddings=seq, tie_word_embeddings=False, attn_implementation="sdpa")
    model = LlamaForCausalLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), eps=1e-5, weight_decay=0.1)
    ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if dtype == "bf16" else contextlib.nullcontext
    rng = np.random.default_rng(1)
    times = []
    for _ in range(steps):
        x = torch.from_numpy(rng.integers(3, 32000, (batch, seq + 1)))
        t = CLOCK()
        with ctx():
            loss = model(input_ids=x[:, :-1], labels=x[:, :-1], use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(CLOCK() - t)
    return batch * seq / statistics.median(times[1:])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--compile", action="store_true", help="also run ours with --parallel.compile=true")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="cpu: process CPU time (robust when other jobs share the cores; use with --threads 1)")
    a = p.parse_args()
    global CLOCK
    if a.clock == "cpu":
        CLOCK = time.process_time
    torch.set_num_threads(a.threads)
    args = ModelArgs(**MODEL, max_seq_len=a.seq)
    fpt = args.flops_per_token(a.seq)
    print(f"d{args.dim} L{args.n_layers} H{args.n_heads} KV{args.n_kv_heads} vocab 32000, "
          f"{args.num_params():,} params; batch {a.batch} x {a.seq}; {a.threads} threads; "
          f"flops/token {fpt:.3g} (6N + 12LdT); {a.clock} clock")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = random_shards(Path(tmp) / "data", a.batch * (a.seq + 1) * (a.steps + 2) * 2)
        for dtype in ("fp32", "bf16"):
            peak, _ = peak_flops("cpu", dtype)
            cases = [("llamaforge Trainer", lambda d=dtype: ours(data, Path(tmp) / f"o-{d}", a.steps, d, a.batch,
                                                                  a.seq, []))]
            if a.compile:
                cases.append(("llamaforge Trainer+compile", lambda d=dtype: ours(
                    data, Path(tmp) / f"c-{d}", a.steps, d, a.batch, a.seq, ["--parallel.compile=true"])))
            cases.append(("transformers loop", lambda d=dtype: hf(a.steps, d, a.batch, a.seq)))
            for name, fn in cases:
                tps = fn()
                rows.append((name, dtype, tps, tps * fpt / peak, peak))
    base = {r[1]: r[2] for r in rows if r[0] == "transformers loop"}
    print(f"{'engine':30s} {'dtype':5s} {'tokens/s':>9s} {'MFU':>6s} {'vs hf same':>10s} {'vs hf fp32':>10s}")
    for name, dt, tps, m, _peak in rows:
        print(f"{name:30s} {dt:5s} {tps:9,.0f} {m:6.1%} {tps / base[dt]:10.2f} {tps / base['fp32']:10.2f}")
    print("MFU against a measured CPU peak (2048^3 matmul at this thread count, per dtype)")


if __name__ == "__main__":
    main()
