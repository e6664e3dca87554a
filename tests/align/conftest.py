"""Fixtures for the alignment tests: a small built-in world, written once per session."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory) -> Path:
    from llamaforge.align.world import make_world

    out = tmp_path_factory.mktemp("world") / "w"
    make_world(out, seed=0, size=300)
    return out
