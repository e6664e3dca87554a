"""A planted corpus, cleaned once per session (the classifiers load once: a few seconds)."""

from __future__ import annotations

import json
from importlib import resources

import pytest

pytest.importorskip("datasketch")
pytest.importorskip("langid")
pytest.importorskip("profanity_check")
pytest.importorskip("zstandard")

from llamaforge.config import load_config  # noqa: E402
from llamaforge.data.clean.config import CleanConfig  # noqa: E402
from llamaforge.data.clean.synth import planted_corpus, write_jsonl  # noqa: E402

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


@pytest.fixture(scope="session")
def planted(tmp_path_factory):
    """(records, kinds, input path, malformed line number)."""
    d = tmp_path_factory.mktemp("planted")
    recs, kinds = planted_corpus(200, seed=0)
    path = d / "corpus.jsonl"
    bad_line = write_jsonl(path, recs, malformed_at=57)
    return recs, kinds, path, bad_line


@pytest.fixture(scope="session")
def cleaned(planted, tmp_path_factory):
    """The planted corpus through the default pipeline (+ blocklist, --skip-bad)."""
    from llamaforge.data.clean.pipeline import clean

    recs, kinds, path, bad_line = planted
    out = tmp_path_factory.mktemp("clean") / "out"
    manifest = clean([str(path)], out, make_config("--read.skip_bad=true"), workers=1, progress=False)
    return manifest, read_shards(out), out
