"""Cross-validation inside the training data: out-of-fold predictions, and the one setting a training run
chooses from them.

Contract:

- :func:`cross_predict` predicts rows of a table, each by a model fitted without that row's *prompt* (folds
  are drawn over prompt keys, so a prompt two sets of a joint table measured is left out of both). It returns
  an :class:`OutOfFold`, which keeps ``blend``'s and ``lexical``'s predictions at KNN share 0 and 1 apart, so
  that any share's predictions are one line away without refitting.
- :func:`choose_share` is the KNN share of those predictors (how much of a generator's predicted deviation
  comes from the nearest training prompts rather than the linear part) that fits the out-of-fold
  *differences between generators* on a prompt best in least squares: what the routing rule argmax(q - lambda
  c) depends on. Closed form (the error is quadratic in the share), clipped to [0, 1].
- :func:`fit_predictor` is how ``catimg train`` and the routing benchmark fit a predictor: fit on every row,
  then, for ``blend`` and ``lexical`` without an explicit ``weight``, set the share chosen from the
  out-of-fold predictions over the training rows. Its fold models keep neighbour clusters of the shipped
  model's size (:func:`fold_fitter`). The routing benchmark calls it inside each of its own folds,
  so its held-out numbers include the choice (nested cross-validation); ``catimg train`` reuses the same
  out-of-fold pass for the data card's held-out numbers and the budget levels, so the choice costs no fit.

Cost: ``folds`` fits on at most MAX_CV_PROMPTS rows (a seeded sample beyond that).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from catimg.routing.predictor import BlendPredictor, Inputs, Predictor, make_predictor

OOF_FOLDS = 5
#: Cross-validation (held-out numbers, budget levels, the KNN share) runs on at most this many prompts.
MAX_CV_PROMPTS = 20000
#: A share is chosen only from at least this many prompts measured on two generators or more.
MIN_SHARE_PROMPTS = 20

#: Fits a predictor on (inputs, scores): one fold's model.
Fitter = Callable[[Inputs, np.ndarray], Predictor]


@dataclass(frozen=True)
class OutOfFold:
    """Out-of-fold predicted means of ``rows`` of a table: ``linear`` at KNN share 0 (for predictors without
    a share, their predictions), ``knn`` at share 1 (None without a share). Every cell is filled: a cell no
    fold could predict holds its generator's mean."""

    rows: np.ndarray
    linear: np.ndarray
    knn: np.ndarray | None

    def at(self, share: float | None) -> np.ndarray:
        if self.knn is None or share is None:
            return self.linear
        return self.linear + share * (self.knn - self.linear)


def cv_rows(n: int, seed: int) -> np.ndarray:
    """The rows cross-validation predicts: all of them up to MAX_CV_PROMPTS, else a seeded sample."""
    if n <= MAX_CV_PROMPTS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, MAX_CV_PROMPTS, replace=False))


def plain_fitter(name: str, params: dict[str, Any] | None = None) -> Fitter:
    return lambda X, Y: make_predictor(name, **(params or {})).fit(X, Y)


def fold_fitter(name: str, params: dict[str, Any] | None, n: int) -> Fitter:
    """Fits a fold's model as the model on all ``n`` rows is fitted, with ``blend``'s and ``lexical``'s
    neighbour memory (``knn_max``) scaled to the fold's share of those rows when n exceeds it.

    Beyond ``knn_max`` prompts that memory is clusters of about n / (knn_max / 2) prompts each; scaled, a
    fold's clusters hold as many, so the out-of-fold predictions (the KNN share, the held-out numbers, the
    budget levels) describe the model that ships. Unscaled, a fold of the 20,000-prompt sample of 100,000
    would cluster about 4 prompts together where the shipped model clusters 25."""
    params = dict(params or {})
    probe = make_predictor(name, **params)
    if not isinstance(probe, BlendPredictor) or n <= probe.knn_max:
        return plain_fitter(name, params)
    knn_max = probe.knn_max

    def fit(X: Inputs, Y: np.ndarray) -> Predictor:
        scaled = max(2, round(knn_max * len(Y) / n))
        return make_predictor(name, **{**params, "knn_max": scaled}).fit(X, Y)

    return fit


def share_parts(model: Predictor, X: Inputs) -> tuple[np.ndarray, np.ndarray | None]:
    """A fitted model's predicted means at KNN share 0 and 1 (share 1: None for a predictor without one)."""
    if isinstance(model, BlendPredictor):
        return model.predict_shares(X)
    return model.predict(X)[0], None


