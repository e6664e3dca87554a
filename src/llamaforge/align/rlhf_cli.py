"""`llamaforge rlhf rs` (iterative rejection sampling) and `llamaforge rlhf ppo`."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import tomllib

from llamaforge.config import from_dict, load_config, parse_overrides
from llamaforge.errors import UserError
from llamaforge.io import atomic_write_json, atomic_write_text, write_manifest

RS_EPILOG = """examples:
  llamaforge rlhf rs --policy runs/sft/final --rm-helpful runs/rm-h/final --rm-safety runs/rm-s/final \\
      --prompts world/prompts_train.jsonl --eval-prompts world/prompts_eval.jsonl --out runs/rs --k 8 --iterations 3
  llamaforge rlhf rs ... --teacher runs/big/final            # distillation: the teacher samples
  llamaforge rlhf rs ... --reward-fn llamaforge.align.world:world_reward=1.0 --sweep-temperatures 0.7,1.0,1.3
  llamaforge rlhf rs ... --config rs.toml   # [[iteration]] rm_helpful = "...", rm_safety = "..." per iteration
Fine-tuning uses the SFT recipe: --sft-config FILE and --sft.section.key=value overrides."""

PPO_EPILOG = """examples:
  llamaforge rlhf ppo --config configs/rlhf/tiny.toml --policy runs/rs/final --ref runs/sft/final \\
      --rm-helpful runs/rm-h/final --rm-safety runs/rm-s/final --prompts world/prompts_train.jsonl --out runs/ppo
  llamaforge rlhf ppo --config configs/rlhf/llama2-7b.toml ...   # the paper's settings
