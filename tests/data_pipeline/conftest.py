"""A planted corpus, cleaned once per session (the classifiers load once: a few seconds)."""

from __future__ import annotations

import pytest

pytest.importorskip("datasketch")
pytest.importorskip("langid")
pytest.importorskip("profanity_check")
pytest.importorskip("zstandard")

from dp_helpers import make_config, read_shards  # noqa: E402

from llamaforge.data.clean.synth import planted_corpus, write_jsonl  # noqa: E402


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
