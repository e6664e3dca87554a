"""Step 7, toxicity: a probability per line from alt-profanity-check's shipped linear model, averaged
per document as Llama 2 did (section 4.1). The classifier is called once per batch of lines."""

from __future__ import annotations

import numpy as np

from llamaforge.errors import UserError


def _predict():
    try:
        from profanity_check import predict_prob
    except ImportError:
        raise UserError("toxicity scoring needs 'alt-profanity-check'; pip install 'llamaforge[data]'") from None
    return predict_prob


def doc_lines(text: str) -> list[str]:
    return [ln for ln in text.split("\n") if any(c.isalnum() for c in ln)]


def score_documents(texts: list[str], batch_lines: int = 8192) -> list[float]:
    """Mean line toxicity of each text (0.0 for a text without lines); one classifier call per
    `batch_lines` lines, across documents."""
    if not texts:
        return []
    predict = _predict()
    lines: list[str] = []
    owner: list[int] = []
    for i, t in enumerate(texts):
        ls = doc_lines(t)
        lines += ls
        owner += [i] * len(ls)
    if not lines:
        return [0.0] * len(texts)
    probs = np.concatenate([np.asarray(predict(lines[s:s + batch_lines]), dtype=np.float64)
                            for s in range(0, len(lines), batch_lines)])
    own = np.asarray(owner)
    sums = np.bincount(own, weights=probs, minlength=len(texts))
    counts = np.bincount(own, minlength=len(texts))
    return [float(s / c) if c else 0.0 for s, c in zip(sums, counts)]