def fold_of(keys: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold number per row: the distinct keys in order of first appearance (with one row per key, key j is
    row j), split into ``folds`` parts by a seeded permutation; rows with the same key share a fold."""
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    k = max(1, min(folds, len(first)))
    position = np.empty(len(first), dtype=int)
    position[np.argsort(first)] = np.arange(len(first))
    fold_at = np.empty(len(first), dtype=int)
    for f, part in enumerate(np.array_split(np.random.default_rng(seed).permutation(len(first)), k)):
        fold_at[part] = f
    return np.asarray(fold_at[position[inverse.ravel()]])


def cross_predict(
    fit: Fitter,
    X: Inputs,
    Y: np.ndarray,
    rows: np.ndarray | None = None,
    keys: np.ndarray | None = None,
    folds: int = OOF_FOLDS,
    seed: int = 0,
    fit_on_all: bool = False,
    shares: bool = False,
) -> OutOfFold:
    """Out-of-fold predictions of ``rows`` (default: every row); with ``shares``, a ``blend`` or ``lexical``
    model's predictions at KNN share 0 and 1 (:func:`share_parts`), else each fold model's own predictions.

    ``keys`` groups rows that are the same prompt (default: every row its own prompt). A fold's model is
    fitted on the other folds' rows, or with ``fit_on_all`` on every row of the table whose prompt is not
    in that fold; generators with no score among those rows are left to their mean."""
    rows = np.arange(len(Y)) if rows is None else np.asarray(rows)
    keys = np.arange(len(Y)) if keys is None else np.asarray(keys)
    fold = fold_of(keys[rows], folds, seed)
    linear = np.full((len(rows), Y.shape[1]), np.nan)
    knn: np.ndarray | None = None
    pool = np.arange(len(Y)) if fit_on_all else rows
    for f in range(int(fold.max()) + 1 if len(rows) else 0):
        test = np.flatnonzero(fold == f)
        tr = pool[~np.isin(keys[pool], keys[rows[test]])]
        usable = np.flatnonzero(~np.all(np.isnan(Y[tr]), axis=0))
        if not len(tr) or not len(usable):
            continue
        model = fit(X[tr], Y[tr][:, usable])
        lin, near = share_parts(model, X[rows[test]]) if shares else (model.predict(X[rows[test]])[0], None)
        linear[np.ix_(test, usable)] = lin
        if near is not None:
            knn = np.full(linear.shape, np.nan) if knn is None else knn
            knn[np.ix_(test, usable)] = near
    col = np.nanmean(Y, axis=0)[None, :]
    return OutOfFold(
        rows,
        np.where(np.isnan(linear), col, linear),
        None if knn is None else np.where(np.isnan(knn), col, knn),
    )


def choose_share(oof: OutOfFold, Y: np.ndarray) -> float | None:
    """The KNN share in [0, 1] that minimises the squared error of the out-of-fold predictions *centred per
    prompt* (the differences between generators) over prompts measured on two generators or more; None
    when there is no share to choose or too few such prompts. ``Y``: the scores of ``oof.rows``."""
    if oof.knn is None:
        return None
    M = ~np.isnan(Y)
    multi = M.sum(1) >= 2
    if multi.sum() < MIN_SHARE_PROMPTS:
        return None

    def centred(A: np.ndarray) -> np.ndarray:
        A = np.where(M, A, np.nan)[multi]
        return np.nan_to_num(A - np.nanmean(A, axis=1, keepdims=True))

    e0 = centred(oof.linear - Y)  # the error at share 0 ...
    g = centred(oof.knn - oof.linear)  # ... changes by share x g
    gg = float(np.sum(g * g))
    if gg <= 1e-12:
        return None
    return float(np.clip(-np.sum(e0 * g) / gg, 0.0, 1.0))


@dataclass(frozen=True)
class Fitted:
    """A predictor fitted on every row (in ``fit_seconds``), and the out-of-fold pass over its training rows
    (None when it was not needed); ``share``: the KNN share chosen from that pass (None: not chosen)."""

    predictor: Predictor
    oof: OutOfFold | None
    fit_seconds: float
    share: float | None = None

    def held_out(self) -> np.ndarray:
        """The out-of-fold predictions of the shipped settings (at the predictor's KNN share)."""
        assert self.oof is not None
        model = self.predictor
        return self.oof.at(model.weight if isinstance(model, BlendPredictor) else None)

    def share_note(self) -> str:
        """How the KNN share was chosen, for the data card ("" when it was not)."""
        if self.share is None:
            return ""
        return (
            f"; the KNN share {self.share:.3f} was fitted to these out-of-fold predictions (least squares of "
            "the differences between generators on a prompt), so they are slightly optimistic for it"
        )


def fit_predictor(
    name: str,
    X: Inputs,
    Y: np.ndarray,
    params: dict[str, Any] | None = None,
    seed: int = 0,
    keys: np.ndarray | None = None,
    cross_validate: bool = True,
    fit_on_all: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Fitted:
    """Fit ``name`` on every row; ``blend`` and ``lexical`` get the KNN share of :func:`choose_share` unless
    ``params`` fixes ``weight``. The out-of-fold pass (:func:`cross_predict` over :func:`cv_rows`, folds over
    ``keys``) runs when ``cross_validate`` asks for it or a share is chosen, on 10 rows or more;
    ``progress`` hears when it starts."""
    params = dict(params or {})
    model = make_predictor(name, **params)
    if isinstance(model, BlendPredictor) and "seed" not in params:
        params["seed"] = model.seed = seed  # the neighbour clusters' k-means sample, as the folds
    t0 = time.perf_counter()
    model.fit(X, Y)
    fit_seconds = time.perf_counter() - t0
    tune = isinstance(model, BlendPredictor) and "weight" not in params
    if not (cross_validate or tune) or len(Y) < 10:
        return Fitted(model, None, fit_seconds)
    if progress:
        progress("cross-validating (held-out numbers, budget levels" + (", KNN share)" if tune else ")"))
    rows = cv_rows(len(Y), seed)
    fit = fold_fitter(name, params, len(Y))
    oof = cross_predict(fit, X, Y, rows, keys, seed=seed, fit_on_all=fit_on_all, shares=True)
    share = choose_share(oof, Y[rows]) if tune else None
    if share is not None:
        assert isinstance(model, BlendPredictor)
        model.weight = share
    return Fitted(model, oof, fit_seconds, share)
