"""Hugging Face's layout: config.json + model*.safetensors, LlamaForCausalLM names.

Meta rotates interleaved pairs (2i, 2i+1); transformers' rotate_half rotates halves (i, i + d/2).
So wq and wk rows are permuted per head on the way to HF (PAPERS.md), and back on the way in.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from llamaforge.checkpoint.common import assign_state_dict, build_on_meta, dtype_name, state_dict_cpu
from llamaforge.checkpoint.native import copy_tokenizer
from llamaforge.errors import UserError
from llamaforge.io import atomic_dir
from llamaforge.model.args import ModelArgs

_LAYER = {
    "attention.wq": "self_attn.q_proj", "attention.wk": "self_attn.k_proj", "attention.wv": "self_attn.v_proj",
    "attention.wo": "self_attn.o_proj", "feed_forward.w1": "mlp.gate_proj", "feed_forward.w3": "mlp.up_proj",
    "feed_forward.w2": "mlp.down_proj", "attention_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}
_TOP = {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
        "output.weight": "lm_head.weight"}


def to_hf_name(name: str) -> str:
    if name in _TOP:
        return _TOP[name]
    _, i, rest = name.split(".", 2)
    mod, param = rest.rsplit(".", 1)
    return f"model.layers.{i}.{_LAYER[mod]}.{param}"


def from_hf_name(name: str) -> str | None:
    for ours, theirs in _TOP.items():
        if name == theirs:
            return ours
    if not name.startswith("model.layers."):
        return None
    _, _, i, rest = name.split(".", 3)
    mod, param = rest.rsplit(".", 1)
    for ours, theirs in _LAYER.items():
        if mod == theirs:
            return f"layers.{i}.{ours}.{param}"
    return None


def permute_to_hf(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    rows, dim = w.shape
    hd = rows // n_heads
    return w.view(n_heads, hd // 2, 2, dim).transpose(1, 2).reshape(rows, dim)


def permute_from_hf(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    rows, dim = w.shape
    hd = rows // n_heads
    return w.view(n_heads, 2, hd // 2, dim).transpose(1, 2).reshape(rows, dim)


def hf_config(args: ModelArgs, dtype: torch.dtype) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": args.dim, "intermediate_size": args.hidden_dim, "num_hidden_layers": args.n_layers,
        "num_attention_heads": args.n_heads, "num_key_value_heads": args.n_kv_heads, "head_dim": args.head_dim,
        "vocab_size": args.vocab_size, "max_position_embeddings": args.max_seq_len, "rms_norm_eps": args.norm_eps,
        # transformers 5 reads rope_parameters; older readers read rope_theta.
        "rope_theta": args.rope_theta, "rope_parameters": {"rope_type": "default", "rope_theta": args.rope_theta},
        "hidden_act": "silu", "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": False,
        "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": dtype_name(dtype), "initializer_range": 0.02,
        "llamaforge": {"multiple_of": args.multiple_of, "ffn_dim_multiplier": args.ffn_dim_multiplier},
    }


def args_from_hf(cfg: dict, source: Path) -> ModelArgs:
    try:
        if cfg.get("model_type", "llama") not in ("llama", "mistral"):
            raise UserError(f"{source}: model_type {cfg.get('model_type')!r} is not a Llama model")
        if cfg.get("tie_word_embeddings"):
            raise UserError(f"{source}: tied embeddings are not part of the Llama architecture")
        dim, n_heads = cfg["hidden_size"], cfg["num_attention_heads"]
        theta = cfg.get("rope_theta") or (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0)
        args = ModelArgs(dim=dim, n_layers=cfg["num_hidden_layers"], n_heads=n_heads,
                         n_kv_heads=cfg.get("num_key_value_heads", n_heads), vocab_size=cfg["vocab_size"],
                         norm_eps=cfg.get("rms_norm_eps", 1e-5), rope_theta=theta,
                         max_seq_len=cfg.get("max_position_embeddings", 4096))
        if "head_dim" in cfg and cfg["head_dim"] not in (None, dim // n_heads):
            raise UserError(f"{source}: head_dim {cfg['head_dim']} != hidden_size / num_attention_heads")
    except KeyError as e:
        raise UserError(f"{source}: field {e.args[0]!r} is missing") from None
    # HF stores the hidden size directly; find multiple_of/multiplier that reproduce it.
    extra = cfg.get("llamaforge") or {}
    args.multiple_of = extra.get("multiple_of", args.multiple_of)
    args.ffn_dim_multiplier = extra.get("ffn_dim_multiplier")
    want = cfg["intermediate_size"]
    if args.hidden_dim != want:
        args.multiple_of, args.ffn_dim_multiplier = want, None  # any multiple_of that rounds to `want`
        if args.hidden_dim != want:
            args.ffn_dim_multiplier = want / int(8 * dim / 3)
            args.multiple_of = 1
            while args.hidden_dim != want and args.ffn_dim_multiplier < 100:
                args.ffn_dim_multiplier += 1e-6
        if args.hidden_dim != want:
            raise UserError(f"{source}: cannot express intermediate_size {want} with the Llama rule")
    return args


def weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        wm = json.loads(index.read_text())["weight_map"]
        return [path / f for f in sorted(set(wm.values()))]
    files = sorted(path.glob("model*.safetensors"))
    if not files:
        raise UserError(f"{path}: no model*.safetensors files (pytorch_model.bin is not read: it is a pickle)")
    return files


def load_hf(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None):
    path = Path(path)
    cfg = json.loads((path / "config.json").read_text())
    args = args_from_hf(cfg, path / "config.json")
    sd = {}
    for f in weight_files(path):
        with safe_open(str(f), framework="pt", device="cpu") as st:
            for k in st.keys():
                ours = from_hf_name(k)
                if ours is None:
                    if k.endswith("rotary_emb.inv_freq"):
                        continue
                    raise UserError(f"{f}: unexpected tensor {k!r}")
                t = st.get_tensor(k)
                if ours.endswith("attention.wq.weight"):
                    t = permute_from_hf(t, args.n_heads)
                elif ours.endswith("attention.wk.weight"):
                    t = permute_from_hf(t, args.n_kv_heads)
                sd[ours] = t
    model = build_on_meta(args)
    assign_state_dict(model, sd, path, device, dtype)
    return model


def save_hf(model: torch.nn.Module, path: str | Path, shards: int = 1, tokenizer=None) -> Path:
    args: ModelArgs = model.args
    sd = {}
    for k, v in state_dict_cpu(model).items():
        if k.endswith("attention.wq.weight"):
            v = permute_to_hf(v, args.n_heads).contiguous()
        elif k.endswith("attention.wk.weight"):
            v = permute_to_hf(v, args.n_kv_heads).contiguous()
        sd[to_hf_name(k)] = v
    dtype = next(iter(sd.values())).dtype
    with atomic_dir(path) as tmp:
        names = list(sd)
        if shards <= 1:
            save_file(sd, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        else:
            weight_map = {}
            per = -(-len(names) // shards)
            for i in range(shards):
                fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
                chunk = {k: sd[k] for k in names[i * per:(i + 1) * per]}
                save_file(chunk, str(tmp / fname), metadata={"format": "pt"})
                weight_map.update({k: fname for k in chunk})
            total = sum(v.numel() * v.element_size() for v in sd.values())
            (tmp / "model.safetensors.index.json").write_text(
                json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
        (tmp / "config.json").write_text(json.dumps(hf_config(args, dtype), indent=2))
        (tmp / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}, indent=2))
        copy_tokenizer(tokenizer, tmp)
        if (tmp / "tokenizer.model").exists():
            (tmp / "tokenizer_config.json").write_text(json.dumps({
                "tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
                "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "legacy": True,
                "model_max_length": args.max_seq_len}, indent=2))
    return Path(path)
