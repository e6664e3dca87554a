"""`llamaforge reward train | score | sample-pairs | import`."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from llamaforge.config import load_config, parse_overrides
from llamaforge.errors import UserError

TRAIN_EPILOG = """examples:
  llamaforge reward train --config configs/reward/tiny.toml --init runs/sft/final \\
      --data.path world/prefs_helpful.jsonl --kind helpfulness --out runs/rm-helpful
  llamaforge reward train --config configs/reward/tiny.toml --init runs/sft/final \\
      --data.path world/prefs_safety.jsonl --kind safety --out runs/rm-safety --reward.margin=large
Writes OUT/final (the reward model), OUT/eval.json (accuracy overall and per rating) and plots."""


def _fmt_acc(ev: dict) -> str:
    per = " ".join(f"{r.split('_')[0]} {v:.1%}" for r, v in ev["accuracy_by_rating"].items() if v is not None)
    return f"accuracy {ev['accuracy']:.1%} ({per}), mean margin {ev['mean_score_margin']:.3f}"


def train_main(argv: list[str]) -> int:
    from llamaforge.align.reward_train import RewardConfig, run

    p = argparse.ArgumentParser(prog="llamaforge reward train", epilog=TRAIN_EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Train a helpfulness or safety reward model (margin ranking loss).")
    p.add_argument("--config", help="TOML file (configs/reward/*.toml)")
    p.add_argument("--init", help="chat checkpoint to start from (same as --reward.init)")
    p.add_argument("--kind", choices=["helpfulness", "safety"], help="same as --reward.kind")
    p.add_argument("--out", required=True)
    a, rest = p.parse_known_args(argv)
    over = parse_overrides(rest)
    if a.init:
        over["reward.init"] = a.init
    if a.kind:
        over["reward.kind"] = a.kind
    cfg = load_config(RewardConfig, a.config, over)
    t0 = time.time()
    summary = run(cfg, a.out)
    if int(os.environ.get("RANK", "0")) == 0:
        ev = summary.get("eval")
        print(f"{a.out}: {summary['steps']} steps, {summary['stop_reason']}"
              + (f", {_fmt_acc(ev)}" if ev else "") + f" ({time.time() - t0:.0f}s)")
    return 0


def score_main(argv: list[str]) -> int:
    from llamaforge.align.reward import load_reward_model
    from llamaforge.align.reward_tools import score_file

    p = argparse.ArgumentParser(prog="llamaforge reward score",
                                description="Add a `score` field to records with prompt (or messages) and answer.",
                                epilog="example: llamaforge reward score --model runs/rm-helpful/final "
                                       "--data.path answers.jsonl --out scored.jsonl")
    p.add_argument("--model", required=True, help="reward model checkpoint")
    p.add_argument("--data.path", dest="data", required=True, help="JSONL with prompt|messages and answer")
    p.add_argument("--out", required=True)
    p.add_argument("--batch-size", type=int, default=16)
    a = p.parse_args(argv)
    t0 = time.time()
    n = score_file(load_reward_model(a.model), a.data, a.out, a.batch_size)
    print(f"scored {n} records -> {a.out} ({time.time() - t0:.1f}s)")
    return 0


def pairs_main(argv: list[str]) -> int:
    from llamaforge.align.reward_tools import annotation_page, record_prompt, sample_pairs, write_jsonl
    from llamaforge.checkpoint import find_tokenizer, load_model
    from llamaforge.data.chat import read_jsonl
    from llamaforge.io import atomic_write_text

    p = argparse.ArgumentParser(prog="llamaforge reward sample-pairs",
                                description="Two answers per prompt (different checkpoints and/or temperatures) "
                                            "as annotation tasks: a JSONL file and a self-contained HTML page.",
                                epilog="example: llamaforge reward sample-pairs --models runs/sft/final,runs/rs/final "
                                       "--prompts world/prompts_train.jsonl --temperatures 0.7,1.0 --out tasks.jsonl"
                                       "\n(open tasks.html in a browser, rate, download, then `reward import`)")
    p.add_argument("--models", required=True, help="one or two checkpoints, comma-separated")
    p.add_argument("--prompts", required=True, help="JSONL with prompt (+system) or messages")
    p.add_argument("--temperatures", default="0.7,1.0")
    p.add_argument("--out", required=True, help="tasks JSONL; the HTML page is written beside it (.html)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    names = [m for m in a.models.split(",") if m]
    if not 1 <= len(names) <= 2:
        raise UserError("--models takes one or two checkpoints")
    try:
        temps = [float(t) for t in a.temperatures.split(",") if t]
    except ValueError:
        raise UserError(f"--temperatures {a.temperatures!r}: comma-separated numbers expected") from None
    models = []
    for n in names:
        tok = find_tokenizer(n)
        if tok is None:
            raise UserError(f"{n} has no tokenizer.model")
        models.append((n, load_model(n), tok))
    prompts = []
    for line, rec in read_jsonl(a.prompts):
        rec = dict(rec)
        rec["_prompt"] = record_prompt(rec, f"{a.prompts}:{line}")
        prompts.append(rec)
    if a.limit:
        prompts = prompts[: a.limit]
    tasks = sample_pairs(models, prompts, temps, a.seed, a.max_new_tokens)
    write_jsonl(a.out, tasks)
    page = Path(a.out).with_suffix(".html")
    atomic_write_text(page, annotation_page(tasks))
    print(f"wrote {len(tasks)} tasks to {a.out} and the annotation page {page}")
    return 0


def import_main(argv: list[str]) -> int:
    from llamaforge.align.reward_tools import import_hh, import_rated, import_shp, write_jsonl
    from llamaforge.data.chat import load_pref_pairs

    p = argparse.ArgumentParser(prog="llamaforge reward import",
                                description="Convert rated annotation tasks (default), Anthropic HH-RLHF or "
                                            "Stanford SHP records into the preference training format.",
                                epilog="examples:\n  llamaforge reward import --in rated.jsonl --out prefs.jsonl\n"
                                       "  llamaforge reward import --format hh --in hh-train.jsonl --out hh.jsonl\n"
                                       "  llamaforge reward import --format shp --in shp-train.jsonl --out shp.jsonl",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--format", choices=["tasks", "hh", "shp"], default="tasks")
    p.add_argument("--in", dest="inp", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    skipped = 0
    if a.format == "tasks":
        pairs, skipped = import_rated(a.inp)
    elif a.format == "hh":
        pairs = list(import_hh(a.inp))
    else:
        pairs = list(import_shp(a.inp))
    if not pairs:
        raise UserError(f"{a.inp}: no rated pairs to import")
    write_jsonl(a.out, pairs)
    load_pref_pairs(a.out)  # the output must validate as training data
    print(f"imported {len(pairs)} pairs -> {a.out}" + (f" ({skipped} unrated tasks skipped)" if skipped else ""))
    return 0
