"""`llamaforge rlhf ppo`: the PPO run on the one Trainer (config, models, rollouts, eval, final)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from llamaforge.align.common import EpochTrain
from llamaforge.align.ppo import PPOModel, RolloutConfig, Rollouts, ppo_loss_fn
from llamaforge.align.rewards import CombinedReward
from llamaforge.config import dump_toml
from llamaforge.errors import UserError
from llamaforge.io import atomic_write_text
from llamaforge.train import parallel as par
from llamaforge.train.config import CheckpointSection, LoggingSection, OptimSection, ParallelSection
from llamaforge.train.trainer import Trainer


@dataclass
class PPOSection:
    policy: str | None = None
    ref: str | None = None  # default: the policy's starting checkpoint
    rm_helpful: str | None = None
    rm_safety: str | None = None
    reward_fns: list[str] = field(default_factory=list)  # "module:function" or "module:function=weight"
    value_init: Literal["reward", "policy"] = "reward"
    prompts: str | None = None
    eval_prompts: str | None = None  # default: 10% of prompts held out
    eval_count: int = 64
    prompts_per_iteration: int = 512
    ppo_epochs: int = 1
    iterations: int = 200
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    beta: float = 0.01  # 0.005 for 34B and 70B
    gamma: float = 1.0
    lam: float = 0.95
    clip: float = 0.2
    vf_coef: float = 0.1
    safety_threshold: float = 0.15
    patience: int = 0  # early stopping on held-out reward (evaluations without improvement)
    seed: int = 0
    gen_batch: int = 64  # rollouts decoded at once per rank (KV cache rows; `llamaforge plan --ppo` sizes it)
    shard_frozen: bool = True  # under torchrun: FSDP-shard the reference and reward models too (false: a copy per rank)


@dataclass
class PPOConfig:
    ppo: PPOSection = field(default_factory=PPOSection)
    train: EpochTrain = field(default_factory=lambda: EpochTrain(batch_size=64, micro_batch=8))
    optim: OptimSection = field(default_factory=lambda: OptimSection(lr=1e-6, schedule="constant", warmup_steps=0))
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    parallel: ParallelSection = field(default_factory=ParallelSection)


def parse_reward_fns(specs: list[str]) -> list[tuple[Any, float]]:
    from llamaforge.align.rewards import load_reward_fn

    out = []
    for s in specs:
        name, _, w = s.partition("=")
        try:
            weight = float(w) if w else 1.0
        except ValueError:
            raise UserError(f"reward function {s!r}: the weight after '=' must be a number") from None
        out.append((load_reward_fn(name), weight))
    return out


def build_reward(rm_helpful: str | None, rm_safety: str | None, fns: list[str], threshold: float) -> CombinedReward:
    from llamaforge.align.reward import load_reward_model

    return CombinedReward(load_reward_model(rm_helpful).eval() if rm_helpful else None,
                          load_reward_model(rm_safety).eval() if rm_safety else None,
                          threshold, parse_reward_fns(fns))


def split_prompts(path: str, eval_path: str | None, eval_count: int, seed: int) -> tuple[list[dict], list[dict]]:
    import random

    from llamaforge.data.chat import read_jsonl

    recs = [r for _, r in read_jsonl(path)]
    for n, r in enumerate(recs, 1):
        if not (isinstance(r.get("prompt"), str) and r["prompt"].strip()) and "messages" not in r:
            raise UserError(f"{path}:{n}: a prompt record needs 'prompt' or 'messages'")
    if eval_path:
        return recs, [r for _, r in read_jsonl(eval_path)][:eval_count]
    order = list(range(len(recs)))
    random.Random(seed).shuffle(order)
    n_eval = min(eval_count, max(1, len(recs) // 10))
    held = set(order[:n_eval])
    return [r for i, r in enumerate(recs) if i not in held], [recs[i] for i in sorted(held)]


def run_ppo(cfg: PPOConfig, out: str | Path) -> dict[str, Any]:
    from llamaforge.align.rejection_sampling import evaluate
    from llamaforge.align.reward import load_reward_model, reward_model_from_lm
    from llamaforge.align.world_eval import record_dialogue
    from llamaforge.checkpoint import find_tokenizer, load_model
    from llamaforge.checkpoint.native import save_native

    p = cfg.ppo
    out = Path(out)
    if not p.policy or not p.prompts:
        raise UserError("pass --policy CHECKPOINT and --prompts FILE")
    tok = find_tokenizer(p.policy)
    if tok is None:
        raise UserError(f"{p.policy} has no tokenizer.model")
    info = par.init_distributed(cfg.parallel, cfg.train.device)
    try:
        if info.tp > 1:
            raise UserError("rlhf ppo shards with FSDP only (parallel.dp_shard); parallel.tp must be 1")
        train_recs, eval_recs = split_prompts(p.prompts, p.eval_prompts, p.eval_count, p.seed)
        reward = build_reward(p.rm_helpful, p.rm_safety, p.reward_fns, p.safety_threshold)
        for rm in (reward.rm_helpful, reward.rm_safety):
            if rm is not None:
                rm.to(info.device).requires_grad_(False)
        micro, _ = Trainer.layout(cfg, info)
        if p.prompts_per_iteration % cfg.train.batch_size:
            raise UserError(f"ppo.prompts_per_iteration {p.prompts_per_iteration} must be a multiple of "
                            f"train.batch_size {cfg.train.batch_size} (the PPO minibatch)")
        per_it = p.prompts_per_iteration * p.ppo_epochs // cfg.train.batch_size
        if cfg.train.steps % per_it:
            raise UserError(f"train.steps must be a multiple of the {per_it} optimizer steps per PPO iteration")
        cfg.train.steps = min(cfg.train.steps, per_it * p.iterations) if cfg.train.steps else per_it * p.iterations
        if cfg.checkpoint.every % per_it:
            raise UserError(f"checkpoint.every must be a multiple of the {per_it} optimizer steps per PPO iteration")
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "config.toml", dump_toml(cfg))
        torch.manual_seed(cfg.train.seed)
        policy = load_model(p.policy)
        ref = load_model(p.ref or p.policy).eval().to(info.device)
        for q in ref.parameters():
            q.requires_grad_(False)
        if p.value_init == "reward":
            if not (p.rm_helpful or p.rm_safety):
                raise UserError("ppo.value_init = reward needs --rm-helpful or --rm-safety")
            value = load_reward_model(p.rm_helpful or p.rm_safety)
            if value.args.to_dict() != policy.args.to_dict():
                raise UserError("the reward model's shape differs from the policy's; use --ppo.value_init=policy")
        else:
            value = reward_model_from_lm(copy.deepcopy(policy))
        model = PPOModel(policy, value)
        rcfg = RolloutConfig(p.prompts_per_iteration, micro, p.ppo_epochs, p.max_new_tokens, p.temperature,
                             p.top_p, p.beta, p.gamma, p.lam, p.seed, p.iterations, p.patience, p.gen_batch)
        comm = None
        if info.world > 1:
            from llamaforge.align import ppo_dist

            gen_dtype = torch.bfloat16 if cfg.train.dtype == "bf16" and info.device.type == "cuda" else None
            comm = ppo_dist.DistComm(info, cfg.train.batch_size, gen_dtype)
            if p.shard_frozen:
                ppo_dist.shard_frozen(ref, info)
                for rm in {id(m): m for m in (reward.rm_helpful, reward.rm_safety) if m is not None}.values():
                    ppo_dist.shard_frozen(rm, info)
        rollouts = Rollouts(model, ref, reward, tok, train_recs, [record_dialogue(r) for r in train_recs], rcfg,
                            comm)

        def eval_fn(m: PPOModel) -> dict[str, float]:
            if comm is not None:
                res = ppo_dist.evaluate_dist(m.policy, comm, tok, reward, eval_recs, p.max_new_tokens, p.seed)
            else:
                res = evaluate(m.policy, tok, reward, eval_recs, p.max_new_tokens, 0.0, p.seed)
            rollouts.eval_history.append(res["eval_reward"])
            return {k: float(v) for k, v in res.items() if v is not None}

        def final_fn(sd: dict[str, torch.Tensor], path: Path) -> None:
            pol = {k.removeprefix("policy."): v.contiguous() for k, v in sd.items() if k.startswith("policy.")}
            save_native(pol, path, tokenizer=tok, args=policy.args,
                        metadata={"trained_by": "llamaforge rlhf ppo", "init": p.policy})

        mean_over_ranks = (lambda t: par.all_mean(t, info)) if info.world > 1 else None
        trainer = Trainer(model, ppo_loss_fn(p.clip, p.vf_coef, mean_over_ranks), rollouts, cfg, out, info,
                          eval_fn=eval_fn,
                          final_fn=final_fn, command="rlhf ppo",
                          inputs=[x for x in (p.policy, p.ref, p.rm_helpful, p.rm_safety, p.prompts) if x],
                          manifest_extra={"steps_per_iteration": per_it, "eval_prompts": len(eval_recs)})
        if info.dp > 1:  # PPOModel.forward calls value.values(): FSDP must gather around it too
            from torch.distributed.fsdp import register_fsdp_forward_method

            register_fsdp_forward_method(model.value, "values")
        return trainer.fit()
    finally:
        if info.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
