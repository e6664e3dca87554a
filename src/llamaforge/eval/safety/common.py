"""What every safety benchmark shares: the model interface, file readers that name file:line:field
on bad input, and the two local classifiers (toxicity, sentiment).

Benchmarks talk to an `EvalLM`: `loglikelihood(pairs)` (text level, lm-eval's conventions) and
`generate(prompts, settings)`. Tests hand a stub with the same two methods.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from llamaforge.errors import UserError
from llamaforge.eval.generation import GenerateFn, GenSettings

TOXICITY_CLASSIFIER = ("alt-profanity-check (profanity_check.predict_prob), a local stand-in for the "
                       "Perspective API the papers used; scores are not comparable to the papers' numbers")
SENTIMENT_CLASSIFIER = "VADER compound score (vaderSentiment), in [-1, 1], as Llama 2's BOLD evaluation"


class TextLM(Protocol):
    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]: ...

    def generate(self, prompts: Sequence[str], settings: GenSettings) -> list[str]: ...


class EvalLM:
    """A model for the suite: likelihoods from a LikelihoodScorer, text from a GenerateFn."""

    def __init__(self, scorer, generate_fn: GenerateFn | None = None, name: str = "model", chat: bool = False):
        self.scorer, self._generate_fn, self.name, self.chat = scorer, generate_fn, name, chat

    @classmethod
    def from_path(cls, path: str | Path, device: str = "cpu", dtype: str | None = None, batch_size: int = 16,
                  chat: bool = False) -> EvalLM:
        from llamaforge.checkpoint import find_tokenizer, load_model
        from llamaforge.eval.generation import model_generate_fn
        from llamaforge.eval.likelihood import LikelihoodScorer

        model = load_model(path, device=device, dtype=dtype)
        tok = find_tokenizer(path)
        if tok is None:
            raise UserError(f"--model {path}: no tokenizer.model beside the checkpoint")
        return cls(LikelihoodScorer(model, tok, batch_size=batch_size), model_generate_fn(model, tok),
                   name=Path(path).name, chat=chat)

    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, bool]]:
        return self.scorer.loglikelihood(pairs)

    def generate(self, prompts: Sequence[str], settings: GenSettings) -> list[str]:
        if self._generate_fn is None:
            raise UserError("this model has no generation function")
        if self.chat:  # chat models: each prompt is the user's message in the Llama 2 template
            return self._generate_fn([[{"role": "user", "content": p}] for p in prompts], settings)
        return self._generate_fn(list(prompts), settings)


# -- readers ------------------------------------------------------------------------------------
def read_jsonl(path: Path, required: Sequence[str] = ()) -> list[tuple[int, dict]]:
    """(line number, record) of a JSONL file; dotted `required` fields ("prompt.text") must be strings."""
    rows: list[tuple[int, dict]] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(rec, dict):
                raise UserError(f"{path}:{n}: expected a JSON object, got {type(rec).__name__}")
            for field in required:
                get_field(rec, field, f"{path}:{n}")
            rows.append((n, rec))
    if not rows:
        raise UserError(f"{path}: no records")
    return rows


def get_field(rec: dict, dotted: str, where: str, kind: type = str) -> Any:
    cur: Any = rec
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise UserError(f"{where}: field {dotted!r} is missing")
        cur = cur[part]
    if not isinstance(cur, kind):
        raise UserError(f"{where}: field {dotted!r} must be {kind.__name__}, got {type(cur).__name__}")
    return cur


def read_table(path: Path, required: Sequence[str], delimiter: str = ",") -> list[tuple[int, dict]]:
    """(line number, row) of a CSV/TSV with a header; every required column present and non-empty."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise UserError(f"{path}:1: missing column(s) {', '.join(missing)} (header has: {', '.join(header)})")
        rows = []
        for row in reader:
            n = reader.line_num
            if None in row:
                raise UserError(f"{path}:{n}: more fields than the header has columns")
            for c in required:
                if row.get(c) is None or not str(row[c]).strip():
                    raise UserError(f"{path}:{n}: column {c!r} is empty")
            rows.append((n, row))
    if not rows:
        raise UserError(f"{path}: no rows")
    return rows


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None


# -- classifiers --------------------------------------------------------------------------------
def toxicity(texts: Sequence[str]) -> list[float]:
    """Probability of toxic/profane text per text, in one batched call (1000 texts in ~14 ms)."""
    if not texts:
        return []
    from profanity_check import predict_prob

    return [float(x) for x in predict_prob([t if t.strip() else "." for t in texts])]


def sentiment(texts: Sequence[str]) -> list[float]:
    """VADER compound sentiment per text, in [-1, 1]."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    an = SentimentIntensityAnalyzer()
    return [float(an.polarity_scores(t)["compound"]) for t in texts]


def mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else float("nan")


def pct(xs: Sequence[bool]) -> float:
    return 100.0 * mean([float(x) for x in xs])
