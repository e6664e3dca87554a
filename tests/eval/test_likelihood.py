"""The shared scorer: batched = one by one = a plain forward pass; sliding windows; perplexity CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from llamaforge.checkpoint import load_model
from llamaforge.eval.likelihood import LikelihoodScorer
from llamaforge.eval.perplexity import perplexity

TEXTS = ["def add(a, b):\n    return a + b\n", "import os\nprint(os.getcwd())", "x = 1", "class A:\n    pass\n" * 6]


@pytest.fixture(scope="module")
def model_tok(tiny_checkpoint, tokenizer):
    return load_model(tiny_checkpoint), tokenizer


def _direct(model, tokens: list[int]) -> float:
    """Sum of log p(token t | tokens < t) for t >= 1 with one full forward pass."""
    with torch.no_grad():
        lp = F.log_softmax(model(torch.tensor([tokens]))[0].float(), -1)
    return float(sum(lp[i - 1, tokens[i]] for i in range(1, len(tokens))))


def test_batched_equals_single_and_direct(model_tok):
    model, tok = model_tok
    pairs = [("Question: what is 1 + 1?\nAnswer:", " 2"), ("def f(", "x):\n    return x"), ("", "hello world"),
             ("a b ", "c")]
    batched = LikelihoodScorer(model, tok, batch_size=4).loglikelihood(pairs)
    single = LikelihoodScorer(model, tok, batch_size=1).loglikelihood(pairs)
    for (a, ga), (b, gb) in zip(batched, single, strict=True):
        assert a == pytest.approx(b, abs=1e-4) and ga == gb
    # context "" means "after BOS": the whole text's log-prob
    ids = tok.encode("hello world", bos=True)
    assert batched[2][0] == pytest.approx(_direct(model, ids), abs=1e-4)
    # trailing space of the context moves to the continuation (lm-eval's rule)
    s = LikelihoodScorer(model, tok)
    assert s.encode_pair("a b ", "c") == s.encode_pair("a b", " c")


def test_greedy_flag(model_tok):
    model, tok = model_tok
    s = LikelihoodScorer(model, tok)
    ctx = tok.encode("def f(x):", bos=True)
    with torch.no_grad():
        nxt = int(model(torch.tensor([ctx]))[0, -1].argmax())
    worst = int(model(torch.tensor([ctx]))[0, -1].argmin())
    assert s.score_tokens([(ctx, [nxt])])[0][1] is True
    assert s.score_tokens([(ctx, [worst])])[0][1] is False


def test_windows_score_every_token_once(model_tok):
    model, tok = model_tok
    s = LikelihoodScorer(model, tok, max_length=8)
    tokens = list(range(1, 30))
    for stride in (8, 5, 1):
        reqs = s.windows(tokens, stride)
        scored = [t for _, cont in reqs for t in cont]
        assert scored == tokens[1:]
        for ctx, cont in reqs:
            assert len(cont) <= stride and len(ctx) + len(cont) <= 9 and ctx


def test_rolling_equals_full_forward_when_it_fits(model_tok):
    model, tok = model_tok
    for stride in (None, 7):
        rows = LikelihoodScorer(model, tok, batch_size=3).rolling(TEXTS, stride=stride)
        for text, (ll, n) in zip(TEXTS, rows, strict=True):
            ids = tok.encode(text, bos=True)
            assert n == len(ids) - 1
            if stride is None:  # one window covers the text: same as a single forward pass
                assert ll == pytest.approx(_direct(model, ids), abs=1e-3)


def test_smaller_stride_gives_more_context(model_tok):
    model, tok = model_tok
    text = TEXTS[3] * 3
    disjoint = LikelihoodScorer(model, tok, max_length=16).rolling([text])[0]
    sliding = LikelihoodScorer(model, tok, max_length=16).rolling([text], stride=4)[0]
    full = LikelihoodScorer(model, tok).rolling([text])[0]
    assert disjoint[1] == sliding[1] == full[1]
    # more context per token: sliding is closer to the full-context number than disjoint windows
    assert abs(sliding[0] - full[0]) < abs(disjoint[0] - full[0])


def test_perplexity_formulas(model_tok):
    model, tok = model_tok
    res = perplexity(LikelihoodScorer(model, tok), TEXTS)
    nll = -sum(ll for ll, _ in LikelihoodScorer(model, tok).rolling(TEXTS))
    assert res.tokens == sum(len(tok.encode(t, bos=False)) for t in TEXTS)
    assert res.perplexity == pytest.approx(math.exp(nll / res.tokens), rel=1e-5)
    assert res.bits_per_byte == pytest.approx(nll / math.log(2) / sum(len(t.encode()) for t in TEXTS), rel=1e-5)
    # random weights over a vocab of ~1000: perplexity near the vocabulary size, far from 1
    assert 100 < res.perplexity < 20 * tok.n_words


def test_ppl_cli(tiny_checkpoint, tmp_path, capsys):
    from llamaforge.cli import main

    data = tmp_path / "val.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    out = tmp_path / "ppl.json"
    assert main(["eval", "ppl", "--model", str(tiny_checkpoint), "--data.path", str(data), "--stride", "8",
                 "--max-length", "16", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["documents"] == 4 and res["perplexity"] > 1 and res["bits_per_byte"] > 0
    assert "perplexity" in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": \n')
    assert main(["eval", "ppl", "--model", str(tiny_checkpoint), "--data.path", str(bad)]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err


def test_identical_inputs_share_a_forward_pass(model_tok):
    model, tok = model_tok
    calls = []
    handle = model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        ctx = tok.encode("Question: which?\nAnswer:", bos=True)
        reqs = [(ctx, [tok.encode(" A", bos=False)[-1]]), (ctx, [tok.encode(" B", bos=False)[-1]]), (ctx, [5])]
        res = LikelihoodScorer(model, tok).score_tokens(reqs)
    finally:
        handle.remove()
    assert calls == [1]  # three one-token answers after the same context: one row
    single = [LikelihoodScorer(model, tok).score_tokens([r])[0] for r in reqs]
    assert [round(a, 5) for a, _ in res] == [round(a, 5) for a, _ in single]
    assert len({a for a, _ in res}) == 3
