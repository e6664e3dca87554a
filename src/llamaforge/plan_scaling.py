"""Chinchilla scaling law with an inference budget (Hoffmann et al. 2022; LLaMA section 1).

Loss L(N, D) = E + A / N^alpha + B / D^beta, fitted by Hoffmann et al. 2022 (approach 3, eq. 10):
E = 1.69, A = 406.4, B = 410.7, alpha = 0.34, beta = 0.28. Training costs C = 6 N D FLOPs.
Minimising L under C = 6ND gives (their eq. 4)

    N_opt = G (C/6)^(beta/(alpha+beta)),  D_opt = (C/6) / N_opt,  G = (alpha A / (beta B))^(1/(alpha+beta)).

LLaMA's argument: the preferred model is the one cheapest to serve at a target quality, not the
cheapest to train. Any smaller N reaches the same loss L* with D(N) = (B / (L* - E - A/N^alpha))^(1/beta)
tokens; counting I expected inference tokens at 2N FLOPs each, the total cost is 6 N D(N) + 2 N I.

With the published (rounded) constants, Gopher's budget of 5.76e23 FLOPs gives N_opt = 32.2B and
D_opt = 2.98T; the paper quotes about 40B for approach 3 (63-67B for approaches 1 and 2; Chinchilla
itself is 70B on 1.4T tokens), a gap from the rounding that Besiroglu et al. 2024 discuss.
The loss valley is flat: (70B, 1.4T) is within 0.006 of the optimum by this fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from llamaforge.errors import UserError


@dataclass(frozen=True)
class ScalingLaw:
    E: float = 1.69
    A: float = 406.4
    B: float = 410.7
    alpha: float = 0.34
    beta: float = 0.28

    def loss(self, n: float, d: float) -> float:
        return self.E + self.A / n**self.alpha + self.B / d**self.beta

    def compute_optimal(self, flops: float) -> tuple[float, float]:
        """(N, D) minimising loss for a training budget of `flops` = 6 N D."""
        if flops <= 0:
            raise UserError(f"plan: the compute budget must be > 0 FLOPs, got {flops}")
        s = self.alpha + self.beta
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / s)
        n = g * (flops / 6.0) ** (self.beta / s)
        return n, flops / 6.0 / n

    def min_params(self, target_loss: float) -> float:
        """Smallest N that can reach `target_loss` at all (with infinite data)."""
        gap = target_loss - self.E
        if gap <= 0:
            raise UserError(f"plan: target loss {target_loss} is below the irreducible loss E = {self.E}")
        return (self.A / gap) ** (1.0 / self.alpha)

    def tokens_for_loss(self, n: float, target_loss: float) -> float:
        """Training tokens for N parameters to reach `target_loss` (inf when N is too small)."""
        gap = target_loss - self.E - self.A / n**self.alpha
        return math.inf if gap <= 0 else (self.B / gap) ** (1.0 / self.beta)


CHINCHILLA = ScalingLaw()

# Training tokens of the released models (PAPERS.md), for the "where the presets sit" table.
PRESET_TOKENS: dict[str, float] = {
    "llama1-7b": 1.0e12, "llama1-13b": 1.0e12, "llama1-33b": 1.4e12, "llama1-65b": 1.4e12,
    "llama2-7b": 2.0e12, "llama2-13b": 2.0e12, "llama2-34b": 2.0e12, "llama2-70b": 2.0e12,
}


def _row(law: ScalingLaw, n: float, target: float, inference_tokens: float) -> dict[str, Any]:
    d = law.tokens_for_loss(n, target)
    train = 6.0 * n * d
    infer = 2.0 * n * inference_tokens
    return {"params": n, "tokens": d, "tokens_per_param": d / n, "train_flops": train,
            "inference_flops": infer, "total_flops": train + infer}


def best_for_total(law: ScalingLaw, target: float, inference_tokens: float, n_hi: float) -> float:
    """N in (N_min, n_hi] minimising 6 N D(N) + 2 N I, by golden-section search on log N."""
    lo = math.log(law.min_params(target)) + 1e-9
    hi = math.log(n_hi)

    def cost(x: float) -> float:
        return _row(law, math.exp(x), target, inference_tokens)["total_flops"]

    inv = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - inv * (b - a), a + inv * (b - a)
    for _ in range(200):
        if cost(c) < cost(d):
            b, d = d, c
            c = b - inv * (b - a)
        else:
            a, c = c, d
            d = a + inv * (b - a)
        if b - a < 1e-10:
            break
    return math.exp((a + b) / 2)


def inference_table(budget: float | None = None, *, params: float | None = None, tokens: float | None = None,
                    target_loss: float | None = None, inference_tokens: float = 0.0,
                    fractions: tuple[float, ...] = (1.0, 0.75, 0.5, 0.35, 0.25, 0.18, 0.12),
                    law: ScalingLaw = CHINCHILLA) -> dict[str, Any]:
    """The compute-optimal model for a target and the smaller, longer-trained models reaching the same loss.

    The target is a training budget (`budget` FLOPs: its compute-optimal loss), a model (`params`,
    `tokens`), or a `target_loss`. Rows are N = fraction * N_opt; `best` minimises training plus
    inference FLOPs for `inference_tokens` served tokens.
    """
    if inference_tokens < 0:
        raise UserError(f"plan: --inference-tokens must be >= 0, got {inference_tokens}")
    if budget is not None:
        n_opt, d_opt = law.compute_optimal(budget)
        target = law.loss(n_opt, d_opt)
    else:
        if target_loss is None:
            if params is None or tokens is None:
                raise UserError("plan: give --budget FLOPs, or --target-params with --target-tokens, "
                                "or --target-loss")
            target_loss = law.loss(params, tokens)
        target = target_loss
        # The compute-optimal point on this loss contour: bisect the budget whose optimum reaches it.
        lo, hi = 1e10, 1e32
        for _ in range(200):
            mid = math.sqrt(lo * hi)
            if law.loss(*law.compute_optimal(mid)) > target:
                lo = mid
            else:
                hi = mid
        n_opt, d_opt = law.compute_optimal(hi)
        budget = 6.0 * n_opt * d_opt
    rows = []
    n_min = law.min_params(target)
    for f in fractions:
        n = f * n_opt
        if n <= n_min * 1.001:
            continue
        rows.append({"fraction": f, **_row(law, n, target, inference_tokens)})
    best_n = best_for_total(law, target, inference_tokens, n_opt * 1.5) if inference_tokens > 0 else n_opt
    best = _row(law, best_n, target, inference_tokens)
    opt = _row(law, n_opt, target, inference_tokens)
    return {
        "law": {"E": law.E, "A": law.A, "B": law.B, "alpha": law.alpha, "beta": law.beta,
                "source": "Hoffmann et al. 2022, approach 3"},
        "target_loss": target, "budget_flops": budget, "optimal_params": n_opt, "optimal_tokens": d_opt,
        "min_params": n_min, "inference_tokens": inference_tokens, "rows": rows, "optimal": opt,
        "best": {**best, "fraction": best_n / n_opt, "saving_vs_optimal": 1 - best["total_flops"] / opt["total_flops"]},
    }


def preset_positions(law: ScalingLaw = CHINCHILLA) -> list[dict[str, Any]]:
    """Each released LLaMA / Llama 2 size with its tokens: fitted loss, compute, and the compute-optimal split."""
    from llamaforge.model.args import ModelArgs

    rows = []
    for name, d in PRESET_TOKENS.items():
        n = ModelArgs.from_name(name).num_params(include_embedding=False)
        c = 6.0 * n * d
        n_opt, d_opt = law.compute_optimal(c)
        rows.append({"preset": name, "params": n, "tokens": d, "tokens_per_param": d / n, "flops": c,
                     "loss": law.loss(n, d), "optimal_params": n_opt, "optimal_tokens": d_opt,
                     "optimal_loss": law.loss(n_opt, d_opt)})
    return rows
