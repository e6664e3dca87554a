"""The network: preset parameter counts (PAPERS.md table), FLOPs formula, KV cache, meta device."""

import pytest
import torch

from llamaforge.model.args import PRESETS, ModelArgs
from llamaforge.model.cache import KVCache
from llamaforge.model.llama import Transformer, causal_block_mask

PAPER_COUNTS = {
    "llama2-7b": 6_738_415_616,
    "llama2-13b": 13_015_864_320,
    "llama2-70b": 68_976_648_192,
    "llama2-34b": 33_743_970_304,
    "llama1-33b": 32_528_943_616,
    "llama1-65b": 65_285_660_672,
    "tinyllama-1.1b": 1_100_048_384,
}


@pytest.mark.parametrize("name", sorted(PAPER_COUNTS))
def test_preset_param_counts_match_papers(name):
    assert ModelArgs.from_name(name).num_params() == PAPER_COUNTS[name]


def test_hidden_dims_match_released_shapes():
    assert ModelArgs.from_name("llama2-7b").hidden_dim == 11008
    assert ModelArgs.from_name("llama2-13b").hidden_dim == 13824
    assert ModelArgs.from_name("llama2-70b").hidden_dim == 28672
    assert ModelArgs.from_name("llama2-34b").hidden_dim == 22016


def test_meta_device_counts_equal_formula():
    # A 70B model is built without allocating memory, and its real parameter count is the formula's.
    with torch.device("meta"):
        m = Transformer(ModelArgs.from_name("llama2-70b"))
    assert m.num_params() == PAPER_COUNTS["llama2-70b"]
    assert m.output.weight.is_meta


def test_tiny_presets_fit_multiturn_chats():
    for name in ("tiny-1m", "tiny-15m", "tiny-110m"):
        assert PRESETS[name]["max_seq_len"] >= 1024


def test_flops_per_token_formula():
    a = ModelArgs.from_name("llama2-7b")
    n = a.num_params() - a.vocab_size * a.dim
    assert a.flops_per_token(4096) == 6 * n + 12 * a.n_layers * a.dim * 4096


def test_bad_shapes_raise_clear_errors():
    from llamaforge.errors import UserError

    with pytest.raises(UserError, match="n_kv_heads"):
        ModelArgs(dim=64, n_heads=4, n_kv_heads=3)
    with pytest.raises(UserError, match="unknown model preset"):
        ModelArgs.from_name("llama9-1t")


def _tiny(n_kv=2, seed=0):
    torch.manual_seed(seed)
    m = Transformer(ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=n_kv, vocab_size=97, multiple_of=16,
                              max_seq_len=128))
    m.init_weights()
    return m.eval()


@pytest.mark.parametrize("n_kv", [1, 2, 4])
def test_kv_cache_matches_full_forward_for_ragged_batch(n_kv):
    m = _tiny(n_kv)
    lens = [17, 9, 4]
    total = 24
    seqs = torch.randint(0, 97, (3, total))
    with torch.no_grad():
        full = m(seqs)
        cache = KVCache.for_model(m, 3, 32)
        lmax = max(lens)
        pre = m(seqs[:, :lmax], input_pos=torch.arange(lmax), cache=cache)
        for b, n in enumerate(lens):
            torch.testing.assert_close(pre[b, :n], full[b, :n], atol=1e-5, rtol=0)
        # Each row decodes from its own length: token at position lens[b] + t.
        pos = torch.tensor(lens)
        for _ in range(total - lmax):
            step_tok = seqs[torch.arange(3), pos].unsqueeze(1)
            out = m(step_tok, input_pos=pos.unsqueeze(1), cache=cache)
            torch.testing.assert_close(out[:, 0], full[torch.arange(3), pos], atol=1e-5, rtol=0)
            pos = pos + 1


def test_block_mask_isolates_packed_samples():
    m = _tiny()
    a, b = torch.randint(0, 97, (1, 7)), torch.randint(0, 97, (1, 5))
    packed = torch.cat([a, b], 1)
    doc = torch.tensor([[0] * 7 + [1] * 5])
    pos = torch.cat([torch.arange(7), torch.arange(5)]).unsqueeze(0)
    with torch.no_grad():
        out = m(packed, input_pos=pos, mask=causal_block_mask(doc))
        torch.testing.assert_close(out[:, :7], m(a), atol=1e-5, rtol=0)
        torch.testing.assert_close(out[:, 7:], m(b), atol=1e-5, rtol=0)


def test_causal_no_future_leak():
    m = _tiny()
    x = torch.randint(0, 97, (1, 10))
    y = x.clone()
    y[0, 6:] = (y[0, 6:] + 1) % 97
    with torch.no_grad():
        torch.testing.assert_close(m(x)[0, :6], m(y)[0, :6])
        assert (m(x)[0, 6:] - m(y)[0, 6:]).abs().max() > 1e-4


def test_model_has_no_distributed_code():
    import inspect

    import llamaforge.model.llama as mod

    assert "torch.distributed" not in inspect.getsource(mod)
