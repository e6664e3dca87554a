"""Fixtures for the pretraining tests: a small corpus, its token shards, a tiny config, a CLI runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TINY_TOML = """
[model]
preset = "tiny-1m"
dim = 64
n_layers = 2
n_heads = 4
n_kv_heads = 2
multiple_of = 16

[train]
steps = 12
batch_size = 4
seq_len = 32
seed = 0
threads = 1

[optim]
lr = 1e-2
warmup_steps = 3

[checkpoint]
every = 3
keep = 2

[logging]
every = 1
eval_every = 6
eval_windows = 8
progress = false
plots = false
"""


@pytest.fixture(scope="session")
def corpus_jsonl(tmp_path_factory, corpus_files) -> Path:
    """~600 KB of stdlib sources as JSONL documents."""
    out = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    total = 0
    with out.open("w", encoding="utf-8") as f:
        for p in corpus_files:
            try:
                text = p.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
            f.write(json.dumps({"text": text, "path": str(p)}) + "\n")
            total += len(text)
            if total > 600_000:
                break
    return out


@pytest.fixture(scope="session")
def shards(tmp_path_factory, corpus_jsonl, tokenizer_path) -> Path:
    from llamaforge.data.tokenize import tokenize_files

    out = tmp_path_factory.mktemp("shards") / "tok"
    stats = tokenize_files([corpus_jsonl], tokenizer_path, out, val_fraction=0.1, progress=False)
    assert stats["val_docs"] >= 2
    return out


@pytest.fixture(scope="session")
def tiny_toml(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("cfg") / "tiny.toml"
    p.write_text(TINY_TOML)
    return p
