"""Training compute: FLOPs for T tokens, days on G GPUs, and the MFU a throughput implies.

FLOPs per token are `ModelArgs.flops_per_token`: 6N + 12*L*d*T (PaLM appendix B, torchtitan), N without
the input embedding. LLaMA's "6N" MFU leaves out the attention term; every number here says which
count it used: `*_6n` is 6N only, `*_attn` is 6N + attention.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from llamaforge.carbon import DEVICE_POWER_W, estimate
from llamaforge.errors import UserError
from llamaforge.model.args import ModelArgs


@dataclass(frozen=True)
class GPU:
    key: str
    name: str
    peak_bf16: float  # dense bf16 (fp16 for V100) tensor-core FLOP/s, no sparsity
    memory_gib: float  # total memory as nvidia-smi reports it
    power_w: float  # nominal board power (carbon.DEVICE_POWER_W)
    peak_fp32: float  # what fp32 matmuls reach: dense TF32 on Ampere and later, plain FP32 on V100

    def peak(self, dtype: str) -> float:
        """Peak FLOP/s for a training dtype ('bf16', 'fp16' or 'fp32')."""
        return self.peak_fp32 if dtype == "fp32" else self.peak_bf16


# Peak FLOP/s from the vendors' data sheets (dense, no 2:4 sparsity); memory as nvidia-smi reports it.
GPUS: dict[str, GPU] = {
    "a100": GPU("a100", "A100 SXM 80GB", 312e12, 80.0, DEVICE_POWER_W["a100"], 156e12),
    "a100-40gb": GPU("a100-40gb", "A100 SXM 40GB", 312e12, 40.0, DEVICE_POWER_W["a100"], 156e12),
    "a100-pcie": GPU("a100-pcie", "A100 PCIe 80GB", 312e12, 80.0, DEVICE_POWER_W["a100-pcie"], 156e12),
    "h100": GPU("h100", "H100 SXM 80GB", 989e12, 79.6, DEVICE_POWER_W["h100"], 495e12),
    "h100-pcie": GPU("h100-pcie", "H100 PCIe 80GB", 756e12, 79.6, DEVICE_POWER_W["h100-pcie"], 378e12),
    "h200": GPU("h200", "H200 SXM 141GB", 989e12, 140.4, DEVICE_POWER_W["h200"], 495e12),
    "v100": GPU("v100", "V100 SXM2 32GB (fp16)", 125e12, 31.7, DEVICE_POWER_W["v100"], 15.7e12),
}


def get_gpu(name: str) -> GPU:
    key = name.lower()
    if key not in GPUS:
        raise UserError(f"unknown --gpu {name!r}; known: {', '.join(GPUS)}")
    return GPUS[key]


def flops_per_token(args: ModelArgs, seq_len: int) -> dict[str, float]:
    """Both counts: '6n' (6N, N without input embedding) and 'attn' (6N + 12*L*d*T)."""
    attn = args.flops_per_token(seq_len)
    return {"6n": 6.0 * args.num_params(include_embedding=False), "attn": attn}


def mfu(tokens_per_gpu_s: float, flops_per_tok: float, peak: float) -> float:
    """Model FLOPs utilization: achieved model FLOP/s over the device's peak."""
    return tokens_per_gpu_s * flops_per_tok / peak


def compute_plan(args: ModelArgs, gpu: GPU, gpus: int, tokens: float, seq_len: int | None = None,
                 tokens_per_gpu_s: float | None = None, mfu_target: float | None = None,
                 mfu_count: str = "attn") -> dict[str, Any]:
    """Training FLOPs, wall-clock days, GPU-hours, MFU (both counts) and carbon for one run.

    Give either the measured `tokens_per_gpu_s` or an `mfu_target` measured with `mfu_count`
    ('6n' or 'attn'); the other is derived. LLaMA-65B: 380 tokens/s/GPU on 2048 A100s, 1.4T tokens
    -> 20.8 days, MFU 47.5% (6N) / 49.5% (6N + attention).
    """
    if gpus < 1 or tokens <= 0:
        raise UserError(f"plan: --gpus must be >= 1 and --tokens > 0 (got {gpus}, {tokens})")
    seq_len = seq_len or args.max_seq_len
    fpt = flops_per_token(args, seq_len)
    if (tokens_per_gpu_s is None) == (mfu_target is None):
        raise UserError("plan: give exactly one of --tokens-per-gpu-s and --mfu")
    if mfu_target is not None:
        if mfu_count not in fpt:
            raise UserError(f"plan: --mfu-count must be 6n or attn, got {mfu_count!r}")
        if not 0 < mfu_target <= 1:
            raise UserError(f"plan: --mfu is a fraction in (0, 1], got {mfu_target}")
        tokens_per_gpu_s = mfu_target * gpu.peak_bf16 / fpt[mfu_count]
    assert tokens_per_gpu_s is not None
    if tokens_per_gpu_s <= 0:
        raise UserError(f"plan: --tokens-per-gpu-s must be > 0, got {tokens_per_gpu_s}")
    seconds = tokens / (tokens_per_gpu_s * gpus)
    gpu_hours = seconds / 3600.0 * gpus
    carbon = estimate(gpu_hours, gpu.power_w)
    return {
        "preset_params": args.num_params(), "params_no_embedding": args.num_params(include_embedding=False),
        "gpu": asdict(gpu), "gpus": gpus, "tokens": tokens, "seq_len": seq_len,
        "flops_per_token_6n": fpt["6n"], "flops_per_token_attn": fpt["attn"],
        "train_flops_6n": fpt["6n"] * tokens, "train_flops_attn": fpt["attn"] * tokens,
        "tokens_per_gpu_s": tokens_per_gpu_s, "cluster_tokens_per_s": tokens_per_gpu_s * gpus,
        "mfu_6n": mfu(tokens_per_gpu_s, fpt["6n"], gpu.peak_bf16),
        "mfu_attn": mfu(tokens_per_gpu_s, fpt["attn"], gpu.peak_bf16),
        "days": seconds / 86400.0, "gpu_hours": gpu_hours,
        "energy_mwh": carbon.mwh, "tco2eq": carbon.tco2eq,
    }
