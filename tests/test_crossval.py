"""Cross-validation inside the training data and the KNN share a training run chooses from it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from catimg.routing.predictor import BlendPredictor, Features
from catimg.training.crossval import (
    OutOfFold,
    choose_share,
    cross_predict,
    fit_predictor,
    fold_fitter,
    fold_of,
    plain_fitter,
)


def _unit(rng: np.random.Generator, n: int, d: int = 6) -> np.ndarray:
    E = rng.normal(size=(n, d))
    return E / np.linalg.norm(E, axis=1, keepdims=True)


def _table(E: np.ndarray, dev: np.ndarray, rng: np.random.Generator, noise: float = 0.1) -> np.ndarray:
    """Three generators: a prompt difficulty shared by all, plus ``dev`` on the second, noise everywhere."""
    a = E @ rng.normal(size=E.shape[1])
    Y = np.column_stack([a, a + dev, a - 0.3]) + noise * rng.normal(size=(len(E), 3))
    Y[rng.random(Y.shape) < 0.1] = np.nan  # some cells not measured
    return Y


def test_choose_share_is_the_least_squares_share_of_the_differences_between_generators() -> None:
    """The closed form equals a brute-force search of the centred squared error over a fine grid, and is
    clipped to [0, 1]; an unmeasured cell and a prompt with one score play no part."""
    rng = np.random.default_rng(0)
    Y = rng.normal(size=(200, 3))
    Y[rng.random(Y.shape) < 0.2] = np.nan
    lin = Y + rng.normal(size=Y.shape)
    knn = Y + 0.5 * rng.normal(size=Y.shape)
    oof = OutOfFold(np.arange(200), np.nan_to_num(lin), np.nan_to_num(knn))
    share = choose_share(oof, Y)
    assert share is not None and 0.0 < share < 1.0

    def err(s: float) -> float:
        M = ~np.isnan(Y)
        keep = M.sum(1) >= 2
        E = np.where(M, oof.at(s) - Y, np.nan)[keep]
        return float(np.nansum((E - np.nanmean(E, axis=1, keepdims=True)) ** 2))

    grid = np.linspace(0, 1, 2001)
    assert share == pytest.approx(grid[np.argmin([err(s) for s in grid])], abs=1e-3)
    # the KNN part exactly right: share 1; the linear part exactly right: share 0 (clipped, not beyond)
    assert choose_share(OutOfFold(oof.rows, oof.linear, np.nan_to_num(Y)), Y) == pytest.approx(1.0)
    assert choose_share(OutOfFold(oof.rows, np.nan_to_num(Y), oof.knn), Y) == pytest.approx(0.0)
    # a predictor without a share, and too few prompts with two scores: nothing to choose
    assert choose_share(OutOfFold(oof.rows, oof.linear, None), Y) is None
    assert choose_share(OutOfFold(oof.rows[:10], oof.linear[:10], oof.knn[:10]), Y[:10]) is None


def test_the_share_follows_what_the_data_rewards() -> None:
    """A deviation that is a smooth linear function of the embedding gets a small KNN share; one that flips
    sign from quadrant to quadrant (no linear model can fit it, neighbours can) gets a large one."""
    rng = np.random.default_rng(1)
    E = _unit(rng, 600)
    linear = fit_predictor("blend", E, _table(E, 2.0 * E[:, 0], rng), cross_validate=False)
    xor = fit_predictor("blend", E, _table(E, np.sign(E[:, 0] * E[:, 1]), rng), cross_validate=False)
    assert linear.share is not None and xor.share is not None
    assert linear.share < 0.3 < 0.6 < xor.share
    assert isinstance(xor.predictor, BlendPredictor) and xor.predictor.weight == xor.share
    assert xor.predictor.params()["weight"] == xor.share


def test_an_explicit_share_is_kept_and_knn_ridge_get_no_share() -> None:
    rng = np.random.default_rng(2)
    E = _unit(rng, 120)
    Y = _table(E, np.sign(E[:, 0] * E[:, 1]), rng)
    fixed = fit_predictor("blend", E, Y, {"weight": 0.25})
    assert fixed.share is None and fixed.predictor.params()["weight"] == 0.25
    assert fixed.oof is not None and fixed.share_note() == ""
    # the data card's out-of-fold predictions are those of the shipped share
    assert np.allclose(fixed.held_out(), fixed.oof.at(0.25))
    for name in ("knn", "ridge"):
        f = fit_predictor(name, E, Y)
        assert f.share is None and f.oof is not None and f.oof.knn is None
        assert fit_predictor(name, E, Y, cross_validate=False).oof is None  # nothing to choose: no pass
    assert fit_predictor("blend", E[:8], Y[:8]).oof is None  # fewer than 10 prompts: no cross-validation


def test_shares_of_one_pass_are_the_predictions_of_models_fitted_with_that_share() -> None:
    """``OutOfFold.at(s)`` from one pass equals a pass whose fold models were built with share s: choosing
    the share needs no refit."""
    rng = np.random.default_rng(3)
    E = _unit(rng, 150)
    Y = _table(E, np.sign(E[:, 0]), rng)
    texts = [f"prompt number {i} with {'red' if i % 3 else 'blue'} things" for i in range(150)]
    X = Features.of(E, texts)
    both = cross_predict(plain_fitter("lexical"), X, Y, shares=True)
    assert both.knn is not None
    for s in (0.0, 0.3, 1.0):
        alone = cross_predict(plain_fitter("lexical", {"weight": s}), X, Y)
        assert alone.knn is None and np.allclose(both.at(s), alone.at(None))


def test_folds_keep_a_prompts_rows_together_and_match_row_folds_without_keys() -> None:
    keys = np.array(["a", "b", "a", "c", "d", "b", "e"])
    fold = fold_of(keys, 3, seed=0)
    for k in set(keys):
        assert len(set(fold[keys == k])) == 1
    # one row per key: the seeded permutation of the rows, split in parts (what the benchmark's repeats use)
    perm = np.random.default_rng(4).permutation(10)
    expect = np.empty(10, int)
    for f, part in enumerate(np.array_split(perm, 5)):
        expect[part] = f
    assert list(fold_of(np.arange(10), 5, seed=4)) == list(expect)


def test_catimg_train_records_the_chosen_share(tmp_path: Path) -> None:
    """Through the real CLI: the router's predictor carries the chosen share, and the data card says how it
    was chosen (and that its held-out numbers are slightly optimistic for it)."""
    from harness import run_cli
    from test_router import write_case

    models, m = write_case(tmp_path)
    code, out, err = run_cli(
        "train", "--measurements", str(m), "--models", str(models), "--out", str(tmp_path / "r")
    )
    assert code == 0, out + err
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    weight = cfg["predictor"]["params"]["weight"]
    assert 0.0 <= weight <= 1.0
    assert f"the KNN share {weight:.3f} was fitted" in cfg["data_card"]["held_out"]["split"]


def test_fold_models_cluster_neighbours_as_the_model_on_every_row_does() -> None:
    """Beyond ``knn_max`` prompts a fold's neighbour memory is scaled to the fold's share of the rows, so its
    clusters hold as many prompts as the full model's; up to it, and for predictors without one, a fold is
    fitted with the given settings unchanged."""
    rng = np.random.default_rng(3)
    E = _unit(rng, 400)
    Y = _table(E, np.sin(3 * E[:, 0]), rng)
    full = fit_predictor("blend", E, Y, {"knn_max": 40}, cross_validate=False).predictor
    assert isinstance(full, BlendPredictor) and full.nb is not None
    fold = fold_fitter("blend", {"knn_max": 40}, 400)(E[:320], Y[:320])
    assert isinstance(fold, BlendPredictor) and fold.nb is not None
    assert fold.knn_max == 32
    size = (~np.isnan(Y)).sum() / len(full.nb.X), (~np.isnan(Y[:320])).sum() / len(fold.nb.X)
    assert size[1] == pytest.approx(size[0], rel=0.2)  # measurements per cluster: about 20 in both
    same = fold_fitter("blend", {"knn_max": 500}, 400)(E[:320], Y[:320])
    assert isinstance(same, BlendPredictor) and same.knn_max == 500 and same.nb is not None
    assert same.nb.per_prompt  # an exact KNN, as the model on every row has
    assert not isinstance(fold_fitter("ridge", None, 400)(E[:320], Y[:320]), BlendPredictor)
