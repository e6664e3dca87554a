"""Ghost Attention data (Llama 2 3.3): `llamaforge gatt synthesize`.

For each multi-turn dialogue: pick an instruction (act as a character, speak a language, a hobby,
a style rule; half the time in a short form such as "Figure: Napoleon"), concatenate it to every
user message, sample the assistant answers with the model, then write training dialogues where
the instruction stays only at the start (the system slot of the first [INST]) and only the last
assistant turn of a dialogue cut at a random turn is trained on (earlier answers `"train": false`).
The output is SFT data that `llamaforge sft` trains on as it is.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from typing import Any

from llamaforge.data.chat import read_jsonl
from llamaforge.errors import UserError
from llamaforge.io import atomic_file
from llamaforge.tokenizer import validate_dialog

EPILOG = """examples:
  llamaforge gatt synthesize --model runs/sft/final --dialogues world/dialogues.jsonl --out gatt.jsonl
  llamaforge gatt synthesize --model runs/sft/final --dialogues chats.jsonl --instructions mine.jsonl --out gatt.jsonl
  llamaforge sft --config configs/sft/tiny.toml --init runs/sft/final --data.path gatt.jsonl --out runs/gatt
--instructions: JSONL of {"text": "Always answer as Napoleon."} (optionally "type"/"arg" for a world checker)."""


def with_instruction(user: str, instruction: str) -> str:
    return f"{instruction}\n{user}"


def build_example(messages: list[dict], instruction: str, cut: int) -> list[dict]:
    """The training dialogue cut after assistant turn `cut` (1-based): instruction as the system
    message, only the last answer trained (earlier answers `"train": false`)."""
    body = [m for m in messages if m["role"] != "system"]
    kept = body[: 2 * cut]
    out: list[dict] = [{"role": "system", "content": instruction}]
    for i, m in enumerate(kept):
        msg = {"role": m["role"], "content": m["content"]}
        if m["role"] == "assistant" and i < len(kept) - 1:
            msg["train"] = False
        out.append(msg)
    return out


def fit_context(tokenizer, messages: list[dict], budget: int) -> list[dict]:
    """Drop the oldest user/assistant turns (never the system message) until the prompt fits."""
    system = [m for m in messages if m["role"] == "system"]
    body = [m for m in messages if m["role"] != "system"]
    while len(body) > 1 and len(tokenizer.encode_chat_prompt(system + body)) > budget:
        body = body[2:]
    return system + body


def _instructions(path: str | None, rng: random.Random, n: int) -> list[tuple[str, Any]]:
    """(text, checkable Instruction or None) for n dialogues."""
    if path:
        pool = []
        for line, rec in read_jsonl(path):
            if not isinstance(rec.get("text"), str) or not rec["text"].strip():
                raise UserError(f"{path}:{line}: field 'text' must be a non-empty string")
            ins = None
            if rec.get("type"):
                from llamaforge.align.world import Instruction

                ins = Instruction(rec["type"], rec.get("arg"), rec["text"], bool(rec.get("short", False)))
            pool.append((rec["text"], ins))
        if not pool:
            raise UserError(f"{path}: no instructions")
        return [rng.choice(pool) for _ in range(n)]
    from llamaforge.align.world import gatt_instruction

    out = []
    for _ in range(n):
        ins = gatt_instruction(rng, held_out=False, split="train")
        out.append((ins.text, ins))
    return out


def synthesize(model, tokenizer, dialogues: list[dict], *, instructions: list[tuple[str, Any]], seed: int = 0,
               temperature: float = 0.7, top_p: float = 0.9, max_new_tokens: int = 64, tries: int = 2,
               fallback: bool = True) -> tuple[list[dict], dict[str, int]]:
    """Sample every dialogue's answers with the instruction on every user turn, batched by turn.

    A checkable instruction (world types) is verified on each sampled answer; a failing answer is
    resampled up to `tries` times, then replaced by the world's canonical obeying answer when the
    dialogue carries world `tasks` (fallback) or the dialogue is cut before that turn.
    """
    from llamaforge.align.world import check_instruction, obey
    from llamaforge.generate import generate

    rng = random.Random(seed)
    users = [[m["content"] for m in d["messages"] if m["role"] == "user"] for d in dialogues]
    convs: list[list[dict]] = [[] for _ in dialogues]  # the sampled dialogue, instruction on every user turn
    alive = [True] * len(dialogues)
    stats = {"sampled": 0, "resampled": 0, "fallback": 0, "cut_short": 0}
    for turn in range(max(map(len, users))):
        active = [i for i in range(len(dialogues)) if alive[i] and turn < len(users[i])]
        if not active:
            break
        for i in active:
            convs[i].append({"role": "user", "content": with_instruction(users[i][turn], instructions[i][0])})
        answers: dict[int, str] = {}
        todo = active
        for attempt in range(max(1, tries)):
            budget = model.args.max_seq_len - max_new_tokens
            outs = generate(model, tokenizer, [fit_context(tokenizer, convs[i], budget) for i in todo],
                            max_new_tokens=max_new_tokens,
                            temperature=temperature, top_p=top_p, seed=seed * 7919 + turn * 131 + attempt)
            stats["sampled" if attempt == 0 else "resampled"] += len(todo)
            nxt = []
            for i, a in zip(todo, outs):
                ins = instructions[i][1]
                if a.strip() and (ins is None or check_instruction(ins, a.strip())):
                    answers[i] = a.strip()
                else:
                    nxt.append(i)
            todo = nxt
            if not todo:
                break
        for i in todo:
            tasks = dialogues[i].get("tasks")
            if fallback and tasks and instructions[i][1] is not None:
                t = tasks[turn]
                answers[i] = obey(instructions[i][1], t["kind"], t["args"])
                stats["fallback"] += 1
            else:
                alive[i] = False
                convs[i].pop()
                stats["cut_short"] += 1
        for i in active:
            if i in answers:
                convs[i].append({"role": "assistant", "content": answers[i]})
    examples = []
    for i, conv in enumerate(convs):
        n_turns = len(conv) // 2
        if n_turns == 0:
            continue
        clean = []
        for m in conv[: 2 * n_turns]:
            if m["role"] == "user":
                clean.append({"role": "user", "content": m["content"].split("\n", 1)[1]})
            else:
                clean.append(m)
        cut = rng.randint(1, n_turns)
        ex = {"messages": build_example(clean, instructions[i][0], cut), "gatt": True}
        ins = instructions[i][1]
        if ins is not None:
            ex["instruction"] = ins.to_dict()
        examples.append(ex)
    return examples, stats


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="llamaforge gatt synthesize", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Build Ghost Attention training dialogues (SFT data) by sampling "
                                            "answers with the instruction on every user turn.")
    p.add_argument("--model", required=True, help="checkpoint that samples the answers (with tokenizer.model)")
    p.add_argument("--dialogues", required=True, help="JSONL of {'messages': [...]} multi-turn dialogues")
    p.add_argument("--out", required=True, help="output JSONL (SFT format)")
    p.add_argument("--instructions", help="JSONL of {'text': ...}; default: the world's trained instruction types")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--tries", type=int, default=2, help="samples per answer before the fallback")
    p.add_argument("--no-fallback", action="store_true", help="cut the dialogue instead of using a canonical answer")
    p.add_argument("--limit", type=int, default=0, help="use only the first N dialogues")
    a = p.parse_args(argv)
    from llamaforge.checkpoint import find_tokenizer, load_model

    t0 = time.time()
    dialogues = []
    for line, rec in read_jsonl(a.dialogues):
        if "messages" not in rec:
            raise UserError(f"{a.dialogues}:{line}: a dialogue needs 'messages'")
        validate_dialog(rec["messages"], f"{a.dialogues}:{line}")
        dialogues.append(rec)
    if a.limit:
        dialogues = dialogues[: a.limit]
    if not dialogues:
        raise UserError(f"{a.dialogues}: no dialogues")
    tok = find_tokenizer(a.model)
    if tok is None:
        raise UserError(f"{a.model} has no tokenizer.model")
    model = load_model(a.model)
    ins = _instructions(a.instructions, random.Random(a.seed), len(dialogues))
    examples, stats = synthesize(model, tok, dialogues, instructions=ins, seed=a.seed, temperature=a.temperature,
                                 max_new_tokens=a.max_new_tokens, tries=a.tries, fallback=not a.no_fallback)
    with atomic_file(a.out) as f:
        for ex in examples:
            f.write(json.dumps(ex, ensure_ascii=False) + "\n")
    print(f"wrote {a.out}: {len(examples)} GAtt dialogues from {len(dialogues)} "
          f"({stats['sampled']} answers sampled, {stats['resampled']} resampled, {stats['fallback']} canonical, "
          f"{stats['cut_short']} cut short) in {time.time() - t0:.1f}s")
    return 0
