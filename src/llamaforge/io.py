"""Atomic writes and run manifests, shared by every stage.

Every output is written to a temporary name in the same directory and renamed into place, so a
crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llamaforge.errors import UserError


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Open a temp file beside `path`; on success fsync and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    kwargs = {} if "b" in mode else {"encoding": encoding}
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_file(path) as f:
        f.write(text)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path, default: Any = None) -> Any:
    """The JSON in `path`, or `default` when the file does not exist; invalid JSON is an error naming file:line."""
    p = Path(path)
    if not p.is_file():
        return default
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{p}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temp directory; on success it replaces `path` (the old one is removed after)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        for p in tmp.rglob("*"):
            if p.is_file():
                with open(p, "rb+") as f:
                    os.fsync(f.fileno())
        if path.exists():
            if not overwrite:
                raise FileExistsError(path)
            old = path.with_name(f".{path.name}.old.{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def file_sha256(path: str | Path, limit: int | None = None) -> str:
    """sha256 of a file (of its first `limit` bytes when given)."""
    h = hashlib.sha256()
    left = limit
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20 if left is None else min(1 << 20, left))
            if not chunk:
                break
            h.update(chunk)
            if left is not None:
                left -= len(chunk)
                if left <= 0:
                    break
    return h.hexdigest()


def describe_inputs(paths: list[str | Path]) -> list[dict[str, Any]]:
    """Inputs for a manifest: path, size and hash of files; a directory's manifest hash if it has one."""
    out = []
    for p in map(Path, paths):
        if p.is_file():
            out.append({"path": str(p), "bytes": p.stat().st_size, "sha256": file_sha256(p)})
        elif p.is_dir():
            m = p / "manifest.json"
            entry: dict[str, Any] = {"path": str(p), "kind": "directory"}
            if m.is_file():
                entry["manifest_sha256"] = file_sha256(m)
            out.append(entry)
        else:
            out.append({"path": str(p), "missing": True})
    return out


def write_manifest(out_dir: str | Path, command: str, config: Any = None, inputs: list[str | Path] | None = None,
                   wall_time_s: float | None = None, **extra: Any) -> dict[str, Any]:
    """Write OUT/manifest.json: command, resolved config, inputs with hashes, version, wall time."""
    from llamaforge import __version__
    from llamaforge.config import to_dict

    manifest = {
        "command": command,
        "argv": sys.argv,
        "version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": socket.gethostname(),
        "config": to_dict(config) if config is not None else None,
        "inputs": describe_inputs(list(inputs or [])),
        "wall_time_s": wall_time_s,
    }
    manifest.update(extra)
    atomic_write_json(Path(out_dir) / "manifest.json", manifest)
    return manifest
