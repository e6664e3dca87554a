"""Iterative rejection sampling (Llama 2 3.2.3), `llamaforge rlhf rs`.

Each iteration: sample K answers per prompt (from the teacher when given: distillation, as Llama 2's
largest model sampled for the smaller ones), score them with the combined reward, keep the best per
prompt together with the best of all earlier iterations (re-scored with the current reward models,
which may be refreshed per iteration), fine-tune the policy on them with the SFT recipe, and
measure the mean reward on held-out prompts. Re-running the command continues after the last
finished iteration.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llamaforge.align.rewards import CombinedReward
from llamaforge.align.world_eval import record_dialogue, score_answers
from llamaforge.errors import UserError
from llamaforge.io import atomic_dir, atomic_write_json


@dataclass
class RSConfig:
    k: int = 8
    temperature: float = 1.0
    iterations: int = 3
    max_new_tokens: int = 64
    top_p: float = 1.0
    seed: int = 0
    sweep_temperatures: list[float] = field(default_factory=list)  # e.g. [0.7, 1.0, 1.3]
    sweep_prompts: int = 32
    finetune_from: str = "previous"  # previous iteration's policy, or "initial"
    eval_temperature: float = 0.0
    # keep a prompt's best answer only if it scores at least this (None: always keep, as in Llama 2); with a
    # verifier in the reward, a threshold keeps wrong best-of-K answers out of the fine-tuning set
    min_score: float | None = None
    # keep only answers whose user reward functions (verifiers: --reward-fn) score at least this: the best
    # answer that passes, not the best overall; a prompt with none is left out of this iteration (as
    # ReST/RAFT). The world verifier at weight 2 gives +2 right / -2 wrong on skills, so 0 keeps right ones.
    min_user_score: float | None = None


def sample_k(model, tok, prompts: list[Any], k: int, temperature: float, top_p: float, max_new_tokens: int,
             seed: int) -> list[list[str]]:
    """K answers per prompt in one batched generation (each copy its own seed)."""
    from llamaforge.generate import encode_prompt, generate_ids

    ids = [encode_prompt(tok, p)[0] for p in prompts]
    rep = [x for x in ids for _ in range(k)]
    gen = generate_ids(model, rep, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                       stop_ids=[tok.eos_id], seed=seed)
    flat = [tok.decode(gen.row(i)).strip() for i in range(len(rep))]
    return [flat[i * k:(i + 1) * k] for i in range(len(prompts))]


def best_of_k_curve(scores: torch.Tensor) -> list[float]:
    """Mean over prompts of the best score among the first k samples, k = 1..K ([P, K] input)."""
    return [float(scores[:, :k].max(1).values.mean()) for k in range(1, scores.shape[1] + 1)]


@torch.no_grad()
def evaluate(model, tok, reward: CombinedReward, records: list[dict], max_new_tokens: int,
             temperature: float = 0.0, seed: int = 0) -> dict[str, Any]:
    """Mean combined reward (logit(Rc) + user rewards, unwhitened) on held-out prompts, plus the
    world's checks when the records carry them."""
    from llamaforge.generate import generate

    prompts = [record_dialogue(r) for r in records]
    answers = [a.strip() for a in generate(model, tok, prompts, max_new_tokens=max_new_tokens,
                                           temperature=temperature, seed=seed)]
    s = reward.score(records, prompts, answers)
    out = {"eval_reward": float(s["score"].mean())}
    if any("category" in r for r in records):
        out.update({k: v for k, v in score_answers(records, answers).items() if k != "n"})
    return out


def iteration_dirs(out: Path, state: dict[str, Any]) -> list[Path]:
    """The iterations' run directories (each with its SFT manifest): inputs of the RS manifest, so a model
    card follows the lineage through every iteration and counts its compute."""
    return [out / f"iter_{i}" for i in range(1, state["done"] + 1)]


