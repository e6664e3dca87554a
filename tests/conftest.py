"""Session-scoped fixtures shared by all test areas: a real tokenizer and tiny checkpoints.

Built once per test session from the Python standard library's sources (the built-in corpus),
so no test downloads anything or depends on ../shared.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path.home() / ".cache" / "llamaforge-inductor"))
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def corpus_files() -> list[Path]:
    from llamaforge.data.corpus import stdlib_files

    return stdlib_files(max_bytes=3_000_000)


@pytest.fixture(scope="session")
def tokenizer_path(tmp_path_factory, corpus_files) -> Path:
    """A real SentencePiece BPE model (vocab 1000) trained on stdlib sources."""
    from llamaforge.tokenizer import train_tokenizer

    out = tmp_path_factory.mktemp("tok")
    return train_tokenizer(corpus_files, 1000, out)


@pytest.fixture(scope="session")
def tokenizer(tokenizer_path):
    from llamaforge.tokenizer import Tokenizer

    return Tokenizer(tokenizer_path)


@pytest.fixture(scope="session")
def tiny_args(tokenizer):
    from llamaforge.model.args import ModelArgs

    return ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=tokenizer.n_words, multiple_of=16,
                     max_seq_len=512)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_args, tokenizer) -> Path:
    """A native checkpoint (random weights, seed 0) with its tokenizer: load with load_model."""
    from llamaforge.checkpoint import save_model
    from llamaforge.model.llama import Transformer

    torch.manual_seed(0)
    model = Transformer(tiny_args)
    model.init_weights()
    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_model(model, out, tokenizer=tokenizer)
    return out
