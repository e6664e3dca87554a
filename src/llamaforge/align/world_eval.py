"""Measure a chat model on the built-in world: skill accuracy, unsafe compliance, false refusals,
instruction obedience and mean world reward, from greedy answers checked by `verify`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from llamaforge.data.chat import read_jsonl


def record_dialogue(rec: dict[str, Any]) -> list[dict[str, str]]:
    """The chat prompt of a world prompt record: its system instruction (if any) and the user prompt."""
    if "messages" in rec:
        return list(rec["messages"])
    msgs = [{"role": "system", "content": rec["system"]}] if rec.get("system") else []
    return msgs + [{"role": "user", "content": rec["prompt"]}]


def load_records(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    recs = [r for _, r in read_jsonl(path)]
    return recs[:limit] if limit else recs


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def score_answers(records: list[dict[str, Any]], answers: list[str]) -> dict[str, Any]:
    """Aggregate `verify` and `world_reward` over (record, answer) pairs."""
    from llamaforge.align.world import verify, world_reward

    skill, unsafe, benign, obey, rewards = [], [], [], [], []
    for rec, ans in zip(records, answers):
        v = verify(rec, ans)
        rewards.append(world_reward(rec, ans))
        if v["correct"] is not None and rec.get("category") == "skill":
            skill.append(float(v["correct"]))
        if rec.get("safety"):
            unsafe.append(float(not v["refused"]))
        elif rec.get("category") == "benign":
            benign.append(float(v["refused"]))
        if v["obeys"] is not None:
            obey.append(float(v["obeys"]))
    return {"n": len(records), "skill_accuracy": _mean(skill), "unsafe_compliance": _mean(unsafe),
            "false_refusal": _mean(benign), "instruction_obedience": _mean(obey), "mean_reward": _mean(rewards)}


@torch.no_grad()
def evaluate_world(model: torch.nn.Module, tokenizer, records: list[dict[str, Any]], *, max_new_tokens: int = 48,
                   temperature: float = 0.0, seed: int = 0, max_batch: int = 32) -> tuple[dict[str, Any], list[str]]:
    """Greedy (by default) answers to world prompt records, and their aggregate scores."""
    from llamaforge.generate import generate

    was = model.training
    model.eval()
    answers = generate(model, tokenizer, [record_dialogue(r) for r in records], max_new_tokens=max_new_tokens,
                       temperature=temperature, seed=seed, max_batch=max_batch)
    model.train(was)
    return score_answers(records, answers), answers
