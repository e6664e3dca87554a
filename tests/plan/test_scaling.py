"""Chinchilla fit with an inference budget (Hoffmann et al. 2022 approach 3; LLaMA section 1)."""

import math

import pytest

from llamaforge.errors import UserError
from llamaforge.plan_scaling import CHINCHILLA, inference_table, preset_positions

GOPHER = 5.76e23


def test_compute_optimal_for_gophers_budget():
    n, d = CHINCHILLA.compute_optimal(GOPHER)
    assert 6 * n * d == pytest.approx(GOPHER)
    # Derived by hand from the rounded constants: 32.2B params, 2.98T tokens. The paper quotes ~40B for
    # approach 3 and Chinchilla is 70B/1.4T: the loss valley is flat.
    assert 25e9 < n < 45e9
    assert 2e12 < d < 4e12
    best = CHINCHILLA.loss(n, d)
    chinchilla = CHINCHILLA.loss(70e9, 1.4e12)
    assert 0 < chinchilla - best < 0.01


@pytest.mark.parametrize("budget", [1e21, 5.76e23, 1e25])
def test_optimum_beats_its_neighbours_on_the_same_budget(budget):
    n, _ = CHINCHILLA.compute_optimal(budget)
    best = CHINCHILLA.loss(n, budget / 6 / n)
    for f in (0.5, 0.8, 0.95, 1.05, 1.25, 2.0):
        m = n * f
        assert CHINCHILLA.loss(m, budget / 6 / m) > best


def test_smaller_models_reach_the_same_loss_with_more_tokens():
    t = inference_table(GOPHER, inference_tokens=2e13)
    rows = t["rows"]
    assert rows[0]["params"] == pytest.approx(t["optimal_params"])
    for r in rows:
        assert CHINCHILLA.loss(r["params"], r["tokens"]) == pytest.approx(t["target_loss"], abs=1e-9)
        assert r["inference_flops"] == pytest.approx(2 * r["params"] * 2e13)
    assert all(a["tokens"] < b["tokens"] for a, b in zip(rows, rows[1:]))
    assert all(a["train_flops"] < b["train_flops"] for a, b in zip(rows, rows[1:]))


def test_best_total_is_the_minimum_of_a_dense_grid():
    t = inference_table(GOPHER, inference_tokens=2e13)
    best = t["best"]
    lo = math.log(t["min_params"] * 1.0001)
    hi = math.log(t["optimal_params"] * 1.5)
    grid = [math.exp(lo + (hi - lo) * i / 4000) for i in range(4001)]
    totals = [6 * n * CHINCHILLA.tokens_for_loss(n, t["target_loss"]) + 2 * n * 2e13 for n in grid]
    assert best["total_flops"] <= min(totals) * (1 + 1e-6)
    assert best["params"] < t["optimal_params"]  # serving pushes toward smaller models
    assert 0 < best["saving_vs_optimal"] < 1


def test_more_inference_means_a_smaller_best_model():
    sizes = [inference_table(GOPHER, inference_tokens=i)["best"]["params"] for i in (0, 1e12, 1e13, 1e14)]
    assert sizes[0] == pytest.approx(CHINCHILLA.compute_optimal(GOPHER)[0])
    assert all(a > b for a, b in zip(sizes, sizes[1:]))


def test_target_from_a_model_and_its_tokens():
    t = inference_table(params=7e9, tokens=1e12, inference_tokens=1e13)
    assert t["target_loss"] == pytest.approx(CHINCHILLA.loss(7e9, 1e12))
    # The compute-optimal model for that loss costs less to train than 7B on 1T tokens.
    assert t["budget_flops"] < 6 * 7e9 * 1e12
    assert CHINCHILLA.loss(t["optimal_params"], t["optimal_tokens"]) == pytest.approx(t["target_loss"], abs=1e-6)


def test_unreachable_targets():
    assert math.isinf(CHINCHILLA.tokens_for_loss(1e6, 2.0))
    with pytest.raises(UserError, match="irreducible"):
        inference_table(target_loss=1.5)
    with pytest.raises(UserError):
        inference_table()


def test_preset_positions():
    rows = {r["preset"]: r for r in preset_positions()}
    assert rows["llama1-7b"]["tokens_per_param"] == pytest.approx(1e12 / 6.607e9, rel=1e-3)
    # Llama 2 7B is trained far past compute-optimal: the optimum for its compute is a bigger model.
    assert rows["llama2-7b"]["optimal_params"] > rows["llama2-7b"]["params"]
    assert all(r["optimal_loss"] <= r["loss"] + 1e-12 for r in rows.values())
