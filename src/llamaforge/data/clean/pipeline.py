"""`data clean` end to end: two streaming passes over the inputs.

Pass 1 hashes every document in the workers and decides, in input order in this process, which
are exact or near duplicates (the near-dup index is the only structure that grows with the corpus)
and which lines are boilerplate (counted on disk). Pass 2 runs every step in the workers and
writes shards here. A re-run with the same inputs and config resumes after the last complete
shard; anything else must be asked for with --restart.
"""

from __future__ import annotations

import gc
import hashlib
import json
import resource
import shutil
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from llamaforge.config import dump_toml, to_dict
from llamaforge.data.clean import stages, summary
from llamaforge.data.clean.config import CleanConfig
from llamaforge.data.clean.runner import Executor, Progress
from llamaforge.data.clean.writer import ShardWriter, clean_leftovers, load_progress, save_progress
from llamaforge.data.sources import BadRecords, RawBatch, expand_inputs, iter_raw_batches
from llamaforge.errors import UserError
from llamaforge.io import atomic_write_json, atomic_write_text, write_manifest

WORK = ".work"


def fingerprint(cfg: CleanConfig, files: list[Path]) -> str:
    ident = {"config": to_dict(cfg),
             "inputs": [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def _batches(files: list[Path], cfg: CleanConfig, bad: BadRecords) -> Iterator[RawBatch]:
    for f in files:
        yield from iter_raw_batches(f, txt_mode=cfg.read.txt_mode, batch_bytes=cfg.read.batch_bytes,
                                    skip_bad=cfg.read.skip_bad, bad=bad)


def _prepare_out(out: Path, files: list[Path], fp: str, restart: bool) -> dict[str, Any] | None:
    """The finished manifest if this exact run is already done; otherwise make OUT ready."""
    out_r = out.resolve()
    for f in files:
        if out_r in f.resolve().parents:
            raise UserError(f"input {f} is inside --out {out}; write the output somewhere else")
    manifest = out / "manifest.json"
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    old = json.loads(manifest.read_text("utf-8")) if manifest.is_file() else None
    if old is not None and old.get("fingerprint") == fp and not restart:
        return old
    if load_progress(out, fp) is not None and not restart:
        return None  # resume
    # Another run's output: refuse to mix it with ours, unless it holds no complete shard (a run that
    # failed early, e.g. on a malformed record, is simply started over).
    if (old is not None or any(out.glob("shard-*.jsonl.zst"))) and not restart:
        raise UserError(f"{out} holds the output of another `data clean` run (different inputs or config); "
                        "pass --restart to replace it, or choose another --out")
    for p in out.iterdir():
        if p.name.startswith(("shard-", ".shard-")) or p.name in ("manifest.json", ".progress.json", "config.toml"):
            p.unlink()
    shutil.rmtree(out / WORK, ignore_errors=True)
    return None


def run_pass1(files: list[Path], cfg: CleanConfig, out: Path, workers: int, progress: bool) -> dict[str, Any]:
    """Duplicate verdicts (doc indices) and the boilerplate line hashes; saved under OUT/.work."""
    from llamaforge.data.clean.dedup import LineCounter
    from llamaforge.data.clean.neardup import NearDupIndex

    work = out / WORK
    want_lines = cfg.dedup.enabled and cfg.dedup.boilerplate
    seen: set[int] = set()
    index = NearDupIndex(cfg.neardup) if cfg.neardup.enabled else None
    counter = LineCounter(work / "lines") if want_lines else None
    exact: list[int] = []
    near: list[tuple[int, int, float]] = []
    total = sum(f.stat().st_size for f in files)
    bar = Progress("pass 1/2 hash + dedup index", total, progress)
    meta: deque = deque()

    def tasks() -> Iterator[RawBatch]:
        for b in _batches(files, cfg, BadRecords()):
            meta.append((b.source, b.offset, b.nbytes))
            yield b

    ex = Executor(workers, stages.init_worker, (cfg,))
    gi = 0
    t_main = 0.0
    t_workers: Counter = Counter()
    ok_run = False
    try:
        for res in ex.map(stages.signatures, tasks()):
            t0 = time.process_time()
            t_workers.update(res["time"])
            source, offset, nbytes = meta.popleft()
            hashes = res["hashes"].tolist()
            ends = np.cumsum(res["line_counts"])
            for i in np.flatnonzero(res["ok"]).tolist():
                g = gi + i
                if cfg.dedup.enabled:
                    if hashes[i] in seen:
                        exact.append(g)
                        continue
                    seen.add(hashes[i])
                row = int(res["sig_row"][i])
                if index is not None and row >= 0:
                    rep, sim = index.check(g, res["sigs"][row])
                    if rep >= 0:
                        near.append((g, rep, sim))
                        continue
                if counter is not None:
                    counter.add(res["lines"][ends[i] - res["line_counts"][i]:ends[i]])
            gi += len(res["ok"])
            t_main += time.process_time() - t0
            bar.advance(source, offset, int(res["ok"].sum()), nbytes)
        ok_run = True
    finally:
        ex.close(ok_run)
        wall = bar.close()
    t0 = time.process_time()
    boiler, bstats = counter.frequent(cfg.dedup.boilerplate_min_docs) if counter else (np.zeros(0, np.uint64), {})
    t_main += time.process_time() - t0
    stats: dict[str, Any] = {"docs": gi, "exact_duplicates": len(exact), "boilerplate": bstats,
                             "wall_s": round(wall, 3), "main_s": round(t_main, 3),
                             "worker_s": {k: round(v, 3) for k, v in t_workers.items()},
                             "exact_index_bytes": sys.getsizeof(seen) + 32 * len(seen)}
    if index is not None:
        from llamaforge.data.clean.neardup import estimate_bytes_per_doc

        mem = index.memory_bytes() if index.size <= 200_000 else int(estimate_bytes_per_doc(cfg.neardup) * index.size)
        stats["clusters"] = index.cluster_stats()
        stats["index"] = {**index.stats(), "memory_bytes": mem,
                          "bytes_per_indexed_doc": round(mem / max(index.size, 1), 1)}
    near_arr = np.array(near, dtype=np.float64).reshape(-1, 3)
    work.mkdir(parents=True, exist_ok=True)
    np.savez(work / "pass1.npz", exact=np.array(exact, dtype=np.int64), near_gi=near_arr[:, 0].astype(np.int64),
             near_rep=near_arr[:, 1].astype(np.int64), near_sim=near_arr[:, 2], boilerplate=boiler)
    atomic_write_json(work / "pass1.json", stats)
    return stats


def _load_pass1(out: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with np.load(out / WORK / "pass1.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads((out / WORK / "pass1.json").read_text("utf-8"))


def _dups_for(arrays: dict[str, np.ndarray], gi: int, n: int) -> dict[int, tuple]:
    d: dict[int, tuple] = {}
    ex = arrays["exact"]
    for g in ex[np.searchsorted(ex, gi):np.searchsorted(ex, gi + n)].tolist():
        d[g - gi] = ("exact",)
    ng = arrays["near_gi"]
    lo, hi = np.searchsorted(ng, gi), np.searchsorted(ng, gi + n)
    for g, rep, sim in zip(ng[lo:hi].tolist(), arrays["near_rep"][lo:hi].tolist(), arrays["near_sim"][lo:hi].tolist()):
        d[g - gi] = ("near", rep, sim)
    return d


def run_pass2(files: list[Path], cfg: CleanConfig, out: Path, fp: str, workers: int, progress: bool,
              state: dict[str, Any] | None) -> tuple[Counter, BadRecords, list[dict], float]:
    arrays, _ = _load_pass1(out)
    blocklist = None
    if cfg.privacy.enabled and cfg.privacy.blocklist:
        from llamaforge.data.clean.privacy import load_blocklist

        blocklist = load_blocklist(cfg.privacy.blocklist)
    t0 = time.perf_counter()
    stages.load_models(cfg)  # here, once: forked workers share the loaded classifiers
    t_load = time.perf_counter() - t0
    counts: Counter = Counter(state["counts"]) if state else Counter()
    bad = BadRecords()
    if state:
        bad.count = state["bad"]["count"]
        bad.by_reason.update(state["bad"]["by_reason"])
        bad.examples = [(e["file"], e["line"], e["reason"]) for e in state["bad"]["examples"]]
    shards: list[dict] = list(state["shards"]) if state else []
    start_batch = state["next_batch"] if state else 0
    clean_leftovers(out, {s["file"] for s in shards})
    writer = ShardWriter(out, cfg.writer.shard_bytes, cfg.writer.zstd_level, first_index=len(shards))
    bar = Progress("pass 2/2 filter + write", sum(f.stat().st_size for f in files), progress)
    meta: deque = deque()
    file_bad = BadRecords(keep=1 << 30)  # unreadable files: keyed by path so a resume counts them once
    file_errors: dict[str, str] = dict(state.get("file_errors", {})) if state else {}

    def tasks() -> Iterator[tuple]:
        gi = 0
        for bno, b in enumerate(_batches(files, cfg, file_bad)):
            n = len(b.payloads)
            if bno < start_batch:
                bar.advance(b.source, b.offset, 0, 0)
            else:
                meta.append((bno, b.source, b.offset, b.nbytes))
                yield b, _dups_for(arrays, gi, n)
            gi += n

    def all_file_errors() -> dict[str, str]:
        return {**file_errors, **{f: r for f, _, r in file_bad.examples}}

    ex = Executor(workers, stages.init_worker, (cfg, arrays["boilerplate"], blocklist))
    t_write = 0.0
    ok_run = False
    try:
        for res in ex.map(stages.filter_batch, tasks()):
            bno, source, offset, nbytes = meta.popleft()
            t0 = time.process_time()
            writer.write(res["blob"], res["docs"])
            counts.update(res["counts"])
            bad.merge(res["bad"])
            entry = writer.maybe_close()
            if entry is not None:
                shards.append(entry)
                save_progress(out, {"fingerprint": fp, "next_batch": bno + 1, "counts": dict(counts),
                                    "bad": bad.to_dict(), "shards": shards, "pass1_done": True,
                                    "file_errors": all_file_errors()})
            t_write += time.process_time() - t0
            bar.advance(source, offset, res["counts"]["read.docs"], nbytes)
        entry = writer.maybe_close(force=True)
        if entry is not None:
            shards.append(entry)
        for f, reason in all_file_errors().items():
            bad.add(f, None, reason, category="unreadable file")
            counts["read.bad_files"] += 1
        ok_run = True
    finally:
        if not ok_run:
            writer.abort()
        ex.close(ok_run)
        wall = bar.close()
    counts["time.write"] += t_write  # main process: compressing and writing shards
    counts["load_models_s"] = t_load
    return counts, bad, shards, wall


def clean(inputs: list[str], out: str | Path, cfg: CleanConfig, workers: int = 1, restart: bool = False,
          progress: bool = True) -> dict[str, Any]:
    """Run the pipeline; returns the manifest (also written to OUT/manifest.json)."""
    t_start = time.time()
    out = Path(out)
    files = expand_inputs(inputs)
    fp = fingerprint(cfg, files)
    done = _prepare_out(out, files, fp, restart)
    if done is not None:
        print(f"{out}: already complete ({done.get('totals', {}).get('docs_out', '?')} documents); "
              "nothing to do (--restart to run again)", file=sys.stderr)
        return done
    state = load_progress(out, fp)
    work = out / WORK
    if state is None:
        shutil.rmtree(work, ignore_errors=True)
        save_progress(out, {"fingerprint": fp, "next_batch": 0, "counts": {}, "bad": BadRecords().to_dict(),
                            "shards": [], "pass1_done": False})
        state = load_progress(out, fp)
    if not state.get("pass1_done"):
        run_pass1(files, cfg, out, workers, progress)
        state["pass1_done"] = True
        save_progress(out, state)
    else:
        print(f"{out}: resuming after {len(state['shards'])} complete shard(s)", file=sys.stderr)
    gc.collect()
    resumed = state["next_batch"] > 0
    _, p1 = _load_pass1(out)
    counts, bad, shards, wall2 = run_pass2(files, cfg, out, fp, workers, progress, state if resumed else None)
    steps = summary.steps_summary(counts, cfg, p1)
    read_bytes = sum(f.stat().st_size for f in files)
    wall = time.time() - t_start
    r_self, r_kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    ru_self, ru_kids = r_self.ru_maxrss * 1024, r_kids.ru_maxrss * 1024
    cpu_s = r_self.ru_utime + r_self.ru_stime + r_kids.ru_utime + r_kids.ru_stime
    atomic_write_text(out / "config.toml", dump_toml(cfg))
    manifest = write_manifest(
        out, "data clean", config=cfg, inputs=files, wall_time_s=round(wall, 3),
        fingerprint=fp, complete=True, workers=workers, resumed=resumed,
        totals={"docs_in": steps["read"]["docs"], "docs_out": steps["writer"]["docs"],
                "bad_records": bad.count, "input_bytes": read_bytes, "output_bytes": steps["writer"]["bytes"]},
        steps=steps, bad_records=bad.to_dict(), shards=shards,
        timing={"pass1_wall_s": p1.get("wall_s"), "pass2_wall_s": round(wall2, 3),
                "load_models_s": round(counts.pop("load_models_s", 0.0), 3),
                "input_mb_per_s": round(read_bytes / 1e6 / max(wall, 1e-9), 3),
                "cpu_s": round(cpu_s, 3),  # this process and its workers (includes model loading)
                "input_mb_per_cpu_s": round(read_bytes / 1e6 / max(cpu_s, 1e-9), 3),
                **summary.timing_summary(counts, {"pass1_dedup_index": p1.get("main_s", 0.0),
                                                  **p1.get("worker_s", {})})},
        memory={"peak_rss_main_bytes": ru_self, "peak_rss_worker_bytes": ru_kids,
                "exact_index_bytes": p1.get("exact_index_bytes"),
                "neardup_index_bytes": p1.get("index", {}).get("memory_bytes"),
                "boilerplate_bytes": int(p1.get("boilerplate", {}).get("boilerplate_lines", 0)) * 8},
    )
    (out / ".progress.json").unlink(missing_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    return manifest
