"""The LLaMA / Llama 2 network as a plain nn.Module (PAPERS.md, Architecture).

Pre-normalisation with RMSNorm, SwiGLU feed-forward, rotary embeddings in Meta's interleaved-pair
convention, grouped-query attention through scaled_dot_product_attention, untied output head.
Parameter names follow Meta's reference (`layers.0.attention.wq.weight`, ...), so Meta
checkpoints load without renaming. Parallelism, checkpointing, compile and precision are applied
from outside (train/parallel.py); nothing here knows about distributed training.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from llamaforge.model.args import ModelArgs
from llamaforge.model.cache import KVCache


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 as Meta's reference does, then return in the input's dtype.
        xf = x.float()
        out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return out.type_as(x) * self.weight

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


def rope_tables(head_dim: int, max_seq_len: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of position * theta^(-2i/d) for i < d/2, shape [max_seq_len, head_dim // 2], fp32."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float64) / head_dim))
    t = torch.arange(max_seq_len, device=device, dtype=torch.float64)
    freqs = torch.outer(t, inv)
    return freqs.cos().float(), freqs.sin().float()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (2i, 2i+1) of x [B, T, H, D] by cos/sin [B or 1, T, 1, D/2]."""
    xf = x.float().unflatten(-1, (-1, 2))
    x0, x1 = xf[..., 0], xf[..., 1]
    out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    return out.flatten(-2).type_as(x)


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads = args.n_heads
        self.n_kv_heads = args.n_kv_heads
        self.head_dim = args.head_dim
        self.wq = nn.Linear(args.dim, args.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(args.dim, self.n_kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(args.n_heads * self.head_dim, args.dim, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: KVCache | None = None,
        layer: int = 0,
        input_pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        bsz, seqlen, _ = x.shape
        # -1 heads: under tensor parallelism each rank holds a slice of the heads.
        q = self.wq(x).view(bsz, seqlen, -1, self.head_dim)
        k = self.wk(x).view(bsz, seqlen, -1, self.head_dim)
        v = self.wv(x).view(bsz, seqlen, -1, self.head_dim)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, D]
        if cache is not None:
            k, v = cache.update(layer, input_pos, k, v)
        # Grouped-query attention inside SDPA: no copy of the keys and values (with a KV cache,
        # repeat_interleave copied the whole cache at every decode step).
        gqa = q.shape[1] != k.shape[1]
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        out = out.transpose(1, 2).reshape(bsz, seqlen, -1)
        return self.wo(out)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim, bias=False)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, layer_id: int, args: ModelArgs):
        super().__init__()
        self.layer_id = layer_id
        self.attention = Attention(args)
        self.feed_forward = FeedForward(args.dim, args.hidden_dim)
        self.attention_norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, eps=args.norm_eps)

    def forward(self, x, cos, sin, mask, cache=None, input_pos=None):
        h = x + self.attention(self.attention_norm(x), cos, sin, mask, cache, self.layer_id, input_pos)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    """tokens [B, T] -> logits [B, T, vocab] (or the final hidden states with return_hidden=True).

    Positions: by default 0..T-1. `input_pos` ([T] or [B, T]) gives each token its own position
    (packed samples whose positions restart; batched decoding where each row has its own length).
    `mask` (bool, [B or 1, 1, T, S], True = may attend) replaces plain causal attention.
    With a `cache` (model/cache.py) keys and values are written at `input_pos` and attention runs
    over the cache, each query seeing the cached keys at positions <= its own.
    """

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleDict({str(i): TransformerBlock(i, args) for i in range(args.n_layers)})
        self.norm = RMSNorm(args.dim, eps=args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        cos, sin = rope_tables(args.head_dim, args.max_seq_len, args.rope_theta,
                               device=self.output.weight.device)
        self.register_buffer("freqs_cos", cos, persistent=False)
        self.register_buffer("freqs_sin", sin, persistent=False)

    # -- initialisation -------------------------------------------------------------------------
    @torch.no_grad()
    def init_weights(self, std: float = 0.02, buffer_device: torch.device | str | None = None) -> None:
        """Random init for pretraining (also after building on the meta device and `to_empty`).

        Normal(0, 0.02) everywhere, with the residual projections (wo, w2) scaled by
        1/sqrt(2 * n_layers) as in GPT-2 and torchtitan, so the residual stream does not grow
        with depth. Rotary tables are recomputed (they are not saved in checkpoints).
        """
        self.reset_rope(buffer_device)
        nn.init.normal_(self.tok_embeddings.weight, std=1.0)
        out_std = std / math.sqrt(2 * self.args.n_layers)
        for block in self.layers.values():
            for lin in (block.attention.wq, block.attention.wk, block.attention.wv, block.feed_forward.w1,
                        block.feed_forward.w3):
                nn.init.trunc_normal_(lin.weight, std=std, a=-3 * std, b=3 * std)
            for lin in (block.attention.wo, block.feed_forward.w2):
                nn.init.trunc_normal_(lin.weight, std=out_std, a=-3 * out_std, b=3 * out_std)
            block.attention_norm.reset_parameters()
            block.ffn_norm.reset_parameters()
        self.norm.reset_parameters()
        final_std = self.args.dim ** -0.5
        nn.init.trunc_normal_(self.output.weight, std=final_std, a=-3 * final_std, b=3 * final_std)

    @torch.no_grad()
    def reset_rope(self, device: torch.device | str | None = None) -> None:
        device = device or self.freqs_cos.device
        if torch.device(device).type == "meta":
            device = "cpu"
        cos, sin = rope_tables(self.args.head_dim, self.args.max_seq_len, self.args.rope_theta, device=device)
        self.freqs_cos, self.freqs_sin = cos, sin

    def num_params(self, include_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n if include_embedding else n - self.tok_embeddings.weight.numel()

    # -- forward --------------------------------------------------------------------------------
    def forward(
        self,
        tokens: torch.Tensor,
        input_pos: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        return_hidden: bool = False,
    ) -> torch.Tensor:
        bsz, seqlen = tokens.shape
        if input_pos is None:
            if cache is not None:
                raise ValueError("decoding with a KV cache needs input_pos")
            if seqlen > self.args.max_seq_len:
                raise ValueError(f"sequence length {seqlen} exceeds model.max_seq_len {self.args.max_seq_len}")
            cos = self.freqs_cos[:seqlen].view(1, seqlen, 1, -1)
            sin = self.freqs_sin[:seqlen].view(1, seqlen, 1, -1)
            pos = None
        else:
            pos = input_pos if input_pos.dim() == 2 else input_pos.unsqueeze(0).expand(bsz, -1)
            cos = self.freqs_cos[pos].unsqueeze(2)
            sin = self.freqs_sin[pos].unsqueeze(2)
            if cache is not None and mask is None:
                mask = cache.causal_mask(pos)
        h = self.tok_embeddings(tokens)
        for layer in self.layers.values():
            h = layer(h, cos, sin, mask, cache, pos)
        h = self.norm(h)
        if return_hidden:
            return h
        return self.output(h)


def causal_block_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """Block-diagonal causal mask [B, 1, T, T] from per-token document ids [B, T] (isolated packing)."""
    t = doc_ids.shape[1]
    same = doc_ids.unsqueeze(2) == doc_ids.unsqueeze(1)
    causal = torch.ones(t, t, dtype=torch.bool, device=doc_ids.device).tril()
    return (same & causal).unsqueeze(1)
