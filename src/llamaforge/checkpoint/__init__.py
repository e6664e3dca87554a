"""Load and save models in the native, Meta and Hugging Face layouts (detected by their files)."""

from __future__ import annotations

from pathlib import Path

import torch

from llamaforge.checkpoint.common import parse_dtype
from llamaforge.errors import UserError

FORMATS = ("native", "meta", "hf")


def detect_format(path: str | Path) -> str:
    p = Path(path)
    if not p.exists():
        raise UserError(f"checkpoint {p} not found")
    if p.is_file():
        raise UserError(f"{p} is a file; give the checkpoint directory")
    if (p / "llamaforge.json").is_file():
        return "native"
    if (p / "params.json").is_file():
        return "meta"
    if (p / "config.json").is_file():
        return "hf"
    if (p / "final" / "llamaforge.json").is_file():
        raise UserError(f"{p} looks like a training run; load {p / 'final'}")
    raise UserError(f"{p}: not a checkpoint (expected llamaforge.json, params.json or config.json)")


def load_model(path: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None,
               **kwargs):
    """Load a Transformer from a native, Meta or Hugging Face checkpoint directory."""
    fmt = detect_format(path)
    dtype = parse_dtype(dtype)
    if fmt == "native":
        from llamaforge.checkpoint.native import load_native

        model = load_native(path, device, dtype)
    elif fmt == "meta":
        from llamaforge.checkpoint.meta import load_meta

        model = load_meta(path, device, dtype, **kwargs)
    else:
        from llamaforge.checkpoint.hf import load_hf

        model = load_hf(path, device, dtype)
    # Remembered so that save_model carries the tokenizer along by default.
    model.checkpoint_path = Path(path)
    return model


def save_model(model: torch.nn.Module, path: str | Path, format: str = "native", shards: int = 1,
               tokenizer=None) -> Path:
    """Save `model` to `path` (written to a temp dir, then renamed). `tokenizer`: Tokenizer or path.

    Without `tokenizer`, the tokenizer.model of the checkpoint the model was loaded from travels along.
    """
    if tokenizer is None and getattr(model, "checkpoint_path", None) is not None:
        src = Path(model.checkpoint_path) / "tokenizer.model"
        tokenizer = src if src.is_file() else None
    if format == "native":
        from llamaforge.checkpoint.native import save_native

        return save_native(model, path, tokenizer=tokenizer)
    if format == "meta":
        from llamaforge.checkpoint.meta import save_meta

        return save_meta(model, path, shards=shards, tokenizer=tokenizer)
    if format == "hf":
        from llamaforge.checkpoint.hf import save_hf

        return save_hf(model, path, shards=shards, tokenizer=tokenizer)
    raise UserError(f"unknown format {format!r}; use one of {', '.join(FORMATS)}")


def find_tokenizer(path: str | Path):
    """The Tokenizer stored beside a checkpoint, or None."""
    f = Path(path) / "tokenizer.model"
    if f.is_file():
        from llamaforge.tokenizer import Tokenizer

        return Tokenizer(f)
    return None


__all__ = ["load_model", "save_model", "detect_format", "find_tokenizer", "FORMATS"]
