"""A world made once per test session (default size: it takes well under a second)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llamaforge.align.world import DEFAULT_SIZE, make_world


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world") / "w"
    make_world(out, seed=0, size=DEFAULT_SIZE)
    return out


@pytest.fixture(scope="session")
def world(world_dir: Path) -> dict[str, list[dict]]:
    return {p.name: read_jsonl(p) for p in sorted(world_dir.glob("*.jsonl"))}