def run_rs(*, policy_path: str, reward_for: Any, tok, train_records: list[dict], eval_records: list[dict],
           out: Path, cfg: RSConfig, sft_config: Any, teacher_path: str | None = None,
           log=print) -> dict[str, Any]:
    """`reward_for(iteration) -> CombinedReward` lets each iteration use refreshed reward models."""
    from llamaforge.align.sft import run as sft_run
    from llamaforge.checkpoint import load_model

    out.mkdir(parents=True, exist_ok=True)
    state_file = out / "rs_state.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {"done": 0, "rows": [], "pool": {}}
    prompts = [record_dialogue(r) for r in train_records]
    if not state["rows"]:
        base = load_model(policy_path).eval()
        row = {"iteration": 0, "policy": policy_path,
               **evaluate(base, tok, reward_for(1), eval_records, cfg.max_new_tokens, cfg.eval_temperature, cfg.seed)}
        state["rows"].append(row)
        log(f"rs: iteration 0 (the starting policy): eval_reward {row['eval_reward']:.3f}")
        atomic_write_json(state_file, state)
    current = policy_path if state["done"] == 0 else str(out / f"iter_{state['done']}" / "final")
    for it in range(state["done"] + 1, cfg.iterations + 1):
        reward = reward_for(it)
        sampler_path = teacher_path or current
        sampler = load_model(sampler_path).eval()
        samples = sample_k(sampler, tok, prompts, cfg.k, cfg.temperature, cfg.top_p, cfg.max_new_tokens,
                           seed=cfg.seed * 1_000_003 + it * 7_919)
        flat_rec = [r for r in train_records for _ in range(cfg.k)]
        flat_prompts = [p for p in prompts for _ in range(cfg.k)]
        flat_ans = [a for s in samples for a in s]
        scored = reward.score(flat_rec, flat_prompts, flat_ans)
        scores = scored["score"].view(len(prompts), cfg.k)
        curve = best_of_k_curve(scores)
        eligible = scores.clone()
        if cfg.min_user_score is not None:  # only answers the verifiers accept may be chosen
            eligible[scored["user"].view(len(prompts), cfg.k) < cfg.min_user_score] = float("-inf")
        best_idx = eligible.argmax(1).tolist()
        best = [samples[i][j] for i, j in enumerate(best_idx)]
        best_score = [float(eligible[i, j]) for i, j in enumerate(best_idx)]
        pool: dict[str, str] = state["pool"]
        old_by: dict[str, float] = {}
        if pool:  # the best of all earlier iterations, re-scored with this iteration's reward
            keys = [str(i) for i in range(len(prompts)) if str(i) in pool]
            old = reward.score([train_records[int(k)] for k in keys], [prompts[int(k)] for k in keys],
                               [pool[k] for k in keys])
            for k, sc, us in zip(keys, old["score"].tolist(), old["user"].tolist()):
                if cfg.min_user_score is not None and us < cfg.min_user_score:
                    del pool[k]  # the refreshed verifiers reject it
                else:
                    old_by[k] = sc
        kept_old = below = unverified = 0
        for i in range(len(prompts)):
            if str(i) in old_by and old_by[str(i)] > best_score[i]:
                kept_old += 1
                continue
            if best_score[i] == float("-inf"):
                unverified += 1
                continue
            if cfg.min_score is not None and best_score[i] < cfg.min_score:
                below += 1
                continue
            pool[str(i)] = best[i]
        if not pool:
            raise UserError(f"rejection sampling iteration {it}: no answer passed min_score {cfg.min_score} / "
                            f"min_user_score {cfg.min_user_score}; lower --min-score or --min-user-score")
        sweep = {}
        if cfg.sweep_temperatures:
            sub = prompts[: cfg.sweep_prompts]
            for t in cfg.sweep_temperatures:
                ss = sample_k(sampler, tok, sub, cfg.k, t, cfg.top_p, cfg.max_new_tokens, seed=cfg.seed + it)
                sc = reward.score([r for r in train_records[: len(sub)] for _ in range(cfg.k)],
                                  [p for p in sub for _ in range(cfg.k)], [a for s in ss for a in s])["score"]
                sweep[str(t)] = best_of_k_curve(sc.view(len(sub), cfg.k))[-1]
        del sampler
        it_dir = out / f"iter_{it}"
        it_dir.mkdir(parents=True, exist_ok=True)
        with atomic_dir(it_dir / "samples") as tmp:
            with open(tmp / "samples.jsonl", "w") as f:
                for i, r in enumerate(train_records):
                    f.write(json.dumps({**r, "answers": samples[i], "scores": scores[i].tolist(),
                                        "best": best_idx[i]}, ensure_ascii=False) + "\n")
            with open(tmp / "chosen.jsonl", "w") as f:
                for i in range(len(prompts)):
                    if str(i) in pool and pool[str(i)]:
                        msgs = prompts[i] + [{"role": "assistant", "content": pool[str(i)]}]
                        f.write(json.dumps({"messages": msgs}, ensure_ascii=False) + "\n")
        sft_config.model.init = policy_path if cfg.finetune_from == "initial" else current
        sft_config.data.path = str(it_dir / "samples" / "chosen.jsonl")
        sft_config.data.val_fraction = 0.0
        sft_config.train.steps = 0
        sft_run(sft_config, it_dir)
        current = str(it_dir / "final")
        row = {"iteration": it, "policy": current, "sampler": sampler_path, "k": cfg.k,
               "temperature": cfg.temperature, "mean_best_of_k": curve[-1], "mean_sample": curve[0],
               "best_of_k_curve": curve, "kept_from_earlier": kept_old, "below_min_score": below,
               "no_verified_answer": unverified, "chosen": len(pool), "temperature_sweep": sweep,
               **evaluate(load_model(current).eval(), tok, reward, eval_records, cfg.max_new_tokens,
                          cfg.eval_temperature, cfg.seed)}
        state["rows"].append(row)
        state["done"] = it
        atomic_write_json(state_file, state)
        log(f"rs: iteration {it}: best-of-{cfg.k} {curve[-1]:.3f} (one sample {curve[0]:.3f}), "
            f"eval_reward {row['eval_reward']:.3f}")
    final = out / "final"
    last = out / f"iter_{state['done']}" / "final"
    if state["done"] and last.is_dir():
        with atomic_dir(final) as tmp:
            for p in last.iterdir():
                shutil.copy2(p, tmp / p.name)
    return state
