"""The RLHF reward and PPO math against hand computations (Llama 2 3.2.3)."""

import math

import pytest
import torch

from llamaforge.align.ppo import gae, masked_whiten, policy_loss, value_loss
from llamaforge.align.rewards import CombinedReward, RunningMoments, gate, logit, token_rewards


def test_gate_tagged_low_rs_and_high_rs():
    rs = torch.tensor([0.9, 0.1, 0.9])
    rh = torch.tensor([0.3, 0.8, 0.7])
    unsafe = torch.tensor([True, False, False])
    rc, took = gate(rs, rh, unsafe, 0.15)
    # tagged unsafe -> Rs; untagged with Rs < 0.15 -> Rs; untagged with high Rs -> Rh
    assert rc.tolist() == pytest.approx([0.9, 0.1, 0.7])
    assert took.tolist() == [True, True, False]


class _RM:
    def __init__(self, raw):
        self.raw = torch.tensor(raw)

    def score(self, prompts, answers, batch_size=16):
        return self.raw[: len(answers)]


def test_combined_reward_is_logit_of_gated_score_plus_user_rewards():
    raw_h, raw_s = [0.5, 2.0, -1.0], [3.0, -2.5, 1.0]  # sigmoid(-2.5) = 0.076 < 0.15
    recs = [{"safety": True}, {"safety": False}, {"safety": False}]
    cr = CombinedReward(_RM(raw_h), _RM(raw_s), 0.15, [(lambda r, a: len(a), 0.5)])
    out = cr.score(recs, ["p"] * 3, ["ab", "abc", ""])
    # row 0 tagged: logit(sigmoid(3.0)) = 3.0; row 1 Rs low: -2.5; row 2: helpfulness -1.0
    assert out["score"].tolist() == pytest.approx([3.0 + 1.0, -2.5 + 1.5, -1.0 + 0.0], abs=1e-4)
    assert out["took_safety"].tolist() == [1.0, 1.0, 0.0]


def test_logit_inverts_sigmoid_and_whitening():
    x = torch.tensor([-3.0, 0.0, 2.0])
    assert logit(torch.sigmoid(x)).tolist() == pytest.approx(x.tolist(), abs=1e-4)
    m = RunningMoments()
    data = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0])
    m.update(data[:2])
    m.update(data[2:])
    assert m.mean == pytest.approx(4.0) and m.std == pytest.approx(float(data.std(unbiased=False)))
    assert m.whiten(torch.tensor([4.0])).item() == pytest.approx(0.0, abs=1e-6)


def test_token_rewards_kl_every_token_score_at_last():
    logp = torch.tensor([[-1.0, -2.0, -1.5, 0.0]])
    ref = torch.tensor([[-1.5, -2.0, -1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    r, kl = token_rewards(torch.tensor([2.0]), logp, ref, mask, beta=0.1)
    assert r[0].tolist() == pytest.approx([-0.05, 0.0, 0.05 + 2.0, 0.0])
    assert kl.item() == pytest.approx(0.0)


def test_gae_matches_hand_computation():
    r = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    v = torch.tensor([[0.5, 0.4, 0.8, 0.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    g, lam = 1.0, 0.95
    d2 = 1.0 - 0.8
    d1 = 0.0 + g * 0.8 - 0.4
    d0 = 0.0 + g * 0.4 - 0.5
    a2 = d2
    a1 = d1 + g * lam * a2
    a0 = d0 + g * lam * a1
    adv, ret = gae(r, v, m, g, lam)
    assert adv[0].tolist() == pytest.approx([a0, a1, a2, 0.0])
    assert ret[0].tolist() == pytest.approx([a0 + 0.5, a1 + 0.4, a2 + 0.8, 0.0])


def test_gae_respects_prompt_offset():
    # Response tokens start at position 2; earlier positions are masked out and do not leak.
    r = torch.tensor([[5.0, 5.0, 0.0, 1.0]])
    v = torch.zeros(1, 4)
    m = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    adv, _ = gae(r, v, m, 1.0, 1.0)
    assert adv[0].tolist() == pytest.approx([0.0, 0.0, 1.0, 1.0])


def test_clipped_policy_loss_by_hand():
    old = torch.log(torch.tensor([[0.5, 0.5, 0.5]]))
    new = torch.log(torch.tensor([[0.75, 0.25, 0.55]]))  # ratios 1.5, 0.5, 1.1
    adv = torch.tensor([[1.0, -1.0, 2.0]])
    m = torch.ones(1, 3)
    loss, clipfrac = policy_loss(new, old, adv, m, clip=0.2)
    # row terms: max(-1*1.5, -1*1.2) = -1.2; max(1*0.5, 1*0.8) = 0.8; max(-2*1.1, -2*1.1) = -2.2
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 2.2) / 3, rel=1e-5)
    assert clipfrac.item() == pytest.approx(2 / 3)


def test_clipped_value_loss_by_hand():
    v, old, ret = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.0]]), torch.tensor([[2.0, 0.3]])
    vl = value_loss(v, old, ret, torch.ones(1, 2), clip=0.2)
    # clipped v0 = 0.7: max((1-2)^2, (0.7-2)^2) = 1.69; v1: max(0.09, 0.09) = 0.09
    assert vl.item() == pytest.approx(0.5 * (1.69 + 0.09) / 2)


def test_masked_whiten():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = masked_whiten(x, m)
    assert w[0, 3].item() == 0.0 and w[0, :3].mean().item() == pytest.approx(0.0, abs=1e-6)
    assert math.isclose(float((w[0, :3] ** 2).mean()), 1.0, rel_tol=1e-4)
