"""llamaforge: the LLaMA / Llama 2 system in one package.

The public names are imported lazily so that `llamaforge --help` does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "ModelArgs": "llamaforge.model.args",
    "Transformer": "llamaforge.model.llama",
    "Tokenizer": "llamaforge.tokenizer",
    "load_model": "llamaforge.checkpoint",
    "save_model": "llamaforge.checkpoint",
    "generate": "llamaforge.generate",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'llamaforge' has no attribute {name!r}")
