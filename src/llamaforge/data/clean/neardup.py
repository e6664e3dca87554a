"""Step 4, near-duplicate removal: MinHash signatures over word shingles (datasketch, computed in
the workers) and an LSH index (datasketch MinHashLSH, in the main process, in input order) that
keeps the first document of each cluster.

The index is the one structure that grows with the corpus: `NearDupIndex.memory_bytes` measures
it and `estimate_bytes_per_doc` sizes it before a run.
"""

from __future__ import annotations

import hashlib
import sys
from collections import Counter

import numpy as np

from llamaforge.data.clean.config import NearDupConfig
from llamaforge.data.clean.normalize import shingle_words

_P = np.uint64(0x100000001B3)  # FNV prime: mixes word hashes into a shingle hash
_WORD_CACHE: dict[str, int] = {}


def _word_hashes(words: list[str]) -> np.ndarray:
    cache = _WORD_CACHE
    if len(cache) > 2_000_000:  # bounded: words are Zipfian, the cache refills with the frequent ones
        cache.clear()
    for w in set(words).difference(cache):
        cache[w] = int.from_bytes(hashlib.blake2b(w.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                                  "little")
    return np.fromiter(map(cache.__getitem__, words), dtype=np.uint64, count=len(words))


def shingle_hashes(text: str, n: int) -> np.ndarray:
    """Distinct 32-bit hashes of the document's word n-grams (one shingle if it has fewer words)."""
    words = shingle_words(text)
    if not words:
        return np.zeros(0, dtype=np.uint32)
    wh = _word_hashes(words)
    n = min(n, len(words))
    m = len(words) - n + 1
    acc = wh[:m].copy()
    for k in range(1, n):
        acc = acc * _P + wh[k:k + m]
    acc ^= acc >> np.uint64(32)
    return np.unique(acc.astype(np.uint32))


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, the pre-mix of datasketch's affine32 scheme."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


class Signer:
    """datasketch MinHash (affine32 scheme) of a document's shingles.

    The permutations are datasketch's own (made once); the update is `MinHash.update_batch`'s
    arithmetic (fmix32, then a*h+b mod 2^32, then the minimum) on the whole shingle array, without
    its per-item Python call. A test checks the values equal datasketch's.
    """

    def __init__(self, cfg: NearDupConfig):
        from datasketch import MinHash

        self.cfg = cfg
        a, b = MinHash(num_perm=cfg.num_perm, seed=cfg.seed, scheme="affine32").permutations
        self._a = np.asarray(a, dtype=np.uint32)
        self._b = np.asarray(b, dtype=np.uint32)

    def signature(self, text: str) -> np.ndarray | None:
        """uint32[num_perm], or None for a document without words."""
        sh = shingle_hashes(text, self.cfg.shingle_words)
        if sh.size == 0:
            return None
        hv = _fmix32(sh)
        sig = np.full(self.cfg.num_perm, np.iinfo(np.uint32).max, dtype=np.uint32)
        for start in range(0, hv.size, 2048):  # bounded temporaries for very long documents
            phv = hv[start:start + 2048, None] * self._a + self._b
            np.minimum(sig, phv.min(axis=0), out=sig)
        return sig


def _band_key(band: bytes) -> bytes:
    """LSH bucket key: 8 bytes instead of a band's 4*rows (keeps the index ~13% smaller)."""
    return hashlib.blake2b(band, digest_size=8).digest()


class NearDupIndex:
    """Query-then-insert in input order: a document whose candidate has estimated Jaccard >= threshold
    is a near duplicate of that candidate's cluster (the first document); others join the index."""

    def __init__(self, cfg: NearDupConfig):
        from datasketch import MinHashLSH

        self.cfg = cfg
        self.lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm, hashfunc=_band_key)
        self.b, self.r = self.lsh.b, self.lsh.r
        self.sigs = np.zeros((1024, cfg.num_perm), dtype=np.uint32) if cfg.verify else None
        self.slot: dict[int, int] = {}  # doc index -> row of sigs
        self.size = 0
        self.queries = 0
        self.candidates_checked = 0
        self.rejected_candidates = 0
        self.cluster_sizes: Counter = Counter()  # representative doc index -> duplicates found

    def _lean(self, sig: np.ndarray):
        from datasketch import LeanMinHash

        return LeanMinHash(seed=self.cfg.seed, hashvalues=sig, scheme="affine32")

    def check(self, doc: int, sig: np.ndarray) -> tuple[int, float]:
        """(representative doc index, similarity) if `doc` is a near duplicate, else (-1, 0.0) after
        inserting it."""
        self.queries += 1
        lean = self._lean(sig)
        cands = self.lsh.query(lean)
        if cands:
            best, best_sim = -1, 0.0
            for c in sorted(cands):
                if self.sigs is None:
                    best, best_sim = c, float("nan")
                    break
                self.candidates_checked += 1
                sim = float(np.mean(self.sigs[self.slot[c]] == sig))
                if sim >= self.cfg.threshold and (best < 0 or sim > best_sim):
                    best, best_sim = c, sim
            if best >= 0:
                self.cluster_sizes[best] += 1
                return best, best_sim
            self.rejected_candidates += len(cands)
        self.lsh.insert(doc, lean, check_duplication=False)
        if self.sigs is not None:
            if self.size == self.sigs.shape[0]:
                self.sigs = np.concatenate([self.sigs, np.zeros_like(self.sigs)])
            self.sigs[self.size] = sig
            self.slot[doc] = self.size
        self.size += 1
        return -1, 0.0

    def cluster_stats(self) -> dict:
        sizes = Counter(n + 1 for n in self.cluster_sizes.values())  # members incl. the kept one
        return {
            "clusters": len(self.cluster_sizes),
            "duplicates": int(sum(self.cluster_sizes.values())),
            "largest_cluster": max(sizes) if sizes else 0,
            "cluster_size_histogram": {str(k): v for k, v in sorted(sizes.items())},
        }

    def memory_bytes(self) -> int:
        """Measured size of the index: LSH band tables, the key table, signatures and the slot map."""
        total = 0
        for table in self.lsh.hashtables:
            d = table._dict
            total += sys.getsizeof(d)
            for k, v in d.items():
                total += sys.getsizeof(k) + sys.getsizeof(v)
        keys = self.lsh.keys._dict
        total += sys.getsizeof(keys) + sum(sys.getsizeof(v) + 28 for v in keys.values())
        if self.sigs is not None:
            total += self.sigs.nbytes + sys.getsizeof(self.slot) + 56 * len(self.slot)
        return total

    def stats(self) -> dict:
        return {
            "bands": self.b, "rows_per_band": self.r, "num_perm": self.cfg.num_perm,
            "indexed_docs": self.size, "queries": self.queries,
            "candidates_verified": self.candidates_checked, "candidates_rejected": self.rejected_candidates,
        }


def estimate_bytes_per_doc(cfg: NearDupConfig, sample: int = 2000) -> float:
    """Index bytes per indexed document, measured on random signatures (what one doc costs)."""
    idx = NearDupIndex(cfg)
    rng = np.random.default_rng(0)
    for i in range(sample):
        idx.check(i, rng.integers(0, 2**32, size=cfg.num_perm, dtype=np.uint32))
    return idx.memory_bytes() / sample
