"""Model-based evaluation (Llama 2 section 3.4.1): answers from two models judged pairwise by a
reward model, or exported for a person to judge; win / tie / loss rates with 95% intervals.

A judge is anything with `score(prompts, answers) -> Tensor` (llamaforge.align.reward's reward
model). Prompts file: JSONL with `prompt` (text) or `messages` (a chat dialogue ending with a user
message), optional `id` and `category`.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llamaforge.errors import UserError
from llamaforge.eval.safety.common import read_jsonl
from llamaforge.io import atomic_file

OUTCOMES = ("win", "tie", "loss")


def load_prompts(path: str | Path, chat: bool = False) -> list[dict]:
    """[{id, category, prompt}] where prompt is text or a chat dialogue (chat=True wraps text as one user turn)."""
    from llamaforge.tokenizer import validate_dialog

    path = Path(path)
    if not path.is_file():
        raise UserError(f"--prompts {path}: file not found")
    out = []
    for n, rec in read_jsonl(path):
        where = f"{path}:{n}"
        if "messages" in rec:
            msgs = validate_dialog(rec["messages"], f"{where}: field 'messages'")
            if msgs[-1]["role"] != "user":
                raise UserError(f"{where}: field 'messages' must end with a user message")
            prompt: str | list[dict] = msgs
        elif isinstance(rec.get("prompt"), str) and rec["prompt"].strip():
            prompt = [{"role": "user", "content": rec["prompt"]}] if chat else rec["prompt"]
        else:
            raise UserError(f"{where}: field 'prompt' (a non-empty string) or 'messages' is missing")
        out.append({"id": rec.get("id", n), "category": rec.get("category", "all"), "prompt": prompt, "line": n})
    return out


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion k/n (good at small n and near 0 or 1)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def rates(outcomes: Sequence[str]) -> dict[str, Any]:
    """Win / tie / loss rates of model A against B, each with a 95% Wilson interval."""
    n = len(outcomes)
    out: dict[str, Any] = {"n": n}
    for o in OUTCOMES:
        k = sum(1 for x in outcomes if x == o)
        out[o] = {"rate": k / n if n else float("nan"), "ci95": list(wilson(k, n))}
    return out


def judge_pairs(judge, prompts: Sequence[Any], answers_a: Sequence[str], answers_b: Sequence[str],
                tie_margin: float = 0.0) -> tuple[list[str], list[float], list[float]]:
    """Outcome for A per prompt: win if r(A) - r(B) > tie_margin, loss if < -tie_margin, else tie."""
    sa = [float(x) for x in judge.score(list(prompts), list(answers_a))]
    sb = [float(x) for x in judge.score(list(prompts), list(answers_b))]
    outcomes = ["win" if a - b > tie_margin else "loss" if b - a > tie_margin else "tie"
                for a, b in zip(sa, sb, strict=True)]
    return outcomes, sa, sb


def by_category(items: Sequence[dict], outcomes: Sequence[str]) -> dict[str, dict]:
    cats: dict[str, list[str]] = {}
    for it, o in zip(items, outcomes, strict=True):
        cats.setdefault(str(it["category"]), []).append(o)
    return {c: rates(v) for c, v in sorted(cats.items())}


def export_for_humans(path: str | Path, items: Sequence[dict], answers_a: Sequence[str],
                      answers_b: Sequence[str], seed: int = 0) -> None:
    """JSONL for blind pairwise judging: answers in random order; a person fills `winner` (1, 2 or tie)."""
    rng = random.Random(seed)
    with atomic_file(path) as f:
        for it, a, b in zip(items, answers_a, answers_b, strict=True):
            swap = rng.random() < 0.5
            rec = {"id": it["id"], "category": it["category"], "prompt": it["prompt"],
                   "answer_1": b if swap else a, "answer_2": a if swap else b, "order": "BA" if swap else "AB",
                   "winner": None}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def outcomes_from_human(path: str | Path) -> tuple[list[dict], list[str]]:
    """Read an exported file after a person set `winner` on every line; outcomes are for model A."""
    path = Path(path)
    items, outcomes = [], []
    for n, rec in read_jsonl(path):
        w, order = str(rec.get("winner")).lower(), rec.get("order")
        if order not in ("AB", "BA"):
            raise UserError(f"{path}:{n}: field 'order' must be AB or BA (keep the exported field)")
        if w not in ("1", "2", "tie"):
            raise UserError(f"{path}:{n}: field 'winner' must be 1, 2 or tie, got {rec.get('winner')!r}")
        if w == "tie":
            outcomes.append("tie")
        else:
            a_won = (w == "1") == (order == "AB")
            outcomes.append("win" if a_won else "loss")
        items.append({"id": rec.get("id", n), "category": rec.get("category", "all")})
    return items, outcomes
