"""Decode-layout weight copies (sampling.DecodeWeights, decode_forward): same results, never stale."""

from __future__ import annotations

import copy

import pytest
import torch

from llamaforge.generate import BatchDecoder, generate_ids
from llamaforge.model.args import ModelArgs
from llamaforge.model.cache import SlotCache
from llamaforge.model.llama import Transformer
from llamaforge.sampling import DecodeWeights, SamplingParams, decode_forward


def greedy_rows(model, prompts, n):
    """Greedy continuations from full forwards (no cache, no copies)."""
    out = []
    with torch.no_grad():
        for p in prompts:
            x, row = torch.tensor([p]), []
            for _ in range(n):
                t = int(model(x)[0, -1].argmax())
                row.append(t)
                x = torch.cat([x, torch.tensor([[t]])], 1)
            out.append(row)
    return out


def decode(dec, prompts, n):
    for i, p in enumerate(prompts):
        dec.add(i, p, SamplingParams(max_new_tokens=n, stop_ids=[]), text=False)
    got = {i: [] for i in range(len(prompts))}
    while dec.busy:
        for ev in dec.step():
            got[ev.rid].append(ev.token)
    return [got[i] for i in range(len(prompts))]


@pytest.fixture
def model(tiny_model):
    return copy.deepcopy(tiny_model)  # tests below change weights


@pytest.fixture(scope="module")
def prompts(tokenizer):
    return [tokenizer.encode(t) for t in ("def main(", "import os\nclass A:", "x")]


def test_modes_by_device_size_and_model_type(model):
    assert DecodeWeights(model).mode == "all"
    assert DecodeWeights(model, "head").mode == "head" and DecodeWeights(model, "none").get() == (None, None, False)

    class Small(DecodeWeights):
        ALL_COPIES_MAX_BYTES = 1000

    assert Small(model).mode == "head"

    class Custom(Transformer):  # decode_forward mirrors Transformer.forward only
        pass

    assert DecodeWeights(Custom(model.args), "all").mode == "head"


@pytest.mark.parametrize("rows", [1, 5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_head_copy_matches_the_output_layer(model, dtype, rows):
    model.to(dtype)
    w = DecodeWeights(model)
    packed = w.get(rows)[2]
    assert packed == ((dtype == torch.bfloat16 or rows > 1) and torch.backends.mkldnn.is_available())
    h = torch.randn(rows, model.args.dim, dtype=dtype)
    with torch.no_grad():
        ref = model.output(h).float()
    torch.testing.assert_close(w.logits(h), ref, atol=1e-5 if dtype == torch.float32 else 2e-2, rtol=1e-5)


@pytest.mark.parametrize("n_kv, rows", [(4, 1), (2, 1), (2, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_forward_matches_the_model(n_kv, rows, dtype):
    torch.manual_seed(0)
    m = Transformer(ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=n_kv, vocab_size=97, multiple_of=16,
                              max_seq_len=64)).to(dtype)
    m.init_weights()
    w = DecodeWeights(m, "all")
    _, layers, packed = w.get(rows)
    caches = [SlotCache.for_model(m, rows, 32) for _ in range(2)]
    lens = torch.tensor([9, 4, 6])[:rows]
    seqs = torch.randint(0, 97, (rows, 16))
    with torch.no_grad():
        for c in caches:  # prefill every row to its length through the model's own forward
            c.prefill = True
            m(seqs[:, :9], input_pos=torch.arange(9), cache=c)
            c.prefill = False
        for step in range(6):
            pos = (lens + step).unsqueeze(1)
            tok = seqs[torch.arange(rows), pos[:, 0]].unsqueeze(1)
            ref = m(tok, input_pos=pos, cache=caches[0], return_hidden=True)
            got = decode_forward(m, tok, pos, caches[1], layers, packed)
            tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=3e-2, rtol=3e-2)
            torch.testing.assert_close(got, ref, **tol)


def test_decoding_with_copies_equals_decoding_without(model, prompts):
    kw = dict(max_new_tokens=10, temperature=0.8, seed=4, logprobs=True)
    runs = [generate_ids(model, prompts, decoder=BatchDecoder(model, None, 3, 64, sync_every=4, decode_weights=m),
                         **kw) for m in ("none", "head", "all")]
    for g in runs[1:]:
        assert torch.equal(g.tokens, runs[0].tokens)
        torch.testing.assert_close(g.logprobs, runs[0].logprobs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("update, param", [("optimizer step", "layers.0.attention.wo.weight"),
                                           ("load_state_dict", "output.weight"),
                                           ("replace .data", "layers.1.feed_forward.w2.weight"),
                                           ("write through .data", "layers.1.attention.wv.weight"),
                                           ("write through .data", "output.weight")])
def test_a_reused_decoder_decodes_with_updated_weights(model, prompts, param, update):
    """RLHF updates the policy between generation phases; a decoder kept across them must follow."""
    dec = BatchDecoder(model, None, max_batch=4, max_len=64)
    assert dec.weights.mode == "all"
    before = decode(dec, prompts, 6)
    assert before == greedy_rows(model, prompts, 6)
    w = model.get_parameter(param)
    new_w = torch.randn_like(w)  # much larger than the trained-scale weights: the tokens change
    if update == "optimizer step":
        opt = torch.optim.SGD([w], lr=1.0)
        w.grad = w.detach() - new_w
        opt.step()  # w <- new_w, in place
    elif update == "load_state_dict":
        model.load_state_dict({**model.state_dict(), param: new_w})
    elif update == "replace .data":
        w.data = new_w
    else:
        w.data.copy_(new_w)  # bypasses the version counter: generate_ids refreshes at every call
    if update == "write through .data":
        after = generate_ids(model, prompts, max_new_tokens=6, temperature=0, decoder=dec).tokens.tolist()
    else:
        after = decode(dec, prompts, 6)
    assert after == greedy_rows(model, prompts, 6)
    assert after != before


def test_the_copies_follow_an_in_place_update_mid_generation(model, prompts):
    dec = BatchDecoder(model, None, max_batch=1, max_len=64)
    dec.add(0, prompts[0], SamplingParams(max_new_tokens=8, stop_ids=[]), text=False)
    toks = [ev.token for ev in dec.step()] + [ev.token for ev in dec.step()]
    with torch.no_grad():
        model.output.weight.mul_(-1)
        model.layers["1"].feed_forward.w1.weight.mul_(2)
    nxt = dec.step()[0].token
    with torch.no_grad():
        ref = model(torch.tensor([prompts[0] + toks]))[0, -1].argmax().item()
    assert nxt == ref
