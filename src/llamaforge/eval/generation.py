"""The generation call every generation-based benchmark goes through, so tests can replace it.

A `GenerateFn` takes prompts and settings and returns one continuation (without the prompt) per
prompt. `model_generate_fn` binds `llamaforge.generate.generate` to a model; scorers take any
`GenerateFn`, so a test hands them fixed texts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

Prompt = str | list[dict]  # text, or a Llama 2 chat dialogue ending with a user message
# (prompts, settings) -> continuations
GenerateFn = Callable[[Sequence[Prompt], "GenSettings"], list[str]]


@dataclass
class GenSettings:
    """Decoding for safety benchmarks: Llama 2 A.4.7 uses temperature 0.1, top-p 0.9."""

    max_new_tokens: int = 64
    temperature: float = 0.1
    top_p: float = 0.9
    top_k: int = 0
    stop: list[str] = field(default_factory=list)
    seed: int = 0
    batch_size: int = 16

    def greedy(self) -> GenSettings:
        """The same settings with greedy decoding (LLaMA's RealToxicityPrompts protocol)."""
        return GenSettings(self.max_new_tokens, 0.0, 1.0, 0, list(self.stop), self.seed, self.batch_size)


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """Text before the first stop string (generate() may already have cut it)."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


def model_generate_fn(model, tokenizer) -> GenerateFn:
    """A GenerateFn over `llamaforge.generate.generate` (continuous batching over the KV cache).

    Prompts are text or Llama 2 chat dialogues (lists of {"role", "content"}); row i samples with
    seed + i, so repeated prompts give different samples.
    """

    def fn(prompts: Sequence[Prompt], s: GenSettings) -> list[str]:
        from llamaforge.generate import generate

        if not prompts:
            return []
        texts = generate(model, tokenizer, list(prompts), max_new_tokens=s.max_new_tokens,
                         temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, stop=list(s.stop), seed=s.seed,
                         max_batch=s.batch_size)
        return [cut_at_stop(t, s.stop) for t in texts]

    return fn


def fixed_generate_fn(texts: Sequence[str] | Callable[[Prompt], str]) -> GenerateFn:
    """A GenerateFn that answers from a list (cycled) or a function of the prompt: for tests and dry runs."""
    calls = {"n": 0}

    def fn(prompts: Sequence[Prompt], s: GenSettings) -> list[str]:
        out = []
        for p in prompts:
            if callable(texts):
                out.append(texts(p))
            else:
                out.append(texts[calls["n"] % len(texts)])
            calls["n"] += 1
        return [cut_at_stop(t, s.stop) for t in out]

    return fn
