"""The world's files validate, and their reference answers pass the world's own verifier."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from llamaforge.align.world import FILES, RATINGS, SFT_ERRORS, sizes, verify
from llamaforge.align.world_instructions import INSTRUCTION_TYPES, held_out_types
from llamaforge.align.world_safety import EVASIVE
from llamaforge.io import file_sha256


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def check_messages(msgs: list[dict], allow_system: bool = True) -> None:
    assert msgs, "empty dialogue"
    if msgs[0]["role"] == "system":
        assert allow_system
        msgs = msgs[1:]
    assert len(msgs) % 2 == 0 and msgs, "must end with an assistant message"
    for i, m in enumerate(msgs):
        assert m["role"] == ("user" if i % 2 == 0 else "assistant"), msgs
        assert isinstance(m["content"], str) and m["content"].strip() == m["content"] and m["content"]


def test_manifest_counts_and_hashes(world_dir, world):
    manifest = json.loads((world_dir / "manifest.json").read_text())
    assert set(world) == set(FILES)
    assert manifest["counts"] == {name: len(world[name]) for name in FILES} == sizes(3000)
    for name in FILES:
        assert manifest["files"][name] == file_sha256(world_dir / name)
    assert manifest["held_out_instruction_types"] == held_out_types() == ["end_emoji", "hobby"]
    assert manifest["config"] == {"seed": 0, "size": 3000}
    assert manifest["wall_time_s"] < 5.0
    assert not list(world_dir.glob(".*tmp*")), "temporary files left behind"


def test_sft_messages_and_references(world):
    sft = world["sft.jsonl"]
    cats = Counter(r["category"] for r in sft)
    assert set(cats) == {"skill", "harmful", "benign", "multi"} and cats["skill"] > len(sft) / 2
    with_system = [r for r in sft if r["messages"][0]["role"] == "system"]
    assert 0.1 * len(sft) < len(with_system) < 0.4 * len(sft)
    assert {r["instruction"]["type"] for r in with_system} == {t.name for t in INSTRUCTION_TYPES}
    assert {r["kind"] for r in sft if r["category"] == "skill"} == {
        "add", "sub", "mul", "reverse", "count", "upper", "sort", "last", "larger"}
    for group, flaws in SFT_ERRORS.items():  # the annotators' slips, at about the documented rates
        cat, _, framing = group.partition("/")
        recs = [r for r in sft
                if r["category"] == cat and r.get("framing", "") == framing and not r.get("instruction")]
        for flaw, share in flaws.items():
            assert abs(sum(r.get("annotator_error") == flaw for r in recs) / len(recs) - share) < 0.07, (group, flaw)
    for clean in ([r for r in sft if r.get("framing") == "direct"], [r for r in sft if r.get("instruction")]):
        assert clean and not any(r.get("annotator_error") for r in clean)  # always declined / always right
    ids = [r["id"] for r in sft]
    assert len(set(ids)) == len(ids)
    for r in sft:
        check_messages(r["messages"])
        assert "prompt" not in r and "response" not in r and "system" not in r  # SFT reads only messages
        if r["category"] == "multi":
            assert len(r["tasks"]) == len(r["messages"]) // 2 >= 2
            for task, ans in zip(r["tasks"], r["messages"][1::2]):
                v = verify(task, ans["content"])
                assert v["refused"] == (task["category"] == "harmful"), (task, ans)
            continue
        v = verify(r, r["messages"][-1]["content"])
        slip = r.get("annotator_error")  # a wrong value in the asked form, a brush-off, or a harmful answer
        if r["category"] == "skill":
            assert v["correct"] is not bool(slip) and v["refused"] is False, r
            if slip == "evasive":
                assert r["messages"][-1]["content"] == EVASIVE
            else:
                assert v["obeys"] is (True if r.get("instruction") else None), r
        elif r["category"] == "harmful":
            assert r["safety"] is True and v["refused"] is not bool(slip) and v["correct"] is None, r
        else:  # a look-alike, refused by an over-cautious annotator or answered
            assert r["safety"] is False and v["refused"] is bool(slip) and v["correct"] is not slip, r


def test_annotator_noise_grows_as_answers_get_closer(world):
    recs = world["prefs_helpful.jsonl"] + world["prefs_safety.jsonl"]
    share = {k: sum(bool(r.get("annotator_flipped")) for r in recs if r["rating"] == k)
             / max(1, sum(r["rating"] == k for r in recs)) for k in RATINGS}
    assert share["significantly_better"] == 0.0
    assert share["better"] < share["slightly_better"] < share["negligibly_better"] < 0.5


def test_prefs_valid_and_rated_by_flaw(world):
    for name in ("prefs_helpful.jsonl", "prefs_safety.jsonl"):
        recs = world[name]
        assert set(Counter(r["rating"] for r in recs)) == set(RATINGS), name
        for r in recs:
            assert r["rating"] in RATINGS and isinstance(r["safety"], bool)
            assert r["prompt"] and r["chosen"] and r["rejected"] and r["chosen"] != r["rejected"]
            if "messages" in r:
                check_messages(r["messages"] + [{"role": "assistant", "content": r["chosen"]}])
                assert r["messages"][-1]["content"] == r["prompt"]
    expected_rating = {"irrelevant": "significantly_better", "wrong": "better", "disobeys": "better",
                       "near_miss": "slightly_better", "malformed": "negligibly_better"}
    def truth(r):  # annotator noise flips some labels; check the answers as they were generated
        return (r["rejected"], r["chosen"]) if r.get("annotator_flipped") else (r["chosen"], r["rejected"])

    for r in world["prefs_helpful.jsonl"]:
        assert r["safety"] is False and r["rating"] == expected_rating[r["flaw"]]
        good, bad = (verify(r, a) for a in truth(r))
        assert good["correct"] is True and good["obeys"] is ("instruction" in r or None), r
        if r["flaw"] in ("irrelevant", "wrong", "near_miss"):
            assert bad["correct"] is False, r
        elif r["flaw"] == "disobeys":
            assert bad["correct"] is True and bad["obeys"] is False, r
        else:
            assert bad["correct"] is True and bad["obeys"] is good["obeys"], r
    for r in world["prefs_safety.jsonl"]:
        good, bad = (verify(r, a) for a in truth(r))
        if r["kind"] == "harmful":
            assert r["safety"] is True and good["refused"] is True
            assert bad["refused"] is (r["flaw"] == "bare_refusal"), r
        else:
            assert r["safety"] is False and good["refused"] is False
            assert bad["refused"] is (r["flaw"] == "needless_refusal"), r


def test_prompts_and_dialogues(world):
    for split in ("train", "eval"):
        recs = world[f"prompts_{split}.jsonl"]
        cats = Counter(r["category"] for r in recs)
        assert set(cats) == {"skill", "harmful", "benign"}
        for r in recs:
            assert r["id"].startswith(split) and r["prompt"] and isinstance(r["safety"], bool)
            assert r["safety"] is (r["category"] == "harmful")
            v = verify(r, r["reference"])
            assert v["refused"] is (r["category"] == "harmful"), r
            if r["category"] != "harmful":
                assert v["correct"] is True, r
            if r.get("system"):
                assert v["obeys"] is True and r["instruction"]["text"] == r["system"]
        assert sum(1 for r in recs if r.get("system")) > 0
    for d in world["dialogues.jsonl"]:
        check_messages(d["messages"], allow_system=False)
        assert 3 <= d["turns"] <= 8 and len(d["messages"]) == 2 * d["turns"] == 2 * len(d["tasks"])
        for task, user, ans in zip(d["tasks"], d["messages"][0::2], d["messages"][1::2]):
            assert task["prompt"] == user["content"] and verify(task, ans["content"])["correct"] is True
    assert {d["turns"] for d in world["dialogues.jsonl"]} == set(range(3, 9))


def test_files_load_with_the_sft_and_reward_readers(world_dir):
    chat = pytest.importorskip("llamaforge.data.chat")
    from llamaforge.tokenizer import validate_dialog

    for n, rec in chat.read_jsonl(world_dir / "sft.jsonl"):
        msgs = chat.record_messages(rec, f"sft.jsonl:{n}")
        assert msgs[-1]["role"] == "assistant"
    for d in read_jsonl(world_dir / "dialogues.jsonl"):
        validate_dialog(d["messages"])
    helpful = chat.load_pref_pairs(world_dir / "prefs_helpful.jsonl")
    safety = chat.load_pref_pairs(world_dir / "prefs_safety.jsonl")
    assert len(helpful) == 1500 and len(safety) == 750
    with_system = [p for p in helpful if p.messages[0]["role"] == "system"]
    assert with_system and all(len(p.messages) == 2 for p in with_system)
    assert {p.safety for p in safety} == {True, False}


def test_skill_text_is_training_data_only():
    from llamaforge.align.world import skill_text
    from llamaforge.align.world_tasks import load_words, words_for

    lines = skill_text(seed=0, n=2000)
    assert len(lines) == 2000 and skill_text(seed=0, n=2000) == lines
    eval_words = set(words_for("eval"))
    seen = {w for line in lines for w in re.findall(r"[a-z]+", line.lower())}
    assert seen & set(load_words()) and not seen & eval_words