Running the same command again resumes from the newest complete checkpoint."""


def plot_rs(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    axes[0].plot([r["iteration"] for r in rows], [r["eval_reward"] for r in rows], marker="o")
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("held-out reward")
    axes[0].set_title("held-out reward by iteration")
    for r in rows[1:]:
        c = r["best_of_k_curve"]
        axes[1].plot(range(1, len(c) + 1), c, marker=".", label=f"iteration {r['iteration']}")
    axes[1].set_xlabel("samples per prompt (K)")
    axes[1].set_ylabel("mean best-of-K reward")
    axes[1].set_title("best of K (Llama 2 Figure 7)")
    axes[1].legend()
    for r in rows[1:]:
        if r.get("temperature_sweep"):
            ts = sorted(r["temperature_sweep"], key=float)
            axes[2].plot([float(t) for t in ts], [r["temperature_sweep"][t] for t in ts], marker="o",
                         label=f"iteration {r['iteration']}")
    axes[2].set_xlabel("temperature")
    axes[2].set_ylabel("mean best-of-K reward")
    axes[2].set_title("temperature sweep")
    if any(r.get("temperature_sweep") for r in rows[1:]):
        axes[2].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def write_rs_outputs(out: Path, rows: list[dict]) -> None:
    """OUT/rs.json, OUT/report.md (the table by iteration) and OUT/plots/rs.png of a rejection-sampling run."""
    atomic_write_json(out / "rs.json", rows)
    atomic_write_text(out / "report.md", "# Rejection sampling\n\n" + rs_report(rows))
    plot_rs(rows, out / "plots" / "rs.png")


def rs_report(rows: list[dict]) -> str:
    cols = ["iteration", "eval_reward", "mean_best_of_k", "mean_sample", "skill_accuracy", "unsafe_compliance",
            "false_refusal", "chosen"]
    lines = ["| " + " | ".join(cols) + " | best temperature |", "|" + "---|" * (len(cols) + 1)]
    for r in rows:
        sweep = r.get("temperature_sweep") or {}
        best_t = max(sweep, key=sweep.get) if sweep else "-"
        cells = [f"{r[c]:.3f}" if isinstance(r.get(c), float) else str(r.get(c, "-")) for c in cols]
        lines.append("| " + " | ".join(cells) + f" | {best_t} |")
    return "\n".join(lines) + "\n"


def rs_main(argv: list[str]) -> int:
    from llamaforge.align.ppo_train import build_reward, split_prompts
    from llamaforge.align.rejection_sampling import RSConfig, iteration_dirs, run_rs
    from llamaforge.align.sft import SFTConfig
    from llamaforge.checkpoint import find_tokenizer

    p = argparse.ArgumentParser(prog="llamaforge rlhf rs", epilog=RS_EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Iterative rejection sampling: best of K by the combined reward, "
                                            "then fine-tune on the best (Llama 2 RLHF-V1..V4).")
    p.add_argument("--policy", required=True)
    p.add_argument("--rm-helpful")
    p.add_argument("--rm-safety")
    p.add_argument("--reward-fn", action="append", default=[], help="module:function[=weight], repeatable")
    p.add_argument("--prompts", required=True)
    p.add_argument("--eval-prompts")
    p.add_argument("--eval-count", type=int, default=64)
    p.add_argument("--out", required=True)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--teacher")
    p.add_argument("--sweep-temperatures", default="", help="e.g. 0.7,1.0,1.3")
    p.add_argument("--finetune-from", choices=["previous", "initial"], default="previous")
    p.add_argument("--min-score", type=float, default=None,
                   help="fine-tune only on best answers scoring at least this (default: keep every prompt's best)")
    p.add_argument("--min-user-score", type=float, default=None,
                   help="choose only answers whose --reward-fn verifiers score at least this (e.g. 0 with the "
                        "world verifier: right skill answers only); prompts with none are skipped")
    p.add_argument("--safety-threshold", type=float, default=0.15)
    p.add_argument("--limit", type=int, default=0, help="use only the first N training prompts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", help="TOML with [[iteration]] tables (rm_helpful, rm_safety) per iteration")
    p.add_argument("--sft-config", help="SFT TOML (configs/sft/*.toml) for the fine-tuning step")
    a, rest = p.parse_known_args(argv)
    over = parse_overrides(rest)
    bad = [k for k in over if not k.startswith("sft.")]
    if bad:
        raise UserError(f"unknown option --{bad[0]}; SFT settings are --sft.section.key=value")
    sft_cfg = load_config(SFTConfig, a.sft_config, {k[4:]: v for k, v in over.items()})
    per_iter: list[dict[str, Any]] = []
    if a.config:
        with open(a.config, "rb") as f:
            try:
                per_iter = tomllib.load(f).get("iteration", [])
            except tomllib.TOMLDecodeError as e:
                raise UserError(f"{a.config}: invalid TOML: {e}") from None
    if a.k < 1 or a.iterations < 1:
        raise UserError("--k and --iterations must be >= 1")
    tok = find_tokenizer(a.policy)
    if tok is None:
        raise UserError(f"{a.policy} has no tokenizer.model")
    train, held = split_prompts(a.prompts, a.eval_prompts, a.eval_count, a.seed)
    if a.limit:
        train = train[: a.limit]
    cache: dict[tuple, Any] = {}

    def reward_for(it: int):
        spec = per_iter[min(it, len(per_iter)) - 1] if per_iter else {}
        key = (spec.get("rm_helpful", a.rm_helpful), spec.get("rm_safety", a.rm_safety))
        if key not in cache:
            cache.clear()
            cache[key] = build_reward(key[0], key[1], a.reward_fn, a.safety_threshold)
        return cache[key]

    sweep = [float(t) for t in a.sweep_temperatures.split(",") if t]
    cfg = from_dict(RSConfig, {"k": a.k, "temperature": a.temperature, "iterations": a.iterations,
                               "max_new_tokens": a.max_new_tokens, "seed": a.seed, "sweep_temperatures": sweep,
                               "finetune_from": a.finetune_from, "min_score": a.min_score,
                               "min_user_score": a.min_user_score})
    t0 = time.time()
    out = Path(a.out)
    state = run_rs(policy_path=a.policy, reward_for=reward_for, tok=tok, train_records=train, eval_records=held,
                   out=out, cfg=cfg, sft_config=sft_cfg, teacher_path=a.teacher)
    rows = state["rows"]
    write_rs_outputs(out, rows)
    write_manifest(out, "rlhf rs", {**vars(a), "sft": sft_cfg}, [a.policy, a.prompts, *iteration_dirs(out, state)],
                   time.time() - t0, iterations=rows)
    print(rs_report(rows))
    return 0


def ppo_main(argv: list[str]) -> int:
    from llamaforge.align.ppo_train import PPOConfig, run_ppo

    p = argparse.ArgumentParser(prog="llamaforge rlhf ppo", epilog=PPO_EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="PPO with R = whiten(logit(Rc)) - beta * KL, Rc gated between the "
                                            "safety and helpfulness reward models (Llama 2 3.2.3).")
    p.add_argument("--config", help="TOML (configs/rlhf/*.toml)")
    p.add_argument("--out", required=True)
    for flag in ("policy", "ref", "rm-helpful", "rm-safety", "prompts", "eval-prompts"):
        p.add_argument(f"--{flag}", help=f"same as --ppo.{flag.replace('-', '_')}")
    p.add_argument("--reward-fn", action="append", default=[], help="module:function[=weight], repeatable")
    a, rest = p.parse_known_args(argv)
    over = parse_overrides(rest)
    for flag in ("policy", "ref", "rm_helpful", "rm_safety", "prompts", "eval_prompts"):
        if getattr(a, flag):
            over[f"ppo.{flag}"] = getattr(a, flag)
    if a.reward_fn:
        over["ppo.reward_fns"] = json.dumps(a.reward_fn)
    cfg = load_config(PPOConfig, a.config, over)
    t0 = time.time()
    summary = run_ppo(cfg, a.out)
    if int(os.environ.get("RANK", "0")) == 0:
        last = summary.get("last") or {}
        print(f"{a.out}: {summary['steps']} steps, {summary['stop_reason']}, reward {last.get('reward', 0):.3f}, "
              f"kl {last.get('kl', 0):.3f}" + (f", eval_reward {summary['eval_reward']:.3f}"
                                              if "eval_reward" in summary else "") + f" ({time.time() - t0:.0f}s)")
    return 0
