"""Step 3, exact deduplication: whole documents by a hash of their normalized text, and
boilerplate lines (lines found in many distinct documents) removed everywhere, as CCNet does.

Line counting is external: the first pass appends 64-bit line hashes to bucket files on disk;
each bucket is then counted on its own, so memory is a bucket, not the corpus.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from llamaforge.data.clean.normalize import doc_key, line_key

N_BUCKETS = 64


def hash64(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def doc_hash(text: str) -> int:
    return hash64(doc_key(text))


def line_hashes(text: str, min_chars: int) -> list[int]:
    """Hash of each line's CCNet key, for lines whose key has at least min_chars characters
    (0 for shorter lines, which are never boilerplate)."""
    out = []
    for line in text.split("\n"):
        key = line_key(line) if line.strip() else ""
        out.append(hash64(key) if len(key) >= min_chars else 0)
    return out


def unique_line_hashes(text: str, min_chars: int) -> np.ndarray:
    """The distinct non-zero line hashes of one document (what the line count adds)."""
    h = np.fromiter((x for x in line_hashes(text, min_chars) if x), dtype=np.uint64)
    return np.unique(h)


class LineCounter:
    """Counts in how many documents each line hash occurs, spilling to bucket files."""

    def __init__(self, work_dir: Path, buffer_hashes: int = 4 << 20):
        self.dir = Path(work_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in self.dir.glob("bucket-*.u64"):
            old.unlink()
        self.buffer: list[np.ndarray] = []
        self.buffered = 0
        self.limit = buffer_hashes
        self.total = 0

    def add(self, hashes: np.ndarray) -> None:
        if hashes.size:
            self.buffer.append(hashes)
            self.buffered += hashes.size
            if self.buffered >= self.limit:
                self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        h = np.concatenate(self.buffer)
        self.buffer, self.buffered = [], 0
        self.total += h.size
        bucket = (h >> np.uint64(58)).astype(np.int64)  # top 6 bits: 64 buckets
        order = np.argsort(bucket, kind="stable")
        h, bucket = h[order], bucket[order]
        edges = np.searchsorted(bucket, np.arange(N_BUCKETS + 1))
        for b in range(N_BUCKETS):
            lo, hi = edges[b], edges[b + 1]
            if hi > lo:
                with open(self.dir / f"bucket-{b:02d}.u64", "ab") as f:
                    h[lo:hi].tofile(f)

    def frequent(self, min_docs: int) -> tuple[np.ndarray, dict]:
        """Sorted hashes seen in >= min_docs documents, and stats (distinct lines, largest bucket)."""
        self.flush()
        keep = []
        distinct = 0
        largest = 0
        for b in range(N_BUCKETS):
            p = self.dir / f"bucket-{b:02d}.u64"
            if not p.exists():
                continue
            h = np.fromfile(p, dtype=np.uint64)
            largest = max(largest, h.nbytes)
            u, c = np.unique(h, return_counts=True)
            distinct += u.size
            keep.append(u[c >= min_docs])
            p.unlink()
        out = np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.uint64)
        return out, {"lines_counted": int(self.total), "distinct_lines": int(distinct),
                     "boilerplate_lines": int(out.size), "largest_bucket_bytes": int(largest)}


def remove_boilerplate(text: str, boilerplate: np.ndarray, min_chars: int) -> tuple[str, int]:
    """Text without its boilerplate lines, and how many lines went."""
    if boilerplate.size == 0:
        return text, 0
    lines = text.split("\n")
    h = np.array(line_hashes(text, min_chars), dtype=np.uint64)
    pos = np.searchsorted(boilerplate, h)
    pos[pos >= boilerplate.size] = 0
    hit = (boilerplate[pos] == h) & (h != 0)
    n = int(hit.sum())
    if not n:
        return text, 0
    kept = [ln for ln, drop in zip(lines, hit.tolist()) if not drop]
    out = "\n".join(kept)
    while "\n\n\n" in out:
        out = out.replace("\n\n\n", "\n\n")
    return out.strip(), n
