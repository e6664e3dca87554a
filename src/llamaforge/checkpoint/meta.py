"""Meta's layout: params.json + consolidated.NN.pth, one shard per model-parallel rank.

Meta's fairscale layers split column-parallel weights (wq, wk, wv, w1, w3, output) on dim 0,
row-parallel ones (wo, w2) on dim 1, the ParallelEmbedding on dim 1 (the embedding dimension),
and replicate the norms. Any number of shards is merged here, so the world size never has to
equal the checkpoint's shard count.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from llamaforge.checkpoint.common import assign_state_dict, build_on_meta, state_dict_cpu
from llamaforge.checkpoint.native import copy_tokenizer
from llamaforge.errors import UserError
from llamaforge.io import atomic_dir
from llamaforge.model.args import ModelArgs

_DIM0 = re.compile(r"(attention\.w[qkv]|feed_forward\.w[13]|^output)\.weight$")
_DIM1 = re.compile(r"(attention\.wo|feed_forward\.w2|tok_embeddings)\.weight$")
IGNORED = ("rope.freqs",)  # LLaMA-1 shards carry the rotary table; it is recomputed


def split_dim(name: str) -> int | None:
    if _DIM0.search(name):
        return 0
    if _DIM1.search(name):
        return 1
    return None  # replicated (norms)


def shard_files(path: Path) -> list[Path]:
    files = sorted(path.glob("consolidated.*.pth"))
    if not files:
        raise UserError(f"{path}: no consolidated.NN.pth files")
    return files


def read_params(path: Path, vocab_from: int | None = None, max_seq_len: int | None = None) -> ModelArgs:
    f = path / "params.json"
    try:
        p = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{f}: cannot read ({e})") from None
    try:
        vocab = p.get("vocab_size", -1)
        if vocab is None or vocab <= 0:  # Llama 2 writes -1: take it from the tensors
            vocab = vocab_from
        norm_eps = p.get("norm_eps", 1e-5)
        return ModelArgs(
            dim=p["dim"], n_layers=p["n_layers"], n_heads=p["n_heads"], n_kv_heads=p.get("n_kv_heads"),
            vocab_size=vocab, multiple_of=p.get("multiple_of", 256), ffn_dim_multiplier=p.get("ffn_dim_multiplier"),
            norm_eps=norm_eps, rope_theta=p.get("rope_theta", 10000.0),
            # Not in params.json: LLaMA-1 (eps 1e-6) trained at 2048, Llama 2 at 4096.
            max_seq_len=max_seq_len or p.get("max_seq_len") or (2048 if norm_eps < 1e-5 else 4096),
        )
    except KeyError as e:
        raise UserError(f"{f}: field {e.args[0]!r} is missing") from None


def load_meta(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
              max_seq_len: int | None = None):
    path = Path(path)
    files = shard_files(path)
    shards = [torch.load(f, map_location="cpu", weights_only=True, mmap=True) for f in files]
    names = [k for k in shards[0] if k not in IGNORED]
    sd: dict[str, torch.Tensor] = {}
    for k in names:
        parts = []
        for f, s in zip(files, shards):
            if k not in s:
                raise UserError(f"{f}: tensor {k!r} is missing (present in {files[0].name})")
            parts.append(s[k])
        d = split_dim(k)
        sd[k] = parts[0] if d is None or len(parts) == 1 else torch.cat(parts, dim=d)
    vocab = sd["tok_embeddings.weight"].shape[0] if "tok_embeddings.weight" in sd else None
    model = build_on_meta(read_params(path, vocab, max_seq_len))
    assign_state_dict(model, sd, path, device, dtype)
    return model


def save_meta(model: torch.nn.Module, path: str | Path, shards: int = 1, tokenizer=None) -> Path:
    args: ModelArgs = model.args
    sd = state_dict_cpu(model)
    for k, v in sd.items():
        d = split_dim(k)
        if d is not None and v.shape[d] % shards:
            raise UserError(f"cannot split {k!r} (shape {list(v.shape)}) into {shards} shards along dim {d}")
    with atomic_dir(path) as tmp:
        for r in range(shards):
            part = {}
            for k, v in sd.items():
                d = split_dim(k)
                part[k] = v.clone() if d is None else v.chunk(shards, dim=d)[r].clone()
            torch.save(part, tmp / f"consolidated.{r:02d}.pth")
        params = {"dim": args.dim, "n_layers": args.n_layers, "n_heads": args.n_heads, "n_kv_heads": args.n_kv_heads,
                  "vocab_size": args.vocab_size, "multiple_of": args.multiple_of, "norm_eps": args.norm_eps,
                  "rope_theta": args.rope_theta, "max_seq_len": args.max_seq_len}
        if args.ffn_dim_multiplier is not None:
            params["ffn_dim_multiplier"] = args.ffn_dim_multiplier
        (tmp / "params.json").write_text(json.dumps(params, indent=2))
        copy_tokenizer(tokenizer, tmp)
    return Path(path)
