"""`llamaforge data tokenize`: text files -> token shards (train + held-out validation split by document).

The main process cuts files into raw batches (no parsing); worker processes decode, parse and
tokenize them; results come back in order and stream into the shard writers, so memory stays
constant in the corpus size and the output does not depend on the number of workers. A document
goes to validation when a hash of its `file:line` falls under `--val-fraction`.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from llamaforge.data import sources
from llamaforge.data.shards import ShardWriter
from llamaforge.errors import UserError
from llamaforge.io import atomic_dir, file_sha256, write_manifest

_TOK = None


def _init_worker(tokenizer_path: str) -> None:
    global _TOK
    from llamaforge.tokenizer import Tokenizer

    _TOK = Tokenizer(tokenizer_path)


def is_val(source: str, line: Any, fraction: float, seed: int = 0) -> bool:
    """Deterministic document-level split: hash of seed, file name and line (row) under `fraction`.

    The file's name, not its full path, so the split does not depend on where the corpus lives."""
    if fraction <= 0:
        return False
    h = hashlib.blake2b(f"{seed}\0{Path(source).name}\0{line}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2.0**64 < fraction


def tokenize_batch(batch: sources.RawBatch, text_field: str, skip_bad: bool, val_fraction: float,
                   seed: int) -> dict[str, Any]:
    """Parse and tokenize one raw batch: concatenated train/val token arrays, counts, bad records."""
    texts, splits = [], []
    bad = sources.BadRecords()
    empty = 0
    for line, payload in zip(batch.lines, batch.payloads):
        try:
            text, _ = sources.parse_payload(batch.kind, payload, text_field)
        except sources.BadRecordError as e:
            if not skip_bad:
                raise sources.bad_error(batch.source, batch.kind, line, e) from None
            sources.record_bad(bad, batch.source, batch.kind, line, e)
            continue
        if not text.strip():
            empty += 1
            continue
        texts.append(text)
        splits.append(is_val(batch.source, line, val_fraction, seed))
    ids = _TOK.encode_batch(texts, bos=True, eos=True) if texts else []
    out: dict[str, Any] = {"bad": bad, "empty": empty, "bytes": batch.nbytes}
    for name, want in (("train", False), ("val", True)):
        docs = [np.asarray(x, dtype=np.int64) for x, s in zip(ids, splits) if s == want]
        out[name] = (np.concatenate(docs) if docs else np.zeros(0, np.int64), len(docs))
    return out


def _batches(files: list[Path], txt_mode: str, skip_bad: bool, bad: sources.BadRecords):
    for f in files:
        yield from sources.iter_raw_batches(f, txt_mode=txt_mode, batch_bytes=1 << 20, max_records=2048,
                                            skip_bad=skip_bad, bad=bad)


def tokenize_files(files: list[Path], tokenizer_path: str | Path, out: str | Path, *, workers: int = 1,
                   text_field: str = "text", txt_mode: str = "file", val_fraction: float = 0.01,
                   skip_bad: bool = False, seed: int = 0, shard_tokens: int = 1 << 26,
                   progress: bool = True) -> dict[str, Any]:
    """Tokenize `files` into OUT/train and OUT/val shard directories; returns the statistics."""
    from tqdm import tqdm

    from llamaforge.tokenizer import Tokenizer

    if not 0 <= val_fraction < 1:
        raise UserError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    tok = Tokenizer(tokenizer_path)
    t0 = time.time()
    bad = sources.BadRecords()
    stats = {"docs": 0, "empty_docs": 0, "bytes": 0}
    with atomic_dir(out) as tmp:
        writers = {s: ShardWriter(tmp / s, tok.n_words, tok.eos_id, tok.bos_id, shard_tokens) for s in ("train", "val")}
        bar = tqdm(total=sum(f.stat().st_size for f in files), unit="B", unit_scale=True, desc="tokenize",
                   disable=not progress or None, file=sys.stderr)

        def consume(res: dict[str, Any]) -> None:
            bad.merge(res["bad"])
            stats["empty_docs"] += res["empty"]
            stats["bytes"] += res["bytes"]
            for name in ("train", "val"):
                arr, n = res[name]
                if n:
                    writers[name].add_tokens(arr, n)
                    stats["docs"] += n
            bar.update(res["bytes"])

        args = (text_field, skip_bad, val_fraction, seed)
        if workers <= 1:
            _init_worker(str(tokenizer_path))
            for b in _batches(files, txt_mode, skip_bad, bad):
                consume(tokenize_batch(b, *args))
        else:
            with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(str(tokenizer_path),)) as ex:
                pending: deque[Future] = deque()
                for b in _batches(files, txt_mode, skip_bad, bad):
                    pending.append(ex.submit(tokenize_batch, b, *args))
                    if len(pending) >= 2 * workers:  # bounded: constant memory
                        consume(pending.popleft().result())
                while pending:
                    consume(pending.popleft().result())
        bar.close()
        index = {s: w.close(split=s) for s, w in writers.items()}
        tok.save(tmp)
        if index["train"]["tokens"] < 2:
            raise UserError("no training tokens were produced: are the inputs empty, or is --val-fraction too high?")
        stats.update({
            "train_tokens": index["train"]["tokens"], "train_docs": index["train"]["docs"],
            "val_tokens": index["val"]["tokens"], "val_docs": index["val"]["docs"],
            "dtype": index["train"]["dtype"], "vocab_size": tok.n_words, "bad_records": bad.to_dict(),
            "tokenizer_sha256": file_sha256(tok.path) if tok.path else None,
        })
        write_manifest(tmp, "data tokenize", {"text_field": text_field, "txt_mode": txt_mode, "val_fraction":
                       val_fraction, "seed": seed, "workers": workers, "skip_bad": skip_bad,
                       "tokenizer": str(tokenizer_path)}, files[:1000], time.time() - t0, stats=stats)
    return stats


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="llamaforge data tokenize",
        description="Tokenize .txt / .jsonl(.gz|.zst) / .parquet files into token shards (bos + text + eos per "
                    "document) with a held-out validation split by document. Writes OUT/train, OUT/val, "
                    "OUT/tokenizer.model and OUT/manifest.json.",
        epilog="example: llamaforge data tokenize corpus/ --tokenizer tok/tokenizer.model --out shards/ --workers 2",
    )
    p.add_argument("inputs", nargs="+", help="files, directories or globs")
    p.add_argument("--tokenizer", required=True, help="tokenizer.model (or a directory holding one)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--workers", type=int, default=1, help="tokenizer processes (default 1)")
    p.add_argument("--text-field", default="text", help="JSON / parquet field holding the text (default text)")
    p.add_argument("--txt-mode", choices=["file", "blocks"], default="file",
                   help=".txt: one document per file, or per blank-line-separated block")
    p.add_argument("--val-fraction", type=float, default=0.01, help="share of documents held out (default 0.01)")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation split")
    p.add_argument("--skip-bad", action="store_true", help="skip malformed records and count them in the manifest")
    p.add_argument("--shard-tokens", type=int, default=1 << 26, help="tokens per shard file")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    files = sources.expand_inputs(a.inputs)
    tok_path = Path(a.tokenizer)
    if tok_path.is_dir():
        tok_path = tok_path / "tokenizer.model"
    stats = tokenize_files(files, tok_path, a.out, workers=a.workers, text_field=a.text_field, txt_mode=a.txt_mode,
                           val_fraction=a.val_fraction, skip_bad=a.skip_bad, seed=a.seed,
                           shard_tokens=a.shard_tokens, progress=not a.no_progress)
    skipped = stats["bad_records"]["count"]
    print(f"{a.out}: {stats['train_tokens']:,} train tokens ({stats['train_docs']:,} docs), "
          f"{stats['val_tokens']:,} val tokens ({stats['val_docs']:,} docs), {stats['dtype']}"
          + (f", {skipped} bad records skipped" if skipped else ""))
    return 0
