"""Checkpoint formats: logit parity with transformers both ways, round trips, clear errors."""

import json

import pytest
import torch

from llamaforge.checkpoint import detect_format, load_model, save_model
from llamaforge.errors import UserError
from llamaforge.model.args import ModelArgs
from llamaforge.model.llama import Transformer

transformers = pytest.importorskip("transformers")

CONFIGS = {
    "gqa": dict(dim=64, n_layers=2, n_heads=8, n_kv_heads=2, vocab_size=212, multiple_of=32, max_seq_len=128),
    "mha": dict(dim=96, n_layers=3, n_heads=4, n_kv_heads=None, vocab_size=151, multiple_of=16, max_seq_len=128,
                norm_eps=1e-6, rope_theta=500000.0),
}


def _model(cfg, seed=0):
    torch.manual_seed(seed)
    m = Transformer(ModelArgs(**cfg))
    m.init_weights()
    # Non-trivial norms so a mix-up of the two RMSNorms of a block would show.
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    return m.eval()


def _hf_from_config(cfg, seed=1):
    a = ModelArgs(**cfg)
    torch.manual_seed(seed)
    conf = transformers.LlamaConfig(
        hidden_size=a.dim, intermediate_size=a.hidden_dim, num_hidden_layers=a.n_layers,
        num_attention_heads=a.n_heads, num_key_value_heads=a.n_kv_heads, vocab_size=a.vocab_size,
        max_position_embeddings=a.max_seq_len, rms_norm_eps=a.norm_eps, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": a.rope_theta})
    hf = transformers.LlamaForCausalLM(conf).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0, 0.05) if p.dim() > 1 else p.uniform_(0.5, 1.5)
    return hf


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_ours_to_hf_logits(tmp_path, name):
    m = _model(CONFIGS[name])
    save_model(m, tmp_path / "hf", format="hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    toks = torch.randint(0, m.args.vocab_size, (2, 33))
    with torch.no_grad():
        assert (hf(toks).logits - m(toks)).abs().max().item() < 1e-4


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_hf_to_ours_logits(tmp_path, name):
    hf = _hf_from_config(CONFIGS[name])
    hf.save_pretrained(tmp_path / "hf")
    assert detect_format(tmp_path / "hf") == "hf"
    m = load_model(tmp_path / "hf")
    assert m.args.hidden_dim == hf.config.intermediate_size
    toks = torch.randint(0, m.args.vocab_size, (2, 40))
    with torch.no_grad():
        assert (hf(toks).logits - m(toks)).abs().max().item() < 1e-4


def test_round_trip_hf_native_meta_hf(tmp_path, tokenizer_path):
    cfg = CONFIGS["gqa"]
    hf = _hf_from_config(cfg)
    hf.save_pretrained(tmp_path / "hf0")
    m = load_model(tmp_path / "hf0")
    save_model(m, tmp_path / "native", tokenizer=tokenizer_path)
    assert detect_format(tmp_path / "native") == "native"
    save_model(load_model(tmp_path / "native"), tmp_path / "meta", format="meta", shards=2,
               tokenizer=tmp_path / "native")
    assert sorted(p.name for p in (tmp_path / "meta").glob("consolidated.*.pth")) == [
        "consolidated.00.pth", "consolidated.01.pth"]
    # Each shard holds half of a column-parallel and half of a row-parallel weight.
    shard = torch.load(tmp_path / "meta" / "consolidated.00.pth", weights_only=True)
    assert shard["layers.0.attention.wq.weight"].shape == (32, 64)
    assert shard["layers.0.attention.wo.weight"].shape == (64, 32)
    assert shard["tok_embeddings.weight"].shape == (212, 32)
    save_model(load_model(tmp_path / "meta"), tmp_path / "hf1", format="hf", shards=3)
    assert (tmp_path / "hf1" / "model.safetensors.index.json").is_file()
    assert (tmp_path / "hf1" / "tokenizer.model").is_file()
    hf1 = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf1").eval()
    toks = torch.randint(0, 212, (2, 20))
    with torch.no_grad():
        assert (hf1(toks).logits - hf(toks).logits).abs().max().item() < 1e-5


def test_meta_llama2_params_json_conventions(tmp_path):
    """vocab_size -1 means 'from the tensors'; LLaMA-1's rope.freqs is ignored."""
    m = _model(CONFIGS["mha"])
    save_model(m, tmp_path / "meta", format="meta", shards=1)
    p = json.loads((tmp_path / "meta" / "params.json").read_text())
    p["vocab_size"] = -1
    del p["max_seq_len"]
    (tmp_path / "meta" / "params.json").write_text(json.dumps(p))
    sd = torch.load(tmp_path / "meta" / "consolidated.00.pth", weights_only=True)
    sd["rope.freqs"] = torch.zeros(12)
    torch.save(sd, tmp_path / "meta" / "consolidated.00.pth")
    m2 = load_model(tmp_path / "meta")
    assert m2.args.vocab_size == 151
    assert m2.args.max_seq_len == 2048  # eps 1e-6: a LLaMA-1 checkpoint
    toks = torch.randint(0, 151, (1, 10))
    with torch.no_grad():
        torch.testing.assert_close(m2(toks), m(toks))


def test_hf_tokenizer_loads_with_transformers(tmp_path, tokenizer):
    pytest.importorskip("google.protobuf")
    m = _model(dict(CONFIGS["gqa"], vocab_size=tokenizer.n_words))
    save_model(m, tmp_path / "hf", format="hf", tokenizer=tokenizer)
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "def main():\n    print('hi 42')"
    assert hf_tok(text)["input_ids"] == tokenizer.encode(text)


def test_loading_uses_assign_without_copies(tmp_path):
    m = _model(CONFIGS["gqa"])
    save_model(m, tmp_path / "n")
    m2 = load_model(tmp_path / "n", dtype="bfloat16")
    assert m2.output.weight.dtype == torch.bfloat16
    assert not any(p.is_meta for p in m2.parameters())
    assert m2.freqs_cos.dtype == torch.float32 and not m2.freqs_cos.is_meta


def test_missing_tensor_is_named(tmp_path):
    from safetensors.torch import load_file, save_file

    m = _model(CONFIGS["gqa"])
    save_model(m, tmp_path / "n")
    sd = load_file(tmp_path / "n" / "model.safetensors")
    del sd["layers.1.feed_forward.w2.weight"]
    save_file(sd, tmp_path / "n" / "model.safetensors")
    with pytest.raises(UserError, match=r"layers\.1\.feed_forward\.w2\.weight.*missing.*\[64, 192\]"):
        load_model(tmp_path / "n")


def test_misshaped_tensor_is_named(tmp_path):
    m = _model(CONFIGS["gqa"])
    save_model(m, tmp_path / "n")
    cfg = json.loads((tmp_path / "n" / "llamaforge.json").read_text())
    cfg["model_args"]["n_kv_heads"] = 4
    (tmp_path / "n" / "llamaforge.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match=r"layers\.0\.attention\.wk\.weight.*shape \[16, 64\], expected \[32, 64\]"):
        load_model(tmp_path / "n")


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a checkpoint"):
        load_model(tmp_path / "empty")


def test_meta_pickles_are_loaded_safely(tmp_path):
    """A consolidated.00.pth carrying arbitrary objects is refused (weights_only=True)."""
    m = _model(CONFIGS["gqa"])
    save_model(m, tmp_path / "meta", format="meta")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    sd = torch.load(tmp_path / "meta" / "consolidated.00.pth", weights_only=True)
    sd["evil"] = Evil()
    torch.save(sd, tmp_path / "meta" / "consolidated.00.pth")
    with pytest.raises(Exception, match="(?i)weights.only|unsupported|global"):
        load_model(tmp_path / "meta")


def test_convert_cli(tmp_path, tiny_checkpoint):
    from llamaforge.cli import main

    assert main(["convert", str(tiny_checkpoint), str(tmp_path / "hf"), "--to", "hf"]) == 0
    assert main(["convert", str(tmp_path / "hf"), str(tmp_path / "meta"), "--to", "meta", "--shards", "2"]) == 0
    assert main(["convert", str(tmp_path / "meta"), str(tmp_path / "back"), "--to", "native"]) == 0
    a, b = load_model(tiny_checkpoint), load_model(tmp_path / "back")
    toks = torch.randint(0, a.args.vocab_size, (1, 12))
    with torch.no_grad():
        assert (a(toks) - b(toks)).abs().max().item() < 1e-5
    assert (tmp_path / "back" / "tokenizer.model").read_bytes() == (tiny_checkpoint / "tokenizer.model").read_bytes()
