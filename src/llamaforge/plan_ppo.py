"""Memory plan per rank for PPO (Llama 2 section 3.2.3): policy, value, reference and reward models.

Every model is sharded the same way (FSDP2 over dp_shard, tensor parallel over tp). The policy and the
value model train (parameters, AdamW moments; gradients only while training), the reference and the
reward models (helpfulness and safety in Llama 2) are frozen and held in the compute dtype. One
iteration has three phases, and the peak is the largest:

- generation: the policy's full weights gathered once for the phase (not once per token: the paper
  saw a 20x slowdown from that), plus the KV cache of the rollouts generated at once on this rank;
- scoring: reference log-probs, rewards and values, one model's forward at a time;
- training: policy and value gradients, and the activations of one model's forward and backward.
"""

from __future__ import annotations

import math
from typing import Any

from llamaforge.errors import UserError
from llamaforge.model.args import ModelArgs
from llamaforge.plan_memory import (
    GIB,
    HEADROOM,
    activation_items,
    block_params,
    check_parallel,
    get_precision,
    kv_cache_bytes,
    training_memory,
)


def _forward_working_set(args: ModelArgs, seq_len: int, micro_batch: int, dp_shard: int, tp: int, c: float) -> float:
    """A no-grad forward: one layer's tensors, the logits with an fp32 copy, and FSDP's gathered blocks."""
    layer = sum(b for _, b, modes in activation_items(args, seq_len, micro_batch, tp, True, "flash", c)
                if "none" in modes)
    logits = seq_len * micro_batch * args.vocab_size * (c + 4) / tp
    fsdp = 2 * max(block_params(args), args.vocab_size * args.dim) / tp * c if dp_shard > 1 else 0.0
    return layer + logits + fsdp


def ppo_memory(policy: ModelArgs, *, dp_shard: int, tp: int = 1, seq_len: int | None = None, micro_batch: int = 1,
               checkpointing: str = "selective", precision: str = "bf16-mixed", value: str = "separate",
               reward_models: int = 2, critic: ModelArgs | None = None, prompts_per_iteration: int = 512,
               gpu_memory_gib: float | None = None, gen_batch: int | None = None, kernels: str = "fused",
               frozen: str = "sharded") -> dict[str, Any]:
    """Per-rank memory of each model and each phase of a PPO iteration, in GiB.

    `critic` is the shape of the value and reward models (default: the policy's; Llama 2 initialises
    them from chat models of the same size). `value='shared'` puts the value head on the policy (no
    separate value model). `gen_batch` is the number of rollouts generated at once per rank; when None
    and `gpu_memory_gib` is given, the largest that fits is chosen (at most the rank's share of
    `prompts_per_iteration`; Llama 2 used 512 prompts per iteration). `frozen='replicated'` keeps a
    whole copy of the reference and reward models on every rank (`rlhf ppo --ppo.shard_frozen=false`)
    instead of sharding them over dp_shard like the policy (the default, `shard_frozen=true`).
    """
    if value not in ("separate", "shared"):
        raise UserError(f"value must be separate or shared, got {value!r}")
    if frozen not in ("sharded", "replicated"):
        raise UserError(f"frozen must be sharded or replicated, got {frozen!r}")
    if reward_models < 0:
        raise UserError(f"reward_models must be >= 0, got {reward_models}")
    critic = critic or policy
    check_parallel(critic, dp_shard, tp)
    prec = get_precision(precision)
    c = prec.compute_bytes
    seq_len = seq_len or policy.max_seq_len
    kw = dict(dp_shard=dp_shard, tp=tp, seq_len=seq_len, micro_batch=micro_batch,
              checkpointing=checkpointing, precision=prec, kernels=kernels)
    trained = [("policy", training_memory(policy, **kw))]
    if value == "separate":
        trained.append(("value", training_memory(critic, **kw)))
    fkw = {**kw, "dp_shard": 1} if frozen == "replicated" else kw
    held = [("reference", training_memory(policy, **fkw, trainable=False))]
    names = ["helpfulness", "safety"] if reward_models == 2 else [str(i + 1) for i in range(reward_models)]
    held += [(f"reward ({nm})", training_memory(critic, **fkw, trainable=False)) for nm in names]

    models = []
    for name, est in trained:
        models.append({"model": name, "trainable": True, "params": est.config["params"],
                       "resident_gib": (est.params + est.master + est.optimizer) / GIB, "grads_gib": est.grads / GIB})
    for name, est in held:
        models.append({"model": name, "trainable": False, "params": est.config["params"],
                       "resident_gib": est.params / GIB, "grads_gib": 0.0})
    resident = sum(m["resident_gib"] for m in models) * GIB

    # Training: both trained models' gradients; one model's activations and transients at a time.
    grads = sum(est.grads for _, est in trained)
    train_act = max(est.activations + est.transient for _, est in trained)
    training = {"resident": resident, "grads": grads, "activations_and_transient": train_act}

    scoring = {"resident": resident, "forward_working_set": max(
        _forward_working_set(a, seq_len, micro_batch, dp_shard, tp, c) for a in (policy, critic))}

    per_rank_prompts = math.ceil(prompts_per_iteration / dp_shard)
    kv_seq = kv_cache_bytes(policy, seq_len, tp, c)
    gathered = policy.num_params() * c / tp
    fixed = resident + gathered
    if gen_batch is None:
        if gpu_memory_gib is None:
            gen_batch = per_rank_prompts
        else:
            room = HEADROOM * gpu_memory_gib * GIB - fixed
            gen_batch = max(0, min(per_rank_prompts, int(room // kv_seq)))
    generation = {"resident": resident, "gathered_policy": gathered, "kv_cache": gen_batch * kv_seq}

    phases = {"generation": generation, "scoring": scoring, "training": training}
    totals = {k: sum(v.values()) for k, v in phases.items()}
    peak = max(totals, key=totals.get)
    out: dict[str, Any] = {
        "config": {"policy_params": policy.num_params(), "critic_params": critic.num_params(), "dp_shard": dp_shard,
                   "tp": tp, "seq_len": seq_len, "micro_batch": micro_batch, "checkpointing": checkpointing,
                   "precision": prec.name, "value": value, "reward_models": reward_models, "frozen": frozen,
                   "prompts_per_iteration": prompts_per_iteration},
        "models": models,
        "phases": {k: {**{kk: vv / GIB for kk, vv in v.items()}, "total": totals[k] / GIB} for k, v in phases.items()},
        "generation": {"prompts_per_rank": per_rank_prompts, "kv_cache_per_sequence_gib": kv_seq / GIB,
                       "gen_batch": gen_batch,
                       "rounds": math.ceil(per_rank_prompts / gen_batch) if gen_batch else None},
        "peak_phase": peak, "peak_gib": totals[peak] / GIB,
    }
    if gpu_memory_gib is not None:
        out["gpu_memory_gib"] = gpu_memory_gib
        out["fits"] = bool(gen_batch) and totals[peak] <= HEADROOM * gpu_memory_gib * GIB
    return out
