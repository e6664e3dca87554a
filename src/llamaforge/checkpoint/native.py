"""The native format: llamaforge.json (args, version, kind) + model.safetensors (+ tokenizer.model)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from llamaforge.checkpoint.common import assign_state_dict, build_on_meta, dtype_name, state_dict_cpu
from llamaforge.errors import UserError
from llamaforge.io import atomic_dir, atomic_write_json
from llamaforge.model.args import ModelArgs

FORMAT_VERSION = 1
CONFIG = "llamaforge.json"
WEIGHTS = "model.safetensors"


def read_config(path: str | Path) -> dict[str, Any]:
    f = Path(path) / CONFIG
    try:
        cfg = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{f}: cannot read ({e})") from None
    if cfg.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(f"{f}: format_version {cfg['format_version']} is newer than this llamaforge understands")
    if "model_args" not in cfg:
        raise UserError(f"{f}: field 'model_args' is missing")
    return cfg


def read_tensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    f = Path(path) / WEIGHTS
    if not f.is_file():
        raise UserError(f"{f} not found")
    out = {}
    with safe_open(str(f), framework="pt", device=str(device)) as st:
        for k in st.keys():
            out[k] = st.get_tensor(k)
    return out


def load_native(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None):
    cfg = read_config(path)
    args = ModelArgs.from_dict(cfg["model_args"])
    model = build_on_meta(args)
    sd = read_tensors(path, device)
    if cfg.get("kind", "lm") == "reward":
        # A reward model's backbone has no LM head; loading one as a language model is a user error.
        raise UserError(f"{path} is a reward model; load it with llamaforge.align.reward.load_reward_model")
    assign_state_dict(model, sd, Path(path) / WEIGHTS, device, dtype)
    return model


def save_native(model: torch.nn.Module, path: str | Path, tokenizer: Any = None, kind: str = "lm",
                extra_tensors: dict[str, torch.Tensor] | None = None, metadata: dict[str, Any] | None = None,
                args: ModelArgs | None = None) -> Path:
    """Write a native checkpoint directory atomically (temp dir, then rename)."""
    args = args or model.args
    sd = state_dict_cpu(model) if isinstance(model, torch.nn.Module) else dict(model)
    sd.update({k: v.detach().cpu().contiguous() for k, v in (extra_tensors or {}).items()})
    dtypes = {dtype_name(v.dtype) for v in sd.values() if v.is_floating_point()}
    with atomic_dir(path) as tmp:
        save_file(sd, str(tmp / WEIGHTS), metadata={"format": "pt"})
        atomic_write_json(tmp / CONFIG, {
            "format_version": FORMAT_VERSION,
            "kind": kind,
            "model_args": args.to_dict(),
            "dtype": sorted(dtypes)[0] if len(dtypes) == 1 else sorted(dtypes),
            **(metadata or {}),
        })
        copy_tokenizer(tokenizer, tmp)
    return Path(path)


def copy_tokenizer(tokenizer: Any, directory: Path) -> None:
    """Put tokenizer.model into `directory` from a Tokenizer, a path to the file, or a directory."""
    if tokenizer is None:
        return
    if hasattr(tokenizer, "model_proto"):
        (directory / "tokenizer.model").write_bytes(tokenizer.model_proto)
        return
    src = Path(tokenizer)
    if src.is_dir():
        src = src / "tokenizer.model"
    if src.is_file():
        shutil.copyfile(src, directory / "tokenizer.model")
