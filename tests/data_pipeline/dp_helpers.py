"""Helpers shared by the data pipeline tests (a uniquely named module: `conftest` names collide)."""

from __future__ import annotations

import json
from importlib import resources

from llamaforge.config import load_config
from llamaforge.data.clean.config import CleanConfig

BLOCKLIST = str(resources.files("llamaforge.resources").joinpath("blocklist_example.txt"))


def read_shards(out_dir) -> list[dict]:
    import zstandard

    recs = []
    for p in sorted(out_dir.glob("shard-*.jsonl.zst")):
        with open(p, "rb") as f:
            data = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True).read().decode("utf-8")
        recs += [json.loads(line) for line in data.splitlines()]
    return recs


def make_config(*overrides: str) -> CleanConfig:
    base = [f"--privacy.blocklist={BLOCKLIST}", "--read.batch_bytes=16384"]
    return load_config(CleanConfig, None, base + list(overrides))
