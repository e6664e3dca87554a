"""Shared pieces of the checkpoint formats: building on meta, checked assignment, dtype names."""

from __future__ import annotations

from pathlib import Path

import torch

from llamaforge.errors import UserError
from llamaforge.model.args import ModelArgs
from llamaforge.model.llama import Transformer

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def build_on_meta(args: ModelArgs) -> Transformer:
    with torch.device("meta"):
        return Transformer(args)


def assign_state_dict(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str | Path,
                      device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> None:
    """Check names and shapes against the model, then assign (no second copy of the weights)."""
    expected = {k: v for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in sd]
    if missing:
        shape = list(expected[missing[0]].shape)
        raise UserError(f"{source}: tensor {missing[0]!r} is missing (expected shape {shape})"
                        + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    unexpected = [k for k in sd if k not in expected]
    if unexpected:
        raise UserError(f"{source}: unexpected tensor {unexpected[0]!r} with shape {list(sd[unexpected[0]].shape)}; "
                        "is this checkpoint for another architecture?")
    for k, v in expected.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise UserError(f"{source}: tensor {k!r} has shape {list(sd[k].shape)}, expected {list(v.shape)} "
                            "from the model config; the config and the weights disagree")
    out = {k: v.to(device=device, dtype=dtype or v.dtype) for k, v in sd.items()}
    model.load_state_dict(out, strict=True, assign=True)
    if isinstance(model, Transformer):
        model.reset_rope(device)


def state_dict_cpu(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A plain CPU state dict, contiguous (safetensors needs it), without non-persistent buffers."""
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
