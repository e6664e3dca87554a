"""`llamaforge plan`: scaling laws with an inference budget, training time and MFU, memory per rank, PPO memory.

The numbers come from functions other code can call:
- `plan_scaling.inference_table` / `ScalingLaw` (Chinchilla fit, LLaMA's inference-budget argument),
- `plan_compute.compute_plan` (FLOPs, days, MFU with 6N and with attention, carbon),
- `plan_memory.training_memory` (per-rank memory under FSDP2 + TP/SP, by checkpointing mode),
- `plan_ppo.ppo_memory` (policy, value, reference and reward models through a PPO iteration).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from llamaforge.errors import UserError
from llamaforge.model.args import PRESETS, ModelArgs
from llamaforge.plan_compute import GPUS, compute_plan, get_gpu
from llamaforge.plan_memory import CHECKPOINTING, PRECISIONS, training_memory
from llamaforge.plan_ppo import ppo_memory
from llamaforge.plan_report import compute_lines, memory_lines, positions_lines, ppo_lines, scaling_lines
from llamaforge.plan_scaling import CHINCHILLA, PRESET_TOKENS, inference_table, preset_positions

EPILOG = """examples:
  llamaforge plan --preset llama1-65b --gpu a100 --gpus 2048 --tokens 1.4e12 --tokens-per-gpu-s 380
  llamaforge plan --preset llama2-70b --gpu h100 --gpus 64 --tp 8 --mfu 0.4
  llamaforge plan --preset llama2-7b --gpu h100 --gpus 8 --ppo
  llamaforge plan --budget 5.76e23 --inference-tokens 2e13
  llamaforge plan --target-params 7e9 --target-tokens 1e12 --inference-tokens 1e13 --preset-scaling
  llamaforge plan --doc docs/PLANS.md          # regenerate the worked memory plans
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llamaforge plan", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Plan a training run: scaling law with an inference budget, FLOPs, "
                                            "days and MFU, memory per rank, PPO memory.")
    g = p.add_argument_group("model and hardware")
    g.add_argument("--preset", choices=list(PRESETS), help="model preset")
    g.add_argument("--gpu", default="a100", help=f"one of {', '.join(GPUS)} (default a100)")
    g.add_argument("--gpus", type=int, default=None, help="number of GPUs (default dp_shard * tp)")
    g.add_argument("--tokens", type=float, help="training tokens (default: the paper's for the preset)")
    g.add_argument("--seq-len", type=int, help="sequence length (default: the preset's context)")
    g.add_argument("--tokens-per-gpu-s", type=float, help="measured throughput per GPU")
    g.add_argument("--mfu", type=float, help="assumed MFU (fraction) instead of a throughput")
    g.add_argument("--mfu-count", choices=["6n", "attn"], default="attn",
                   help="FLOP count --mfu is measured with: 6N or 6N + attention (default attn)")
    m = p.add_argument_group("memory")
    m.add_argument("--dp-shard", type=int, help="FSDP degree (default gpus / tp)")
    m.add_argument("--tp", type=int, default=1, help="tensor-parallel degree (default 1)")
    m.add_argument("--micro-batch", type=int, default=1, help="sequences per rank per forward (default 1)")
    m.add_argument("--checkpointing", choices=[*CHECKPOINTING, "all"], default="all",
                   help="activation checkpointing mode to show (default all)")
    m.add_argument("--precision", choices=list(PRECISIONS), default="bf16-mixed",
                   help="state precision (default bf16-mixed: fp32 params/grads/AdamW, bf16 compute)")
    m.add_argument("--attention", choices=["flash", "eager"], default="flash",
                   help="flash: SDPA's fused kernel (default); eager: materialised s x s attention")
    m.add_argument("--kernels", choices=["fused", "eager"], default="fused",
                   help="fused: compiled blocks (parallel.compile=true, default); eager: the model without compile")
    m.add_argument("--no-sp", action="store_true", help="tensor parallel without sequence parallel")
    m.add_argument("--sp-regather", action="store_true",
                   help="count gathered linear inputs as split by tp (Megatron re-gathers them in backward; "
                        "DTensor, our engine, keeps them whole)")
    r = p.add_argument_group("PPO")
    r.add_argument("--ppo", action="store_true", help="add the PPO memory plan for the preset")
    r.add_argument("--reward-models", type=int, default=2, help="frozen reward models (default 2: helpful, safety)")
    r.add_argument("--value", choices=["separate", "shared"], default="separate")
    r.add_argument("--ppo-prompts", type=int, default=512, help="prompts per PPO iteration (default 512)")
    r.add_argument("--ppo-frozen", choices=["sharded", "replicated"], default="sharded",
                   help="reference and reward models sharded like the policy (rlhf ppo's default) or a copy per "
                        "rank (--ppo.shard_frozen=false)")
    s = p.add_argument_group("scaling law")
    s.add_argument("--budget", type=float, help="training compute budget in FLOPs")
    s.add_argument("--target-params", type=float, help="target model size (with --target-tokens)")
    s.add_argument("--target-tokens", type=float, help="target training tokens (with --target-params)")
    s.add_argument("--target-loss", type=float, help="target loss of the fit")
    s.add_argument("--inference-tokens", type=float, default=0.0, help="tokens expected to be served")
    s.add_argument("--preset-scaling", action="store_true", help="show where the released models sit")
    p.add_argument("--doc", metavar="PATH", help="write the worked plans (Markdown) to PATH")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return p


