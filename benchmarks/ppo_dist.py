"""PPO generation phase under FSDP2: the policy gathered once into a replica vs decoding on the shards.

Run: .venv/bin/python benchmarks/ppo_dist.py        (starts itself under torchrun, 2 ranks, gloo)
Each rank holds an FSDP2-sharded policy (train/parallel.py: blocks, then root) and generates its
share of a PPO iteration's prompts with the KV-cache generator (`generate_ids`), either
- replica: `ppo_dist.gathered_replica` (one full state dict per phase), then decode on the plain copy;
- sharded: decode on the FSDP module itself, which all-gathers every block at every token.
The table is the slowest rank's seconds per phase (median of the repeats) and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SIZES = {  # name: (dim, n_layers, n_heads, n_kv_heads, vocab)
    "S": (256, 4, 8, 4, 32000),
    "M": (512, 8, 8, 8, 32000),
}


def worker(a: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist

    from llamaforge.align.ppo_dist import gathered_replica
    from llamaforge.generate import generate_ids
    from llamaforge.model.args import ModelArgs
    from llamaforge.model.llama import Transformer
    from llamaforge.train import parallel as par
    from llamaforge.train.config import ParallelSection

    torch.set_num_threads(1)
    info = par.init_distributed(ParallelSection(), "cpu")
    rows = []
    for name in a.sizes.split(","):
        dim, layers, heads, kv, vocab = SIZES[name]
        args = ModelArgs(dim=dim, n_layers=layers, n_heads=heads, n_kv_heads=kv, vocab_size=vocab, multiple_of=64,
                         max_seq_len=256)
        torch.manual_seed(0)
        model = Transformer(args)
        model.init_weights()
        par.apply_fsdp(model, info.mesh["dp_shard"], None, info.device)
        with torch.no_grad():
            model(torch.zeros(1, 4, dtype=torch.long))  # FSDP's lazy init through the root
        g = torch.Generator().manual_seed(1)
        prompts = [torch.randint(3, vocab, (int(n),), generator=g).tolist()
                   for n in torch.randint(8, 24, (a.batch,), generator=g)]

        def phase(mode: str, model=model, prompts=prompts) -> tuple[float, float]:
            dist.barrier()
            t0 = time.perf_counter()
            m = gathered_replica(model, info.device) if mode == "replica" else model
            t1 = time.perf_counter()
            generate_ids(m, prompts, max_new_tokens=a.new_tokens, temperature=1.0, seed=info.rank * a.batch)
            t2 = time.perf_counter()
            t = torch.tensor([t1 - t0, t2 - t1], dtype=torch.float64)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)  # the phase ends when the slowest rank does
            return float(t[0]), float(t[1])

        res = {}
        for mode in ("replica", "sharded"):
            phase(mode)  # warm-up
            runs = [phase(mode) for _ in range(a.repeats)]
            res[mode] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
        rows.append((name, model_params(args), res))
    if info.is_main:
        print(f"\n{info.world} ranks (gloo, 1 thread each), {a.batch} prompts per rank, {a.new_tokens} new tokens, "
              f"median of {a.repeats}; seconds per generation phase (slowest rank)\n")
        print("| model | params | replica: gather | replica: decode | replica: phase | sharded: phase "
              "| sharded / replica |")
        print("|---|---|---|---|---|---|---|")
        for name, n, res in rows:
            rg, rd = res["replica"]
            sp = sum(res["sharded"])
            print(f"| {name} | {n / 1e6:.1f}M | {rg:.3f} | {rd:.3f} | {rg + rd:.3f} | {sp:.3f} | "
                  f"{sp / (rg + rd):.1f}x |")
    dist.destroy_process_group()


def model_params(args) -> int:
    import torch

    from llamaforge.model.llama import Transformer

    with torch.device("meta"):
        return Transformer(args).num_params()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--sizes", default="S,M")
    ap.add_argument("--batch", type=int, default=8, help="prompts per rank (one generation phase)")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a)
    root = Path(__file__).resolve().parents[1]
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "PYTHONPATH": str(root / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    cmd = [str(torchrun), "--standalone", f"--nproc_per_node={a.nproc}", __file__, "--worker",
           "--sizes", a.sizes, "--batch", str(a.batch), "--new-tokens", str(a.new_tokens), "--repeats", str(a.repeats)]
    sys.exit(subprocess.run(cmd, env=env).returncode)


if __name__ == "__main__":
    main()
