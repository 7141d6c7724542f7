"""The routing rule (catimg.routing.rule): normalisation, argmax with deterministic ties, switch points and
the exact path of a λ sweep."""

from __future__ import annotations

import numpy as np
import pytest

from catimg.routing.rule import (
    choose,
    choose_metric,
    cost_scale,
    normalise,
    normalise_cost,
    normalise_quality,
    runner_up,
    sweep_path,
    switch_points,
    values,
)

CN = np.array([0.1, 0.25, 0.45, 0.7, 1.0])


def test_choose_is_argmax_of_value_with_cheap_tie_break() -> None:
    qn = np.array([[0.5, 0.9], [0.5, 0.5], [0.8, 0.6]])
    cn = np.array([0.1, 1.0])
    assert choose(qn, cn, 0.0).tolist() == [1, 0, 0]  # tie in row 2 goes to the cheaper column
    assert choose(qn, cn, 1.0).tolist() == [0, 0, 0]
    assert choose(qn, cn, 0.3).tolist() == [1, 0, 0]  # 0.9-0.3 = 0.6 > 0.5-0.03
    allowed = np.array([False, True])
    assert choose(qn, cn, 5.0, allowed).tolist() == [1, 1, 1]


def test_choose_monotone_in_lambda() -> None:
    rng = np.random.default_rng(0)
    qn = rng.random((200, 4))
    cn = np.array([0.05, 0.2, 0.5, 1.0])
    prev_cost, prev_q = np.inf, np.inf
    for lam in [0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0]:
        c = choose(qn, cn, lam)
        cost, q = cn[c].mean(), qn[np.arange(200), c].mean()
        assert cost <= prev_cost + 1e-12 and q <= prev_q + 1e-12
        prev_cost, prev_q = cost, q


def test_choose_ties_cheaper_then_lower_index_and_nan_never_wins() -> None:
    cn = np.array([1.0, 0.5, 0.5, 0.2])
    # every value equal at λ = 0: the cheapest column wins although it is the last
    assert choose(np.full((1, 4), 0.7), cn, 0.0).tolist() == [3]
    # columns 1 and 2 tie on value and cost: the lower index wins
    assert choose(np.array([[0.1, 0.9, 0.9, 0.1]]), cn, 0.0).tolist() == [1]
    # a difference below the rounding (1e-12) is a tie, one above it is not
    assert choose(np.array([[0.7 + 1e-14, 0.7, 0.0, 0.0]]), cn, 0.0).tolist() == [1]
    assert choose(np.array([[0.7 + 1e-9, 0.7, 0.0, 0.0]]), cn, 0.0).tolist() == [0]
    # no prediction (NaN) never wins, nor a column outside `allowed`
    assert choose(np.array([[np.nan, 0.2, 0.1, 0.0]]), cn, 0.0).tolist() == [1]
    allowed = np.array([True, False, True, True])
    assert choose(np.array([[0.1, 0.9, 0.3, 0.0]]), cn, 0.0, allowed).tolist() == [2]


def test_normalise_zero_quality_span_divides_by_one() -> None:
    q = np.array([[2.0, 2.5], [1.5, 2.0]])
    # pytest turns warnings into errors: a division by zero would fail here
    assert normalise_quality(q, (2.0, 2.0)).tolist() == [[0.0, 0.5], [-0.5, 0.0]]
    assert normalise_quality(q, (1.0, 5.0)).tolist() == [[0.25, 0.375], [0.125, 0.25]]
    assert choose_metric(q, np.array([1.0, 4.0]), 0.0, (2.0, 2.0)).tolist() == [1, 1]
    assert choose_metric(q, np.array([1.0, 4.0]), 1.0, (2.0, 2.0)).tolist() == [0, 0]  # 0.5 - 1 < 0 - 0.25
    assert np.isfinite(sweep_path(*normalise(q, np.array([1.0, 4.0]), (2.0, 2.0))).state_lambdas()).all()


def test_cost_scale_is_the_max_over_the_reference_columns() -> None:
    cost = np.array([1.0, 4.0, 12.0, np.nan])
    assert cost_scale(cost) == 12.0  # NaN (unknown cost) ignored
    assert cost_scale(cost, np.array([True, True, False, False])) == 4.0
    assert cost_scale(np.array([np.nan, np.inf, 0.0])) == 1.0  # no usable cost: divide by 1
    assert normalise_cost(cost, np.array([True, True, True, False]))[:3].tolist() == [1 / 12, 4 / 12, 1.0]
    qn, cn = normalise(np.array([[3.0, 5.0, 4.0, 1.0]]), cost, (1.0, 5.0))
    assert qn.tolist() == [[0.5, 1.0, 0.75, 0.0]] and cn[2] == 1.0


def test_fixed_cost_scale_makes_choice_independent_of_unchosen_generators() -> None:
    """With C taken over the reference set (not over the allowed columns), taking away a generator that a
    prompt did not choose never changes that prompt's choice."""
    rng = np.random.default_rng(3)
    qn = rng.random((300, 5))
    cn = normalise_cost(np.array([0.5, 2.0, 4.0, 7.0, 12.0]))
    for lam in (0.1, 0.4, 1.0):
        full = choose(qn, cn, lam)
        for k in range(5):
            allowed = np.arange(5) != k
            kept = full != k
            assert (choose(qn, cn, lam, allowed)[kept] == full[kept]).all()


