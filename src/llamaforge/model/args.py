"""ModelArgs and the named presets of the LLaMA / Llama 2 family (PAPERS.md, Architecture)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from llamaforge.errors import UserError


@dataclass
class ModelArgs:
    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int | None = None  # None: multi-head attention (n_kv_heads = n_heads)
    vocab_size: int = 32000
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_seq_len: int = 4096

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        self.validate()

    def validate(self) -> None:
        if self.dim % self.n_heads:
            raise UserError(f"model.dim {self.dim} must be divisible by model.n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise UserError(f"model.n_heads {self.n_heads} must be divisible by model.n_kv_heads {self.n_kv_heads}")
        if self.head_dim % 2:
            raise UserError(f"head_dim {self.head_dim} must be even for rotary embeddings")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def hidden_dim(self) -> int:
        """SwiGLU width: int(2/3 * 4d), times ffn_dim_multiplier, rounded up to multiple_of."""
        h = int(2 * 4 * self.dim / 3)
        if self.ffn_dim_multiplier is not None:
            h = int(self.ffn_dim_multiplier * h)
        return self.multiple_of * ((h + self.multiple_of - 1) // self.multiple_of)

    # -- counts -------------------------------------------------------------------------------
    def num_params(self, include_embedding: bool = True) -> int:
        """Parameter count as Hugging Face counts it (untied head, no rope buffers)."""
        d, kv = self.dim, self.n_kv_heads * self.head_dim
        attn = d * d * 2 + d * kv * 2  # wq, wo, wk, wv
        ffn = 3 * d * self.hidden_dim
        per_layer = attn + ffn + 2 * d  # two RMSNorm weights
        total = self.n_layers * per_layer + d + self.vocab_size * d  # final norm, output head
        return total + (self.vocab_size * d if include_embedding else 0)

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token: 6 * N + 12 * L * d * T (PaLM appendix B; torchtitan).

        N is the parameter count without the input embedding (a lookup, not a matmul); the second
        term is attention's QK^T and AV matmuls (forward + backward) at sequence length T. The 6N
        part alone is what LLaMA's "6N" MFU uses; `mfu` reports say which count they used.
        """
        return 6.0 * self.num_params(include_embedding=False) + 12.0 * self.n_layers * self.dim * seq_len

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelArgs:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserError(f"unknown model argument(s) {unknown}; valid: {sorted(names)}")
        return cls(**d)

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> ModelArgs:
        if name not in PRESETS:
            raise UserError(f"unknown model preset {name!r}; presets: {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


PRESETS: dict[str, dict[str, Any]] = {
    # LLaMA 1 (Table 2 of the LLaMA paper); reference code used norm_eps 1e-6, context 2048.
    "llama1-7b": dict(dim=4096, n_layers=32, n_heads=32, norm_eps=1e-6, max_seq_len=2048),
    "llama1-13b": dict(dim=5120, n_layers=40, n_heads=40, norm_eps=1e-6, max_seq_len=2048),
    "llama1-33b": dict(dim=6656, n_layers=60, n_heads=52, norm_eps=1e-6, max_seq_len=2048),
    "llama1-65b": dict(dim=8192, n_layers=80, n_heads=64, norm_eps=1e-6, max_seq_len=2048),
    # Llama 2 (context 4096, eps 1e-5); 34B in the released (Code Llama) shape with GQA.
    "llama2-7b": dict(dim=4096, n_layers=32, n_heads=32),
    "llama2-13b": dict(dim=5120, n_layers=40, n_heads=40),
    "llama2-34b": dict(dim=8192, n_layers=48, n_heads=64, n_kv_heads=8),
    "llama2-70b": dict(dim=8192, n_layers=80, n_heads=64, n_kv_heads=8, multiple_of=4096, ffn_dim_multiplier=1.3),
    # TinyLlama 1.1B: the Llama 2 architecture at ~1B, our GPU check model.
    "tinyllama-1.1b": dict(dim=2048, n_layers=22, n_heads=32, n_kv_heads=4, max_seq_len=2048),
    # CPU sizes. vocab_size is usually replaced by the tokenizer's.
    "tiny-1m": dict(dim=128, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=4096, multiple_of=32, max_seq_len=1024),
    "tiny-15m": dict(dim=288, n_layers=6, n_heads=6, n_kv_heads=6, vocab_size=16000, multiple_of=32,
                     max_seq_len=1024),
    "tiny-110m": dict(dim=768, n_layers=12, n_heads=12, n_kv_heads=12, vocab_size=16000, multiple_of=32,
                      max_seq_len=1024),
}
