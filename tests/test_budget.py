"""Budget parsing and total budgets that fit (the rule itself: tests/test_rule.py)."""

from __future__ import annotations

import numpy as np
import pytest

from catimg.errors import InputError
from catimg.routing.budget import Budget, parse_budget, parse_duration, plan_cost, solve_total
from catimg.routing.rule import choose


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("1h30m", 5400), ("2.5", 2.5), ("500ms", 0.5), ("1.5min", 90), ("2h", 7200)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "ten minutes", "-5s", "0", "5 parsecs", "nan", "inf"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(InputError, match="--total-budget"):
        parse_duration(text)


def test_parse_budget_levels_and_seconds() -> None:
    assert parse_budget(None) == Budget(level="medium")
    assert parse_budget("LOW") == Budget(level="low")
    assert parse_budget("2.5s") == Budget(seconds=2.5)
    with pytest.raises(
        InputError, match='--budget "hihg" is not a level or a duration \\(did you mean "high"\\?\\)'
    ):
        parse_budget("hihg")
    with pytest.raises(InputError, match="positive"):
        parse_budget("0s")


def test_solve_total_fits_and_spends_budget() -> None:
    rng = np.random.default_rng(1)
    qn = rng.random((50, 3))
    qn[:, 2] += 0.2
    cost = np.array([1.0, 3.0, 10.0])
    allowed = np.ones(3, bool)
    for budget in (60.0, 150.0, 300.0):
        lam, c = solve_total(qn, cost, budget, allowed)
        spent = plan_cost(c, cost, None, None)
        assert spent <= budget + 1e-9
        # the greedy fix-up leaves no single affordable upgrade on the table
        slack = budget - spent
        for i in range(50):
            for j in range(3):
                if qn[i, j] > qn[i, c[i]] and cost[j] - cost[c[i]] <= slack - 1e-9:
                    pytest.fail(f"upgrade of prompt {i} to {j} still fits")
    lam, c = solve_total(qn, cost, 10_000.0, allowed)
    assert lam == 0.0 and (c == choose(qn, cost / 10, 0.0)).all()


def test_solve_total_counts_model_loads_and_rejects_impossible() -> None:
    qn = np.array([[0.1, 0.9]] * 4)
    cost = np.array([1.0, 2.0])
    load = np.array([5.0, 100.0])
    models = ["a", "b"]
    lam, c = solve_total(qn, cost, 50.0, np.ones(2, bool), load, models)
    assert c.tolist() == [0, 0, 0, 0]  # loading b would not fit
    lam, c = solve_total(qn, cost, 120.0, np.ones(2, bool), load, models)
    assert plan_cost(c, cost, load, models) <= 120.0 and 1 in c.tolist()
    with pytest.raises(InputError, match="below the cheapest plan"):
        solve_total(qn, cost, 3.0, np.ones(2, bool), load, models)
