"""Token shards: flat binary files of token ids (uint16 when the vocabulary fits, else uint32) + index.json.

A shard directory holds `shard_00000.bin`, `shard_00001.bin`, ... and `index.json` (dtype, vocab size,
eos id, per-shard token and document counts). The files are the token stream of the documents in
order, each document `<s> ... </s>`. Readers memory-map the files, so reading is O(window), and a
directory of any size is one logical token stream (`TokenShards.read(start, length)`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from llamaforge.errors import UserError
from llamaforge.io import atomic_write_json

INDEX = "index.json"
FORMAT_VERSION = 1


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.uint32)


class ShardWriter:
    """Append token arrays; shards roll over at `shard_tokens` and are written to a temp name first.

    Memory is constant: tokens go straight to the open file. `close()` renames the last shard and
    writes index.json (so a directory without index.json is incomplete).
    """

    def __init__(self, directory: str | Path, vocab_size: int, eos_id: int, bos_id: int | None = None,
                 shard_tokens: int = 1 << 26):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dtype = token_dtype(vocab_size)
        self.vocab_size, self.eos_id, self.bos_id = vocab_size, eos_id, bos_id
        self.shard_tokens = shard_tokens
        self.shards: list[dict[str, Any]] = []
        self._f = None
        self._n = 0
        self._docs = 0

    def _open(self) -> None:
        name = f"shard_{len(self.shards):05d}.bin"
        self._name = name
        self._f = open(self.dir / f".{name}.tmp", "wb")  # noqa: SIM115 - closed in _roll
        self._n = self._docs = 0

    def _roll(self) -> None:
        if self._f is None:
            return
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self.dir / f".{self._name}.tmp", self.dir / self._name)
        self.shards.append({"file": self._name, "tokens": self._n, "docs": self._docs})
        self._f = None

    def add_document(self, ids: list[int] | np.ndarray) -> None:
        self.add_tokens(np.asarray(ids, dtype=np.int64), 1)

    def add_tokens(self, arr: np.ndarray, docs: int) -> None:
        """Append the tokens of `docs` whole documents (a shard may end inside a document)."""
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
            raise ValueError(f"token id out of range [0, {self.vocab_size})")
        arr = arr.astype(self.dtype)
        while arr.size:
            if self._f is None:
                self._open()
            take = min(arr.size, self.shard_tokens - self._n)
            self._f.write(arr[:take].tobytes())
            self._n += take
            arr = arr[take:]
            if self._n >= self.shard_tokens:
                self._docs += docs if not arr.size else 0
                self._roll()
        if self._f is not None:
            self._docs += docs

    def close(self, **extra: Any) -> dict[str, Any]:
        self._roll()
        index = {
            "format_version": FORMAT_VERSION,
            "dtype": self.dtype.name,
            "vocab_size": self.vocab_size,
            "eos_id": self.eos_id,
            "bos_id": self.bos_id,
            "tokens": sum(s["tokens"] for s in self.shards),
            "docs": sum(s["docs"] for s in self.shards),
            "shards": self.shards,
            **extra,
        }
        atomic_write_json(self.dir / INDEX, index)
        return index


class TokenShards:
    """A shard directory read as one memory-mapped token stream."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        idx = self.dir / INDEX
        if not idx.is_file():
            hint = ""
            if (self.dir / "train" / INDEX).is_file():
                hint = f"; did you mean {self.dir / 'train'}?"
            raise UserError(f"{self.dir}: not a token shard directory (no {INDEX}); "
                            f"make one with `llamaforge data tokenize`{hint}")
        try:
            self.index = json.loads(idx.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{idx}: invalid JSON ({e})") from None
        self.dtype = np.dtype(self.index["dtype"])
        self.vocab_size = int(self.index["vocab_size"])
        self.eos_id = self.index.get("eos_id")
        self.maps: list[np.memmap] = []
        starts = [0]
        for s in self.index["shards"]:
            f = self.dir / s["file"]
            if not f.is_file():
                raise UserError(f"{f}: shard listed in {idx} is missing")
            n = f.stat().st_size // self.dtype.itemsize
            if n != s["tokens"]:
                raise UserError(f"{f}: holds {n} tokens but {idx} says {s['tokens']}; re-run data tokenize")
            self.maps.append(np.memmap(f, dtype=self.dtype, mode="r") if n else np.zeros(0, self.dtype))
            starts.append(starts[-1] + n)
        self.starts = np.asarray(starts, dtype=np.int64)
        self.num_tokens = int(self.starts[-1])

    def __len__(self) -> int:
        return self.num_tokens

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens [start, start + length) of the stream as int64 (may span shards)."""
        if start < 0 or start + length > self.num_tokens:
            raise IndexError(f"{self.dir}: window [{start}, {start + length}) outside {self.num_tokens} tokens")
        out = np.empty(length, dtype=np.int64)
        i = int(np.searchsorted(self.starts, start, side="right")) - 1
        pos, done = start, 0
        while done < length:
            local = pos - int(self.starts[i])
            take = min(length - done, len(self.maps[i]) - local)
            out[done:done + take] = self.maps[i][local:local + take]
            done += take
            pos += take
            i += 1
        return out

    def num_windows(self, seq_len: int) -> int:
        """Windows of seq_len + 1 tokens at stride seq_len: every token is a target exactly once."""
        return max(0, (self.num_tokens - 1) // seq_len)

    def window(self, k: int, seq_len: int) -> np.ndarray:
        return self.read(k * seq_len, seq_len + 1)


def resolve_split(path: str | Path, split: str = "train") -> Path:
    """A shard directory itself, or the `train` / `val` sub-directory of a `data tokenize` output."""
    p = Path(path)
    if (p / INDEX).is_file():
        return p
    if (p / split / INDEX).is_file():
        return p / split
    if not p.exists():
        raise UserError(f"data path {p} not found; make token shards with `llamaforge data tokenize`")
    raise UserError(f"{p}: holds no token shards ({INDEX} or {split}/{INDEX}); "
                    "make them with `llamaforge data tokenize`")
