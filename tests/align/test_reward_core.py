"""Reward model core: the margin ranking loss by hand, the head at the last real token, save/load."""

import math

import pytest
import torch

from llamaforge.align.reward import (
    MARGINS,
    encode_pair,
    load_reward_model,
    margin_for,
    pad_right,
    ranking_loss,
    reward_model_from_lm,
    save_reward_model,
)
from llamaforge.errors import UserError
from llamaforge.model.args import ModelArgs
from llamaforge.model.llama import Transformer


@pytest.mark.parametrize("table,expected", [
    ("small", {"significantly_better": 1.0, "better": 2 / 3, "slightly_better": 1 / 3, "negligibly_better": 0.0}),
    ("large", {"significantly_better": 3.0, "better": 2.0, "slightly_better": 1.0, "negligibly_better": 0.0}),
    ("none", dict.fromkeys(MARGINS["none"], 0.0)),
])
def test_loss_matches_formula_by_hand(table, expected):
    rc, rr = 1.3, 0.2
    for rating, m in expected.items():
        assert margin_for(rating, table) == pytest.approx(m)
        hand = -math.log(1 / (1 + math.exp(-(rc - rr - m))))
        got = ranking_loss(torch.tensor([rc]), torch.tensor([rr]), margin_for(rating, table)).item()
        assert got == pytest.approx(hand, rel=1e-6)
    assert margin_for("better", "large", explicit=0.5) == 0.5


def test_bigger_margin_bigger_loss():
    rc, rr = torch.tensor([0.5]), torch.tensor([0.0])
    losses = [ranking_loss(rc, rr, margin_for(r, "large")).item()
              for r in ("negligibly_better", "slightly_better", "better", "significantly_better")]
    assert losses == sorted(losses) and losses[0] < losses[-1]


@pytest.fixture(scope="module")
def rm(tokenizer):
    torch.manual_seed(0)
    lm = Transformer(ModelArgs(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=tokenizer.n_words,
                               multiple_of=16, max_seq_len=128))
    lm.init_weights()
    rm = reward_model_from_lm(lm).eval()
    with torch.no_grad():
        rm.score_head.weight.normal_(0, 1.0)
    return rm


def test_head_reads_last_real_token_any_padding(rm, tokenizer):
    seqs = [encode_pair(tokenizer, "add 2 and 3", "2 + 3 is 5.", 128), encode_pair(tokenizer, "hi", "hello", 128)]
    alone = torch.stack([rm(torch.tensor([s]))[0] for s in seqs])
    t, real = pad_right(seqs)
    n = t.shape[1]
    tl, rl = torch.zeros_like(t), torch.zeros_like(real)
    for i, s in enumerate(seqs):
        tl[i, n - len(s):], rl[i, n - len(s):] = torch.tensor(s), True
    with torch.no_grad():
        torch.testing.assert_close(rm(t, real), alone, atol=1e-5, rtol=0)
        torch.testing.assert_close(rm(tl, rl), alone, atol=1e-5, rtol=0)
    assert abs(alone[0] - alone[1]) > 1e-4  # different inputs, different scores


def test_save_load_and_score(rm, tokenizer, tmp_path):
    save_reward_model(rm, tmp_path / "rm", tokenizer=tokenizer)
    rm2 = load_reward_model(tmp_path / "rm")
    s1 = rm.score(["q1", [{"role": "user", "content": "q2"}]], ["a1", "a2"], tokenizer=tokenizer)
    s2 = rm2.score(["q1", [{"role": "user", "content": "q2"}]], ["a1", "a2"])
    torch.testing.assert_close(s1, s2)
    from llamaforge.checkpoint import load_model

    with pytest.raises(UserError, match="is a reward model"):
        load_model(tmp_path / "rm")
    with pytest.raises(UserError, match="prompts but"):
        rm2.score(["q"], ["a", "b"])
