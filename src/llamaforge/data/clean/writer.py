"""Step 9, writing: .jsonl.zst shards, each written under a hidden temporary name and renamed when
complete, plus the progress file that makes a re-run resume after the last complete shard."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from llamaforge.io import atomic_write_json

PROGRESS = ".progress.json"


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.jsonl.zst"


class ShardWriter:
    """Appends JSONL bytes to the current shard; `maybe_close` ends it at a batch boundary once it
    holds `shard_bytes`, renames it into place and returns its entry."""

    def __init__(self, out_dir: Path, shard_bytes: int, level: int = 3, first_index: int = 0):
        import zstandard

        self.dir = Path(out_dir)
        self.shard_bytes = shard_bytes
        self.cctx = zstandard.ZstdCompressor(level=level)
        self.index = first_index
        self._f = None
        self._w = None
        self._sha = None
        self.docs = 0
        self.raw_bytes = 0

    def _open(self) -> None:
        self.tmp = self.dir / f".{shard_name(self.index)}.tmp"
        self._f = open(self.tmp, "wb")  # noqa: SIM115 - closed in close()
        self._w = self.cctx.stream_writer(self._f, closefd=False)
        self.docs = self.raw_bytes = 0

    def write(self, blob: bytes, docs: int) -> None:
        if not docs:
            return
        if self._w is None:
            self._open()
        self._w.write(blob)
        self.docs += docs
        self.raw_bytes += len(blob)

    def maybe_close(self, force: bool = False) -> dict[str, Any] | None:
        if self._w is None or (not force and self.raw_bytes < self.shard_bytes):
            return None
        self._w.close()  # ends the zstd frame; the file stays open (closefd=False)
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        final = self.dir / shard_name(self.index)
        os.replace(self.tmp, final)
        entry = {"file": final.name, "docs": self.docs, "bytes": self.raw_bytes,
                 "compressed_bytes": final.stat().st_size, "sha256": _sha256(final)}
        self._f = self._w = None
        self.index += 1
        return entry

    def abort(self) -> None:
        if self._w is not None:
            try:
                self._w.close()
                self._f.close()
            finally:
                self.tmp.unlink(missing_ok=True)
            self._f = self._w = None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_progress(out_dir: Path, fingerprint: str) -> dict[str, Any] | None:
    p = Path(out_dir) / PROGRESS
    if not p.is_file():
        return None
    try:
        state = json.loads(p.read_text("utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return state if state.get("fingerprint") == fingerprint else None


def save_progress(out_dir: Path, state: dict[str, Any]) -> None:
    atomic_write_json(Path(out_dir) / PROGRESS, state)


def clean_leftovers(out_dir: Path, keep: set[str]) -> list[str]:
    """Remove temporary shards and shards not recorded as complete (a crash between rename and
    progress save); they will be written again, identically."""
    removed = []
    for p in Path(out_dir).iterdir():
        if p.name.startswith(".shard-") and p.name.endswith(".tmp") or (
                p.name.startswith("shard-") and p.name.endswith(".jsonl.zst") and p.name not in keep):
            p.unlink()
            removed.append(p.name)
    return sorted(removed)
