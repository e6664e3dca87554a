"""The RLHF reward of Llama 2 (3.2.3): safety-gated combination of two reward models, whitening,
and the KL penalty against a frozen reference.

    Rc = Rs   if the prompt is tagged unsafe or Rs < 0.15,   else Rh        (Rs, Rh in (0, 1))
    R  = whiten(logit(Rc)) - beta * KL(pi || pi_0)

Rs and Rh are the sigmoid of the reward models' scalar scores, so logit(Rc) is the chosen model's
raw score. User reward functions `(record, answer) -> float` (e.g. the world's verifier) are added
to logit(Rc) before whitening, with a weight each.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from llamaforge.errors import UserError

RewardFn = Callable[[dict[str, Any], str], float]


def load_reward_fn(spec: str) -> RewardFn:
    """`module:function` -> the callable, e.g. `llamaforge.align.world:world_reward`."""
    mod, _, name = spec.partition(":")
    if not mod or not name:
        raise UserError(f"--reward-fn {spec!r}: expected module:function")
    try:
        fn = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as e:
        raise UserError(f"--reward-fn {spec!r}: {e}") from None
    if not callable(fn):
        raise UserError(f"--reward-fn {spec!r} is not callable")
    return fn


def gate(rs: torch.Tensor, rh: torch.Tensor, unsafe: torch.Tensor, threshold: float = 0.15
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rc and the mask of rows that took the safety score (tagged unsafe, or Rs below threshold)."""
    use_safety = unsafe.bool() | (rs < threshold)
    return torch.where(use_safety, rs, rh), use_safety


def logit(p: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    p = p.clamp(eps, 1 - eps)
    return torch.log(p) - torch.log1p(-p)


@dataclass
class RunningMoments:
    """Mean and variance over every value seen so far (Chan et al. parallel update), for whitening."""

    count: float = 0.0
    mean: float = 0.0
    m2: float = 0.0

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().double().flatten()
        n = x.numel()
        if n == 0:
            return
        m, v = float(x.mean()), float(((x - x.mean()) ** 2).sum())
        total = self.count + n
        delta = m - self.mean
        self.mean += delta * n / total
        self.m2 += v + delta * delta * self.count * n / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count > 1 else 1.0

    def whiten(self, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
        return (x - self.mean) / (self.std + eps)

    def state_dict(self) -> dict[str, float]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, st: dict[str, float]) -> None:
        self.count, self.mean, self.m2 = float(st["count"]), float(st["mean"]), float(st["m2"])


@dataclass
class CombinedReward:
    """Scores answers with the helpfulness / safety reward models and user functions."""

    rm_helpful: Any = None
    rm_safety: Any = None
    threshold: float = 0.15
    fns: list[tuple[RewardFn, float]] = field(default_factory=list)
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.rm_helpful is None and self.rm_safety is None and not self.fns:
            raise UserError("no reward: give --rm-helpful/--rm-safety and/or --reward-fn")

    def score(self, records: Sequence[dict[str, Any]], prompts: Sequence[Any], answers: Sequence[str]
              ) -> dict[str, torch.Tensor]:
        """Per answer: `score` = logit(Rc) + weighted user rewards (before whitening), and the parts."""
        n = len(answers)
        out: dict[str, torch.Tensor] = {}
        unsafe = torch.tensor([bool(r.get("safety", False)) for r in records])
        if self.rm_helpful is not None or self.rm_safety is not None:
            raw_h = self.rm_helpful.score(prompts, answers, batch_size=self.batch_size) \
                if self.rm_helpful is not None else None
            raw_s = self.rm_safety.score(prompts, answers, batch_size=self.batch_size) \
                if self.rm_safety is not None else None
            rh = torch.sigmoid(raw_h) if raw_h is not None else torch.sigmoid(raw_s)
            rs = torch.sigmoid(raw_s) if raw_s is not None else torch.ones(n)  # no safety RM: never gate
            rc, took_safety = gate(rs, rh, unsafe, self.threshold)
            out.update(rh=rh, rs=rs, rc=rc, took_safety=took_safety.float())
            base = logit(rc)
        else:
            base = torch.zeros(n)
        extra = torch.zeros(n)
        for fn, w in self.fns:
            extra += w * torch.tensor([float(fn(r, a)) for r, a in zip(records, answers)])
        out["user"] = extra
        out["score"] = base + extra
        return out


def kl_per_token(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """The sampled-token estimate of KL(pi || pi_0): log pi(a) - log pi_0(a) per generated token."""
    return logp - ref_logp


def token_rewards(score: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor,
                  beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards [B, N]: -beta * KL at every response token, plus the (whitened) score at the
    last one. Returns (rewards, kl summed per sequence)."""
    kl = kl_per_token(logp, ref_logp) * mask
    rewards = -beta * kl
    last = (mask.long().cumsum(1) == mask.long().sum(1, keepdim=True)) & mask.bool()
    rewards = rewards + last.to(rewards.dtype) * score.unsqueeze(1).to(rewards.dtype)
    return rewards, kl.sum(1)
