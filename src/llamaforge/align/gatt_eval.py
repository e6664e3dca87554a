"""`llamaforge eval gatt`: does the model keep a system instruction over many turns? (Llama 2 Table 30)

Conversations open with a checkable system instruction; the user then asks world skill questions
turn after turn, and the model's own answers stay in the context. At each turn 1..N we record the
share of answers that still obey the instruction, separately for instruction types used in GAtt
training and types held out from it (the paper's zero-shot claim).
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import torch

from llamaforge.align.gatt import fit_context
from llamaforge.errors import UserError
from llamaforge.io import atomic_write_json, atomic_write_text, write_manifest

EPILOG = """examples:
  llamaforge eval gatt --model runs/gatt/final --out reports/gatt
  llamaforge eval gatt --model runs/sft/final --turns 20 --conversations 24 --out reports/gatt-before"""


@torch.no_grad()
def run_gatt_eval(model, tokenizer, *, turns: int = 20, conversations: int = 16, seed: int = 0,
                  max_new_tokens: int = 40) -> dict[str, Any]:
    from llamaforge.align.world import check_instruction, gatt_instruction, sample_dialogue
    from llamaforge.generate import generate

    rng = random.Random(seed)
    groups: dict[str, list[dict[str, Any]]] = {"trained": [], "held_out": []}
    for group, held in (("trained", False), ("held_out", True)):
        for _ in range(conversations):
            ins = gatt_instruction(rng, held_out=held, split="eval")
            d = sample_dialogue(rng, turns, split="eval")
            users = [m["content"] for m in d["messages"] if m["role"] == "user"]
            groups[group].append({"instruction": ins, "users": users,
                                  "messages": [{"role": "system", "content": ins.text}], "obeyed": []})
    convs = groups["trained"] + groups["held_out"]
    budget = model.args.max_seq_len - max_new_tokens
    model.eval()
    for t in range(turns):
        prompts = []
        for c in convs:
            c["messages"].append({"role": "user", "content": c["users"][t]})
            c["messages"] = fit_context(tokenizer, c["messages"], budget)
            prompts.append(c["messages"])
        answers = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, temperature=0.0, seed=seed)
        for c, a in zip(convs, answers):
            a = a.strip()
            c["obeyed"].append(bool(a) and check_instruction(c["instruction"], a))
            c["messages"].append({"role": "assistant", "content": a or "..."})
    table = {g: [sum(c["obeyed"][t] for c in cs) / len(cs) for t in range(turns)] for g, cs in groups.items()}
    by_type: dict[str, list[float]] = {}
    for c in convs:
        by_type.setdefault(c["instruction"].type, []).append(sum(c["obeyed"]) / turns)
    examples = [{"instruction": c["instruction"].text, "last_answer": c["messages"][-1]["content"]}
                for c in convs[:: max(1, len(convs) // 6)]]
    return {"turns": turns, "conversations_per_group": conversations, "retention": table,
            "mean_by_type": {k: sum(v) / len(v) for k, v in sorted(by_type.items())}, "examples": examples}


def to_markdown(res: dict[str, Any]) -> str:
    lines = ["| turn | " + " | ".join(res["retention"]) + " |", "|---|" + "---|" * len(res["retention"])]
    for t in range(res["turns"]):
        lines.append(f"| {t + 1} | " + " | ".join(f"{v[t]:.0%}" for v in res["retention"].values()) + " |")
    return "\n".join(lines) + "\n"


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = list(range(1, res["turns"] + 1))
    for name, ys in res["retention"].items():
        ax.plot(xs, [100 * y for y in ys], marker="o", label=f"{name} instruction types")
    ax.set_xlabel("turn")
    ax.set_ylabel("answers obeying the system instruction (%)")
    ax.set_ylim(-5, 105)
    ax.set_title("Instruction retention over turns (Llama 2 Table 30)")
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="llamaforge eval gatt", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Share of answers that still obey a system instruction at each turn.")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True, help="report directory (gatt.json, gatt.md, gatt.png)")
    p.add_argument("--turns", type=int, default=20)
    p.add_argument("--conversations", type=int, default=16, help="per group (trained / held-out types)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=40)
    a = p.parse_args(argv)
    from llamaforge.checkpoint import find_tokenizer, load_model

    if a.turns < 1 or a.conversations < 1:
        raise UserError("--turns and --conversations must be >= 1")
    t0 = time.time()
    tok = find_tokenizer(a.model)
    if tok is None:
        raise UserError(f"{a.model} has no tokenizer.model")
    res = run_gatt_eval(load_model(a.model), tok, turns=a.turns, conversations=a.conversations, seed=a.seed,
                        max_new_tokens=a.max_new_tokens)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "gatt.json", res)
    atomic_write_text(out / "gatt.md", to_markdown(res))
    plot(res, out / "gatt.png")
    write_manifest(out, "eval gatt", vars(a), [a.model], time.time() - t0)
    print(to_markdown(res))
    print(json.dumps(res["mean_by_type"]))
    return 0