def _degrees(a: argparse.Namespace) -> tuple[int, int, int]:
    tp = a.tp
    if a.dp_shard is not None:
        dp = a.dp_shard
        gpus = a.gpus if a.gpus is not None else dp * tp
    else:
        gpus = a.gpus if a.gpus is not None else tp
        if gpus % tp:
            raise UserError(f"plan: --gpus {gpus} is not divisible by --tp {tp}")
        dp = gpus // tp
    if dp * tp != gpus:
        raise UserError(f"plan: --dp-shard {dp} x --tp {tp} = {dp * tp} must equal --gpus {gpus}")
    return gpus, dp, tp


def run(a: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """Compute every section the arguments ask for; return (JSON object, text lines)."""
    out: dict[str, Any] = {}
    lines: list[str] = []
    if a.preset:
        args = ModelArgs.from_name(a.preset)
        gpu = get_gpu(a.gpu)
        gpus, dp, tp = _degrees(a)
        seq_len = a.seq_len or args.max_seq_len
        tokens = a.tokens or PRESET_TOKENS.get(a.preset)
        if tokens:
            assumed = None
            mfu = a.mfu
            if a.tokens_per_gpu_s is None and mfu is None:
                mfu, assumed = 0.40, f"assumed MFU 40% of {'6N' if a.mfu_count == '6n' else '6N + attention'}"
            cp = compute_plan(args, gpu, gpus, tokens, seq_len, a.tokens_per_gpu_s, mfu, a.mfu_count)
            n = cp["params_no_embedding"]
            n_opt, d_opt = CHINCHILLA.compute_optimal(cp["train_flops_6n"])
            cp["scaling"] = {"loss": CHINCHILLA.loss(n, tokens), "optimal_params": n_opt, "optimal_tokens": d_opt,
                             "optimal_loss": CHINCHILLA.loss(n_opt, d_opt)}
            cp["throughput_assumed"] = assumed
            out["compute"] = cp
            lines += compute_lines(a.preset, cp, assumed) + [""]
        modes = list(CHECKPOINTING) if a.checkpointing == "all" else [a.checkpointing]
        ests = [training_memory(args, dp_shard=dp, tp=tp, seq_len=seq_len, micro_batch=a.micro_batch,
                                checkpointing=mode, precision=a.precision, sp=not a.no_sp, attention=a.attention,
                                regather=a.sp_regather, kernels=a.kernels)
                for mode in modes]
        out["memory"] = [{**e.as_dict(), "fits": e.fits(gpu.memory_gib)} for e in ests]
        lines += memory_lines(a.preset, args, ests, gpu) + [""]
        if a.ppo:
            ckpt = "selective" if a.checkpointing == "all" else a.checkpointing
            pr = ppo_memory(args, dp_shard=dp, tp=tp, seq_len=seq_len, micro_batch=a.micro_batch,
                            checkpointing=ckpt, precision=a.precision, value=a.value,
                            reward_models=a.reward_models, prompts_per_iteration=a.ppo_prompts, kernels=a.kernels,
                            gpu_memory_gib=gpu.memory_gib, frozen=a.ppo_frozen)
            out["ppo"] = pr
            lines += ppo_lines(a.preset, pr) + [""]
    elif a.ppo:
        raise UserError("plan: --ppo needs --preset")
    if a.budget is not None or a.target_loss is not None or a.target_params is not None:
        sc = inference_table(a.budget, params=a.target_params, tokens=a.target_tokens,
                             target_loss=a.target_loss, inference_tokens=a.inference_tokens)
        out["scaling"] = sc
        lines += scaling_lines(sc) + [""]
    if a.preset_scaling:
        pos = preset_positions()
        out["preset_scaling"] = pos
        lines += positions_lines(pos) + [""]
    return out, lines


def main(argv: list[str]) -> int:
    p = parser()
    a = p.parse_args(argv)
    if a.doc:
        from llamaforge.io import atomic_write_text
        from llamaforge.plan_doc import worked_plans

        atomic_write_text(a.doc, worked_plans())
        print(f"wrote {a.doc}")
        return 0
    if not (a.preset or a.ppo or a.budget or a.target_loss or a.target_params or a.preset_scaling):
        p.print_help()
        return 2
    out, lines = run(a)
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        print("\n".join(lines).rstrip())
    return 0