def _brute_force(qn_row: np.ndarray, cn: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The choice at every λ of ``grid`` for one prompt (each grid point a row at λ = 0)."""
    return choose(qn_row[None, :] - grid[:, None] * cn[None, :], cn, 0.0)


@pytest.mark.parametrize("lam0", [0.05, 0.3, 1.2])
def test_switch_points_agree_with_brute_force_over_a_lambda_grid(lam0: float) -> None:
    rng = np.random.default_rng(7)
    qn = rng.random((40, CN.size))
    allowed = np.ones(CN.size, bool)
    step = 1e-4
    grid = np.arange(0.0, 8.0, step)  # every crossing here is below 1 / 0.15 < 8
    chosen = choose(qn, CN, lam0)
    checked_down = checked_up = 0
    for i in range(len(qn)):
        sw = switch_points(qn[i], CN, int(chosen[i]), allowed)
        ch = _brute_force(qn[i], CN, grid)
        at0 = int(np.searchsorted(grid, lam0))
        above = np.flatnonzero(ch[at0:] != chosen[i])
        if sw.down is None:
            assert above.size == 0  # nothing cheaper ever takes over
        else:
            k = at0 + int(above[0])
            assert grid[k - 1] < sw.down.lam <= grid[k] + 1e-9 and ch[k] == sw.down.column
            checked_down += 1
        below = np.flatnonzero(ch[:at0] != chosen[i])
        if sw.up is None:
            assert below.size == 0  # nothing dearer ever takes over
        else:
            k = int(below[-1])
            assert grid[k] < sw.up.lam <= grid[k + 1] + 1e-9 and ch[k] == sw.up.column
            checked_up += 1
    assert checked_down > 0 and checked_up > 0  # both sides exercised


def test_runner_up_is_the_best_other_allowed_column() -> None:
    rng = np.random.default_rng(11)
    qn = rng.random((50, CN.size))
    allowed = np.array([True, True, False, True, True])
    lam = 0.4
    chosen = choose(qn, CN, lam, allowed)
    v = values(qn, CN, lam)
    for i in range(len(qn)):
        k = runner_up(qn[i], CN, lam, int(chosen[i]), allowed)
        rest = [j for j in range(CN.size) if allowed[j] and j != chosen[i]]
        assert k == max(rest, key=lambda j: (v[i, j], -CN[j], -j))
    assert runner_up(qn[0], CN, lam, 1, np.array([False, True, False, False, False])) is None


def _tied_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised predictions full of ties (coarse values, a duplicated prompt, equally dear generators, NaN)
    and their costs."""
    rng = np.random.default_rng(seed)
    q = np.round(4.0 * rng.random((20, 5)), 1)
    q[1] = q[0]
    q[3, 2] = np.nan
    cost = np.array([0.5, 2.0, 2.0, 4.0, 12.0])
    return normalise(q, cost, (0.0, 4.0))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_sweep_path_states_are_what_choose_does_and_miss_nothing(seed: int) -> None:
    qn, cn = _tied_case(seed)
    path = sweep_path(qn, cn)
    lams = path.state_lambdas()
    assert lams[0] == 0.0 and (np.diff(lams) > 0).all()
    states = [path.choice(k) for k in range(len(lams))]
    for k, lam in enumerate(lams):  # each state is the choice of the rule at its λ
        assert states[k].tolist() == choose(qn, cn, float(lam)).tolist()
    dense = {tuple(choose(qn, cn, float(lam))) for lam in np.linspace(0.0, lams[-1] * 2, 4001)}
    assert dense <= {tuple(s) for s in states}  # and no choice of a dense sweep is missing
    # past the last state every prompt is at the cheapest generator (the NaN never wins)
    assert states[-1].tolist() == [0] * 20
    # every switch goes to a cheaper generator, so a prompt switches at most g - 1 times
    assert (cn[path.dst] < cn[path.src]).all()
    assert np.bincount(path.row, minlength=20).max() <= 4


def test_sweep_path_sums_match_routing_at_every_state() -> None:
    qn, cn = _tied_case(7)
    V = np.random.default_rng(8).random(qn.shape)
    path = sweep_path(qn, cn)
    expect = [V[np.arange(len(V)), choose(qn, cn, float(lam))].sum() for lam in path.state_lambdas()]
    np.testing.assert_allclose(path.sums(V), expect, rtol=1e-12)


def test_sweep_path_of_one_generator_or_no_prompt_has_one_state() -> None:
    path = sweep_path(np.array([[0.3], [0.9]]), np.array([1.0]))
    assert path.state_lambdas().tolist() == [0.0] and path.choice(0).tolist() == [0, 0]
    empty = sweep_path(np.zeros((0, 3)), np.array([0.1, 0.5, 1.0]))
    assert empty.sums(np.zeros((0, 3))).tolist() == [0.0]
