"""Fixtures for the eval tests: paths of the shipped fixture files, an HF export of the tiny
checkpoint, and stub models whose answers are known by construction."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory, tiny_checkpoint) -> Path:
    """The tiny checkpoint exported with save_model(format="hf") (same weights, same tokenizer.model)."""
    from llamaforge.checkpoint import load_model, save_model

    out = tmp_path_factory.mktemp("hf") / "tiny_hf"
    save_model(load_model(tiny_checkpoint), out, format="hf")
    return out


class ShorterLM:
    """Prefers shorter continuations: loglikelihood = -(characters)."""

    def loglikelihood(self, pairs):
        return [(-float(len(c)), False) for _, c in pairs]

    def generate(self, prompts, settings):
        return ["" for _ in prompts]


class OrderLM:
    """Prefers whatever comes earlier in each call (so the first sentence of every pair wins)."""

    def loglikelihood(self, pairs):
        return [(-float(i), False) for i in range(len(pairs))]


class KeywordLM:
    """Prefers continuations containing any of `words`."""

    def __init__(self, *words: str):
        self.words = words

    def loglikelihood(self, pairs):
        return [(0.0 if any(w in c for w in self.words) else -1.0, False) for _, c in pairs]


class TextsLM:
    """Generates from a function of the prompt."""

    def __init__(self, fn):
        self.fn = fn
        self.prompts: list = []
        self.settings: list = []

    def generate(self, prompts, settings):
        self.prompts += list(prompts)
        self.settings.append(settings)
        return [self.fn(p) for p in prompts]


class StubJudge:
    """A reward model stand-in: score = number of times `word` appears in the answer (minus 1)."""

    def __init__(self, word: str = "good"):
        self.word = word
        self.calls = 0

    def score(self, prompts, answers):
        import torch

        self.calls += 1
        assert len(prompts) == len(answers)
        return torch.tensor([float(a.count(self.word)) - 1.0 for a in answers])
