"""GPU check (distributed issue): train tinyllama-1.1b with bf16, per-block compile and selective activation
checkpointing on one GPU for about 2 minutes on random tokens; print tokens/s and MFU (vs the card's dense
bf16 peak, 6N + 12LdT FLOPs per token). A measurement, not a test.
    python benchmarks/gpu_train_check.py [--steps 150] [--micro 8] [--ac selective] [--no-compile]
On CPU (smoke test): python benchmarks/gpu_train_check.py --preset tiny-1m --seq 128 --steps 4 --device cpu
"""

from __future__ import annotations

import argparse
import json
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
from llamaforge.train.metrics import read_metrics
from llamaforge.train.pretrain import run


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="tinyllama-1.1b")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--micro", type=int, default=8)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--ac", default="selective")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="keep the run here (default: a temp dir)")
    a = p.parse_args()
    args = ModelArgs.from_name(a.preset, vocab_size=32000)
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"{a.preset}: {args.num_params() / 1e9:.3f}B params, {args.flops_per_token(a.seq):.3g} FLOPs/token; "
          f"batch {a.batch} x {a.seq} (micro {a.micro}); bf16, compile={not a.no_compile}, ac={a.ac}; {name}")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        w = ShardWriter(data / "train", vocab_size=32000, eos_id=2)
        need = a.batch * a.seq * (a.steps + 1) + 1
        rng = np.random.default_rng(0)
        while need > 0:
            n = min(need, 1 << 24)
            w.add_tokens(rng.integers(3, 32000, n), 1)
            need -= n
        w.close()
        out = Path(a.out) if a.out else Path(tmp) / "run"
        cfg = load_config(PretrainConfig, None, [
            f"--model.preset={a.preset}", "--model.vocab_size=32000", f"--model.max_seq_len={max(a.seq, 2048)}",
            f"--data.path={data}", f"--train.steps={a.steps}", f"--train.batch_size={a.batch}",
            f"--train.micro_batch={a.micro}", f"--train.seq_len={a.seq}", "--train.dtype=bf16",
            f"--train.device={a.device}", "--optim.lr=3e-4", "--optim.warmup_steps=10", "--logging.every=5",
            "--logging.progress=false", "--logging.plots=false", "--checkpoint.final=false",
            "--checkpoint.resume=false", f"--parallel.activation_checkpointing={a.ac}",
            f"--parallel.compile={'false' if a.no_compile else 'true'}"])
        t0 = time.time()
        run(cfg, out)
        rows = [r for r in read_metrics(out / "metrics.jsonl") if "tokens_per_s" in r]
        steady = rows[len(rows) // 3:] or rows  # skip compile warm-up
        tps = statistics.median(r["tokens_per_s"] for r in steady)
        mfu = statistics.median(r.get("mfu", 0.0) for r in steady)
        mem = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
        res = {"device": name, "preset": a.preset, "tokens_per_s": tps, "mfu": mfu, "wall_s": time.time() - t0,
               "peak_mem_gib": mem, "final_loss": rows[-1]["loss"]}
        print("RESULT " + json.dumps(res))


if __name__ == "__main__":
    main()
