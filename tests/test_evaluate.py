"""Held-out routing numbers (catimg.training.evaluate): the exact sweep curve, exact AUC and APGR, cost to
match."""

from __future__ import annotations

import numpy as np

from catimg.training.evaluate import (
    Curve,
    apgr,
    auc,
    cost_to_match,
    evaluate_predictions,
    hull_curve,
    mean_gain,
    sparse_check,
    sweep,
)

SCALE = (0.0, 1.0)


def _two_generators(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Measured qualities of a cheap and a dear generator, predictions with noise, costs 1 and 10."""
    rng = np.random.default_rng(seed)
    y = np.stack([rng.random(n) * 0.6, 0.3 + rng.random(n) * 0.7], 1)
    pred = y + rng.normal(0, 0.2, y.shape)
    return y, pred, np.array([1.0, 10.0])


def test_two_generator_curve_moves_one_prompt_at_a_time_by_predicted_gain() -> None:
    y, pred, cost = _two_generators(300, 0)
    curve = sweep(pred, y, cost, SCALE)
    # every prompt starts at its better predicted generator and leaves the dear one in order of predicted gain
    order = np.argsort(pred[:, 1] - pred[:, 0])[::-1]
    dear = order[pred[order, 1] > pred[order, 0]]  # routed to the dear generator at λ = 0
    n = len(y)
    expect_q = [
        (y[dear[:k], 1].sum() + np.delete(y[:, 0], dear[:k]).sum()) / n for k in range(len(dear), -1, -1)
    ]
    assert len(curve.costs) == len(dear) + 1  # one state per switch: none skipped
    np.testing.assert_allclose(curve.qualities, expect_q, rtol=1e-12)
    np.testing.assert_allclose(curve.costs, (1.0 + 9.0 * np.arange(len(dear), -1, -1) / n))


def test_auc_and_mean_gain_integrate_the_piecewise_linear_curve_exactly() -> None:
    curve = Curve(np.zeros(4), np.array([1.0, 2.0, 5.0, 10.0]), np.array([0.2, 0.5, 0.6, 0.7]))
    # by hand: trapezoids 1-2, 2-5, 5-10 over a range of 9
    assert auc(curve, 1.0, 10.0) == (0.35 * 1 + 0.55 * 3 + 0.65 * 5) / 9
    grid = np.linspace(0.0, 12.0, 1_200_001)  # flat beyond the points, as the definition says
    dense = np.trapezoid(np.interp(grid, curve.costs, curve.qualities), grid) / 12.0
    assert abs(auc(curve, 0.0, 12.0) - dense) < 1e-9
    single_c, single_q = np.array([1.0, 10.0]), np.array([0.2, 0.7])
    line = 0.2 + (grid - 1.0) / 9.0 * 0.5
    inside = (grid >= 1.0) & (grid <= 10.0)
    gap = np.trapezoid(np.interp(grid, curve.costs, curve.qualities)[inside] - line[inside], grid[inside]) / 9
    assert abs(mean_gain(curve, single_c, single_q) - gap) < 1e-9


def test_oracle_recovers_all_random_none_and_a_router_in_between() -> None:
    y, pred, cost = _two_generators(400, 1)
    single = y.mean(0)
    oracle = sweep(y, y, cost, SCALE)
    router = sweep(pred, y, cost, SCALE)
    assert apgr(oracle, oracle, cost, single) == 1.0
    assert abs(apgr(hull_curve(cost, single), oracle, cost, single) or 0.0) < 1e-12
    share = apgr(router, oracle, cost, single)
    assert share is not None and 0.3 < share < 1.0


def test_cost_to_match_sees_a_prompt_that_ties_late_in_the_sweep() -> None:
    # the dear generator wins on every prompt except two; the router sends prompts to the cheap one in the
    # order of its predictions, and after the fourth the sum of what they lost is back to zero
    n = 2000
    y = np.column_stack([np.zeros(n), np.full(n, 0.5)])
    first = [0.3, 0.1, -0.3, -0.1]  # dear - cheap on the first four prompts the router gives up
    for i, d in enumerate(first):
        y[i] = [0.5 - d, 0.5]
    pred = np.column_stack([np.zeros(n), np.linspace(0.0, 1.0, n)])
    pred[:, 1] += 0.01
    rep = evaluate_predictions(pred, y, [1.0, 10.0], SCALE, ["cheap", "dear"])
    router = rep.summaries[0]
    assert router.cost_to_match is not None
    assert abs(router.cost_to_match - (10.0 - 9.0 * 4 / n)) < 1e-9
    assert cost_to_match(Curve(np.zeros(2), np.array([1.0, 2.0]), np.array([0.1, 0.2])), 0.3) is None


def test_eval_report_shows_a_thinned_curve_but_computes_on_every_point() -> None:
    rng = np.random.default_rng(3)
    y = rng.random((3000, 3)) + np.array([0.0, 0.2, 0.4])
    pred = y + rng.normal(0, 0.3, y.shape)
    cost = np.array([1.0, 3.0, 10.0])
    full = sweep(pred, y, cost, SCALE)
    assert len(full.costs) > 2000
    rep = evaluate_predictions(pred, y, cost, SCALE, ["a", "b", "c"])
    shown = rep.curves["router"]
    assert len(shown["cost"]) == 601
    x, q = full.sorted()
    assert shown["cost"][0] == x[0] and shown["cost"][-1] == x[-1] and shown["quality"][-1] == q[-1]
    assert rep.summaries[0].auc == auc(full, 1.0, 10.0)


def test_sparse_check_orders_pairs_and_compares_with_the_column_means() -> None:
    rng = np.random.default_rng(4)
    y = rng.random((60, 3)) + np.array([0.0, 0.3, 0.6])
    y[rng.random(y.shape) < 0.4] = np.nan  # scored in use: no prompt needs every generator
    good = sparse_check(np.nan_to_num(y), y)  # the scores themselves
    assert good.order == 1.0 and good.rmse == 0.0 and not good.worse
    assert good.n_scores == int((~np.isnan(y)).sum()) and good.n_pairs > 10
    assert good.order_means is not None and 0.5 < good.order_means < 1.0
    bad = sparse_check(-np.nan_to_num(y), y)  # every difference the wrong way round
    assert bad.order == 0.0 and bad.worse
    one = y.copy()
    one[:, 1:] = np.nan  # one score per prompt: no pairs, only the error
    only = sparse_check(np.full(one.shape, 5.0), one)
    assert only.order is None and only.n_pairs == 0 and only.worse
