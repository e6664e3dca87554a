"""Token shards for the torchrun tests (from the session tokenizer and the stdlib corpus)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def dist_shards(tmp_path_factory, corpus_files, tokenizer_path) -> Path:
    from llamaforge.data.tokenize import tokenize_files

    d = tmp_path_factory.mktemp("dist_data")
    src = d / "docs.jsonl"
    total = 0
    with src.open("w", encoding="utf-8") as f:
        for p in corpus_files:
            try:
                text = p.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
            f.write(json.dumps({"text": text}) + "\n")
            total += len(text)
            if total > 300_000:
                break
    tokenize_files([src], tokenizer_path, d / "tok", val_fraction=0.1, progress=False)
    return d / "tok"
