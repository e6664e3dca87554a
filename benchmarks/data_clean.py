"""Benchmark `llamaforge data clean`: end-to-end throughput (MB/s, MB/s per worker), each step's
share of the time, peak memory and the near-duplicate index size, on generated varied English-like
text (no mass duplication, about 2% planted junk) so that every step does real work.

    .venv/bin/python benchmarks/data_clean.py --mb 100 --workers 1,2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def make_corpus(path: Path, mb: float) -> None:
    from llamaforge.data.clean.synth import prose_records

    t = time.time()
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in prose_records(int(mb * 1e6), seed=0):
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    tmp.replace(path)
    print(f"generated {path} ({path.stat().st_size / 1e6:.1f} MB) in {time.time() - t:.0f} s", file=sys.stderr)


def run(corpus: Path, out: Path, workers: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "llamaforge", "data", "clean", str(corpus), "--out", str(out),
           "--workers", str(workers), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    t = time.time()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.time() - t
    m = json.loads((out / "manifest.json").read_text())
    m["process_wall_s"] = wall
    return m


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=float, default=100.0, help="corpus size in MB of text")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts to compare")
    ap.add_argument("--dir", default="/tmp/llamaforge-bench", help="where the corpus and outputs go")
    a = ap.parse_args()
    d = Path(a.dir)
    d.mkdir(parents=True, exist_ok=True)
    corpus = d / f"prose_{a.mb:g}mb.jsonl"
    if not corpus.exists():
        make_corpus(corpus, a.mb)
    size = corpus.stat().st_size / 1e6
    rows = []
    for w in [int(x) for x in a.workers.split(",")]:
        m = run(corpus, d / f"out_w{w}", w)
        rows.append((w, m))
    docs = rows[0][1]["totals"]["docs_in"]
    print(f"\ncorpus: {size:.1f} MB JSONL, {docs:,} documents; machine: {os.cpu_count()} cores\n")
    print("| workers | wall s | MB/s | MB/s per worker | CPU s | MB per CPU s | docs out | peak RSS main MB "
          "| peak RSS worker MB | near-dup index MB (bytes/doc) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for w, m in rows:
        wall = m["process_wall_s"]
        idx = m["steps"]["neardup"]["index"]
        cpu = m["timing"]["cpu_s"]
        print(f"| {w} | {wall:.1f} | {size / wall:.2f} | {size / wall / w:.2f} | {cpu:.1f} | {size / cpu:.2f} "
              f"| {m['totals']['docs_out']:,} "
              f"| {m['memory']['peak_rss_main_bytes'] / 2**20:.0f} "
              f"| {m['memory']['peak_rss_worker_bytes'] / 2**20:.0f} "
              f"| {idx['memory_bytes'] / 2**20:.1f} ({idx['bytes_per_indexed_doc']:.0f}) |")
    w, m = rows[-1]
    print(f"\nshare of CPU time by step (workers={w}; pass 1 = hashing + signatures, dedup_index = main process):")
    t = m["timing"]
    print("| step | CPU s | share |\n|---|---|---|")
    for k, v in t["seconds"].items():
        print(f"| {k} | {v:.1f} | {100 * t['share'][k]:.1f}% |")
    print(f"\npass 1 wall {t['pass1_wall_s']:.1f} s, pass 2 wall {t['pass2_wall_s']:.1f} s, "
          f"model load {t['load_models_s']:.1f} s")
    print("\nfunnel:")
    from llamaforge.data.clean.summary import funnel_table

    print(funnel_table(m["steps"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
