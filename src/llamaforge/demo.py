"""`llamaforge demo` (what `make demo` runs): the whole path on built-in data, as a list of stages.

corpus (the Python standard library's sources) -> tokenizer -> token shards -> pretrain a tiny
LLaMA for a few minutes on CPU (validation loss falls, plots) -> a generated sample. Each stage
writes OUT/<stage>/ with a manifest and is skipped when that exists, so re-running continues
where it stopped. Later stages (SFT, reward models, RLHF, evaluation) append to `STAGES`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from llamaforge.io import atomic_dir, atomic_write_json, atomic_write_text, read_json, write_manifest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: see llamaforge/train/__init__.py


# The alignment pipeline starts from a better base: at 1000 steps tiny-1m reaches val loss 2.75 (3.13 at
# 400), and after SFT it answered 18% of held-out skill prompts right against 6% (one run each,
# docs/BENCHMARKS.md, Alignment).
FULL_STEPS = 1000
PRETRAIN_S_PER_STEP = 0.25  # the pretrain stage's budget per step on 2 idle cores (plus 30 s)


@dataclass
class Demo:
    out: Path
    steps: int | None = None  # pretraining steps: 400, or FULL_STEPS for the alignment pipeline
    corpus_mb: float = 6.0
    vocab_size: int = 4096
    threads: int = 0
    full: bool = False  # the whole Llama 2 pipeline: add the world's skill text, then the alignment stages
    skill_lines: int = 30000  # lines of the world's skill text in the corpus (with --full)
    instructed: float = 0.0  # share of them that open with a system instruction
    results: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.steps is None:
            self.steps = FULL_STEPS if self.full else 400

    def dir(self, stage: str) -> Path:
        return self.out / stage


@dataclass
class Stage:
    name: str
    run: Callable[[Demo], dict[str, Any]]
    about: str
    budget_s: float = 0.0  # planned seconds on 2 idle CPU cores (the progress display's ETA)


def stage_corpus(d: Demo) -> dict[str, Any]:
    from llamaforge.data.corpus import stdlib_dir, stdlib_files

    files = stdlib_files(max_bytes=int(d.corpus_mb * 1e6))
    n = 0
    with atomic_dir(d.dir("corpus")) as tmp:
        with open(tmp / "stdlib.jsonl", "w", encoding="utf-8") as f:
            for p in files:
                try:
                    text = p.read_text(encoding="utf-8")
                except (UnicodeDecodeError, OSError):
                    continue
                f.write(json.dumps({"text": text, "path": str(p.relative_to(stdlib_dir()))}) + "\n")
                n += 1
            if d.full:  # the world's skill questions with answers, so the base model knows the task formats
                from llamaforge.align.world import skill_text

                lines = skill_text(0, d.skill_lines, d.instructed)
                for i in range(0, len(lines), 50):
                    f.write(json.dumps({"text": "\n".join(lines[i:i + 50]), "path": "world-skills"}) + "\n")
                    n += 1
        write_manifest(tmp, "demo corpus", {"corpus_mb": d.corpus_mb, "full": d.full}, [], docs=n)
    return {"docs": n}


def stage_tokenizer(d: Demo) -> dict[str, Any]:
    from llamaforge.tokenizer import Tokenizer, train_tokenizer

    with atomic_dir(d.dir("tokenizer")) as tmp:
        train_tokenizer([d.dir("corpus") / "stdlib.jsonl"], d.vocab_size, tmp)
        write_manifest(tmp, "tokenizer train", {"vocab_size": d.vocab_size}, [d.dir("corpus") / "stdlib.jsonl"])
    return {"n_words": Tokenizer(d.dir("tokenizer")).n_words}


def stage_tokenize(d: Demo) -> dict[str, Any]:
    from llamaforge.data.tokenize import tokenize_files

    stats = tokenize_files([d.dir("corpus") / "stdlib.jsonl"], d.dir("tokenizer") / "tokenizer.model",
                           d.dir("shards"), workers=2, val_fraction=0.02)
    return {k: stats[k] for k in ("train_tokens", "val_tokens", "dtype")}


def pretrain_config(d: Demo):
    from llamaforge.config import load_config
    from llamaforge.train.config import PretrainConfig

    return load_config(PretrainConfig, None, [
        "--model.preset=tiny-1m", f"--data.path={d.dir('shards')}", f"--train.steps={d.steps}",
        "--train.batch_size=16", "--train.seq_len=128", f"--train.threads={d.threads}",
        "--optim.lr=3e-3", f"--optim.warmup_steps={max(1, d.steps // 20)}",
        f"--checkpoint.every={max(1, d.steps // 4)}", "--checkpoint.keep=1",
        "--logging.every=20", f"--logging.eval_every={max(1, d.steps // 8)}", "--logging.eval_windows=64",
    ])


def stage_pretrain(d: Demo) -> dict[str, Any]:
    from llamaforge.train.metrics import read_metrics
    from llamaforge.train.pretrain import run

    summary = run(pretrain_config(d), d.dir("pretrain"))
    vals = [r["val_loss"] for r in read_metrics(d.dir("pretrain") / "metrics.jsonl") if "val_loss" in r]
    return {"steps": summary["steps"], "val_loss_first": vals[0] if vals else None,
            "val_loss_last": vals[-1] if vals else None, "plot": str(d.dir("pretrain") / "plots" / "loss.png")}


def sample_text(model, tok, prompt: str, max_new_tokens: int = 80) -> str:
    """A completion from the KV-cache generator (llamaforge.generate), or a plain greedy loop without it."""
    try:
        from llamaforge.generate import generate
    except ImportError:
        generate = None
    if generate is not None:
        return generate(model, tok, [prompt], max_new_tokens=max_new_tokens, temperature=0.7, top_p=0.9, seed=0)[0]
    import torch

    ids = tok.encode(prompt)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            nxt = int(model(torch.tensor([ids[-model.args.max_seq_len:]]))[0, -1].argmax())
            if nxt == tok.eos_id:
                break
            ids.append(nxt)
    return tok.decode(ids[len(tok.encode(prompt)):])


def stage_sample(d: Demo) -> dict[str, Any]:
    from llamaforge.checkpoint import find_tokenizer, load_model

    final = d.dir("pretrain") / "final"
    model, tok = load_model(final).eval(), find_tokenizer(final)
    prompts = ["import os\n\n\ndef ", "class Parser:\n    def __init__(self"]
    samples = [{"prompt": p, "completion": sample_text(model, tok, p)} for p in prompts]
    with atomic_dir(d.dir("sample")) as tmp:
        atomic_write_text(tmp / "samples.txt", "\n\n".join(f"--- prompt ---\n{s['prompt']}\n--- completion ---\n"
                                                            f"{s['completion']}" for s in samples) + "\n")
        write_manifest(tmp, "demo sample", {"prompts": prompts}, [final], samples=samples)
    return {"samples": samples}


STAGES: list[Stage] = [
    Stage("corpus", stage_corpus, "the Python standard library's sources as JSONL documents", 10),
    Stage("tokenizer", stage_tokenizer, "SentencePiece BPE with LLaMA's settings", 10),
    Stage("shards", stage_tokenize, "token shards with a held-out validation split", 10),
    Stage("pretrain", stage_pretrain, "pretrain a tiny LLaMA (resumable)"),  # budget: by steps, in stages()
    Stage("sample", stage_sample, "generate from the pretrained model", 5),
]


def stages(d: Demo) -> list[Stage]:
    plan = [replace(st, budget_s=round(30 + PRETRAIN_S_PER_STEP * d.steps)) if st.name == "pretrain" else st
            for st in STAGES]
    if not d.full:
        return plan
    from llamaforge.align.pipeline import demo_stages

    return plan + demo_stages(Stage)


def clock(seconds: float) -> str:
    return f"{int(seconds) // 60}:{int(seconds) % 60:02d}"


def read_timings(out: Path) -> dict[str, dict[str, float]]:
    return read_json(out / "timings.json", {})


def run_demo(d: Demo, only: list[str] | None = None) -> dict[str, Any]:
    """Run the stages in order; the progress line names the stage, its budget and the ETA of the rest
    (the remaining budget scaled by how this machine has kept to the budget so far)."""
    t0 = time.time()
    plan = [st for st in stages(d) if not only or st.name in only]
    total = sum(st.budget_s for st in plan)
    print(f"llamaforge demo: {len(plan)} stages, budget {clock(total)} on 2 idle CPU cores "
          f"({', '.join(f'{st.name} {st.budget_s:.0f}s' for st in plan)})", flush=True)
    d.out.mkdir(parents=True, exist_ok=True)
    timings = read_timings(d.out)
    spent = planned = 0.0
    for i, st in enumerate(plan, 1):
        done = d.dir(st.name) / "manifest.json"
        if done.exists() and st.name != "pretrain":
            print(f"[{i}/{len(plan)} {st.name}] done already ({done})")
            continue
        pace = min(3.0, max(0.5, spent / planned)) if planned >= 60 else 1.0  # short stages tell little
        left = sum(s.budget_s for s in plan[i - 1:]) * pace
        print(f"[{i}/{len(plan)} {st.name}] {st.about} | budget {st.budget_s:.0f}s | elapsed "
              f"{clock(time.time() - t0)} | ETA {clock(left)}", flush=True)
        t = time.time()
        d.results[st.name] = st.run(d)
        dt = time.time() - t
        spent, planned = spent + dt, planned + st.budget_s
        timings[st.name] = {"seconds": dt, "budget_s": st.budget_s}
        atomic_write_json(d.out / "timings.json", timings)
        over = f"; over its budget of {st.budget_s:.0f}s (a busy or slower machine?)" \
            if st.budget_s and dt > 1.5 * st.budget_s + 5 else ""
        print(f"[{st.name}] {json.dumps(d.results[st.name], default=str)[:400]} ({dt:.0f}s{over})", flush=True)
    write_manifest(d.out, "demo", {"steps": d.steps, "corpus_mb": d.corpus_mb, "vocab_size": d.vocab_size}, [],
                   time.time() - t0, stages=d.results, timings=timings, budget_s=total)
    return d.results


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="llamaforge demo", description=__doc__.split("\n\n")[0],
                                epilog="example: llamaforge demo --out runs/demo   (about 5 minutes on 2 CPU cores)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--steps", type=int, default=None,
                   help=f"pretraining steps (default 400, or {FULL_STEPS} with --full)")
    p.add_argument("--corpus-mb", type=float, default=6.0, help="megabytes of stdlib source to use")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--only", nargs="*", help=f"run only these stages: {', '.join(s.name for s in STAGES)}")
    p.add_argument("--full", action="store_true",
                   help="the whole Llama 2 pipeline: pretraining on stdlib + the world's skill text, then SFT, "
                        "GAtt, reward models, rejection sampling, PPO and a report table")
    a = p.parse_args(argv)
    d = Demo(Path(a.out), steps=a.steps, corpus_mb=a.corpus_mb, threads=a.threads, full=a.full)
    res = run_demo(d, a.only)
    pre = res.get("pretrain") or {}
    if pre.get("val_loss_first") is not None:
        print(f"validation loss {pre['val_loss_first']:.3f} -> {pre['val_loss_last']:.3f}; plot: {pre['plot']}")
    for s in (res.get("sample") or {}).get("samples", []):
        print(f"--- sample ---\n{s['prompt']}{s['completion']}")
    return 0
