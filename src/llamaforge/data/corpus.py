"""The built-in default corpus: the Python standard library's own source files.

Every machine with Python has them, so demos and tests need no download. Files are listed in a
stable order (sorted paths) so a seed gives the same corpus on every machine with the same Python.
"""

from __future__ import annotations

import sysconfig
from collections.abc import Iterator
from pathlib import Path


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(max_bytes: int | None = None, exclude_tests: bool = True) -> list[Path]:
    """Sorted .py files of the standard library (tests and site-packages excluded), up to max_bytes."""
    root = stdlib_dir()
    out, total = [], 0
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).parts
        if rel[0] in ("site-packages", "dist-packages") or (exclude_tests and ("test" in rel or "tests" in rel)):
            continue
        try:
            size = p.stat().st_size
        except OSError:
            continue
        if size == 0:
            continue
        out.append(p)
        total += size
        if max_bytes is not None and total >= max_bytes:
            break
    return out


def stdlib_documents(max_bytes: int | None = None) -> Iterator[str]:
    """The text of each stdlib source file (undecodable files skipped)."""
    for p in stdlib_files(max_bytes):
        try:
            yield p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
