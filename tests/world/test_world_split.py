"""Eval prompts share no operands, words, harmful targets, look-alikes or instruction arguments with training."""

from __future__ import annotations

import random

from llamaforge.align.world_instructions import ARGS, gatt_instruction, instruction_args
from llamaforge.align.world_safety import HARMFUL, benign_pool, harmful_pool
from llamaforge.align.world_tasks import _key, words_for


def _training_items(world):
    """Every task key, prompt and instruction argument that any training file shows a model."""
    keys, prompts, args = set(), set(), set()

    def add(rec):
        if rec.get("args") is not None:
            keys.add(_key(rec["kind"], rec["args"]))
        if rec.get("instruction") and rec["instruction"].get("arg"):
            args.add(rec["instruction"]["arg"])

    for r in world["sft.jsonl"]:
        prompts.update(m["content"] for m in r["messages"] if m["role"] == "user")
        for t in r.get("tasks", [r]):
            add(t)
    for name in ("prefs_helpful.jsonl", "prefs_safety.jsonl", "prompts_train.jsonl"):
        for r in world[name]:
            prompts.add(r["prompt"])
            add(r)
    for d in world["dialogues.jsonl"]:
        prompts.update(m["content"] for m in d["messages"] if m["role"] == "user")
        for t in d["tasks"]:
            add(t)
    return keys, prompts, args


def test_eval_disjoint_from_every_training_file(world):
    keys, prompts, args = _training_items(world)
    evals = world["prompts_eval.jsonl"]
    assert len(keys) > 1000 and len(args) > 5  # the training side was really collected
    for r in evals:
        assert r["prompt"] not in prompts, r
        if r.get("args") is not None:
            assert _key(r["kind"], r["args"]) not in keys, r
        if r.get("instruction") and r["instruction"].get("arg"):
            assert r["instruction"]["arg"] not in args, r
    train_targets = {r["prompt"] for r in world["prompts_train.jsonl"] if r["category"] == "harmful"}
    eval_targets = {r["prompt"] for r in evals if r["category"] == "harmful"}
    assert train_targets and eval_targets and not train_targets & eval_targets


def test_pools_split_cleanly():
    assert not set(words_for("train")) & set(words_for("eval"))
    assert 20 <= len(words_for("eval")) <= 60 and len(words_for("train")) > 120
    h_train = {r["target"] for r in harmful_pool("train")}
    h_eval = {r["target"] for r in harmful_pool("eval")}
    assert not h_train & h_eval and h_train | h_eval == {t for ts in HARMFUL.values() for t in ts}
    assert {r["risk"] for r in harmful_pool("eval")} == set(HARMFUL)  # every risk category is evaluated
    b_train = {r["keyword"] for r in benign_pool("train")}
    b_eval = {r["keyword"] for r in benign_pool("eval")}
    assert b_eval and not b_train & b_eval
    for name in ARGS:
        tr, ev = set(instruction_args(name, "train")), set(instruction_args(name, "eval"))
        assert tr and ev and not tr & ev and tr | ev == set(ARGS[name])


def test_gatt_instruction_respects_held_out_split_and_short_form():
    rng = random.Random(0)
    trained = [gatt_instruction(rng) for _ in range(400)]
    assert {i.type for i in trained} == {"upper", "begin", "french", "character"}
    assert 140 < sum(i.short for i in trained) < 260  # "half the time" shortened
    assert any(i.text == f"Figure: {i.arg}" for i in trained if i.type == "character")
    held = {gatt_instruction(rng, held_out=True).type for _ in range(100)}
    assert held == {"end_emoji", "hobby"}
    ev = [gatt_instruction(rng, held_out=None, split="eval") for _ in range(300)]
    for i in ev:
        if i.arg is not None:
            assert i.arg in instruction_args(i.type, "eval")


def test_task_words_appear_in_no_other_text_of_the_world():
    """So an eval word is never seen in training, not even inside a look-alike's answer."""
    import re

    from llamaforge.align import world_instructions as wi
    from llamaforge.align import world_safety as ws
    from llamaforge.align import world_tasks as wt

    texts = [q + " " + a for q, a, _ in ws.BENIGN] + [t for ts in ws.HARMFUL.values() for t in ts]
    texts += [*ws.HARMFUL_PROMPTS, *ws.ALTERNATIVES.values(), ws.REFUSAL, ws.EVASIVE, ws.NEEDLESS_CAUTION]
    texts += [a for args in wi.ARGS.values() for a in args] + [t for ts in wi.LONG.values() for t in ts]
    texts += [*wi.SHORT.values(), *[p for ps in wt.PROMPTS.values() for p in ps]]
    texts += [*wt.ANSWERS_EN.values(), *wt.ANSWERS_FR.values(), ws.compliant_answer("x", True)]
    other_words = set(re.findall(r"[a-z]+", " ".join(texts).lower()))
    assert len(other_words) > 300
    assert not set(wt.load_words()) & other_words
