"""Perplexity and bits per byte over text files, with a sliding window.

Each document is encoded with BOS and every token after it is scored exactly once, with up to
`max_length - stride` tokens of earlier context (stride = max_length: disjoint windows, as
lm-eval's rolling loglikelihood). Perplexity is per token (depends on the tokenizer); bits per byte
divides the total negative log-likelihood in bits by the UTF-8 bytes of the text, so models with
different tokenizers can be compared (as lm-eval's `bits_per_byte`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from llamaforge.errors import UserError
from llamaforge.eval.likelihood import LikelihoodScorer


@dataclass
class PerplexityResult:
    documents: int
    tokens: int
    bytes: int
    nll: float  # total negative log-likelihood, nats

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll / self.tokens) if self.tokens else float("nan")

    @property
    def bits_per_byte(self) -> float:
        return self.nll / math.log(2) / self.bytes if self.bytes else float("nan")

    def to_dict(self) -> dict:
        return {"documents": self.documents, "tokens": self.tokens, "bytes": self.bytes, "nll": self.nll,
                "perplexity": self.perplexity, "bits_per_byte": self.bits_per_byte}


def read_texts(paths: list[str | Path], text_field: str = "text", max_docs: int | None = None) -> list[str]:
    """Documents from .txt (whole file), .jsonl(.gz/.zst) or .parquet files (llamaforge.data.sources)."""
    from llamaforge.data.sources import iter_documents

    texts: list[str] = []
    for p in paths:
        if not Path(p).is_file():
            raise UserError(f"--data.path {p}: file not found")
        for doc in iter_documents(p, text_field=text_field):
            if doc.text:
                texts.append(doc.text)
            if max_docs is not None and len(texts) >= max_docs:
                return texts
    if not texts:
        raise UserError(f"no non-empty documents in {', '.join(map(str, paths))} (text field {text_field!r})")
    return texts


def perplexity(scorer: LikelihoodScorer, texts: list[str], stride: int | None = None) -> PerplexityResult:
    """Sliding-window perplexity and bits per byte of `texts` (one document each)."""
    rows = scorer.rolling(texts, stride=stride)
    return PerplexityResult(documents=len(texts), tokens=sum(n for _, n in rows),
                            bytes=sum(len(t.encode("utf-8")) for t in texts), nll=-sum(ll for ll, _ in rows))
