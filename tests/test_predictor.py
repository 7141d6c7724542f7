"""Quality predictors on real MiniLM embeddings: KNN (the paper's), the Bayesian ridge and the blend."""

from __future__ import annotations

import numpy as np
import pytest

from catimg.routing.encoder import PromptEncoder
from catimg.routing.neighbours import column_neighbours, nearest
from catimg.routing.predictor import (
    BayesLinear,
    Features,
    KNNPredictor,
    RidgePredictor,
    default_k,
    load_predictor,
    make_predictor,
    one_score_deviations,
    split_anchor,
)

SIMPLE = [
    "a white wall",
    "a red apple",
    "a blue cup",
    "a wooden chair",
    "a green leaf",
    "a plain sky",
    "a glass of water",
    "a single stone",
    "a yellow lemon",
    "a black cat",
    "a closed door",
    "a paper plane",
]
BUSY = [
    "a crowded market with many people and colourful stalls",
    "a busy train station full of travellers at rush hour",
    "a festival crowd dancing under fireworks",
    "a packed stadium cheering at night",
    "a street parade with hundreds of musicians",
    "children playing in a crowded park with balloons",
    "a bustling harbour with boats and fishermen",
    "a noisy city square full of tourists and pigeons",
    "a concert hall full of people applauding",
    "a crowded beach with umbrellas and surfers",
    "a school yard full of running children",
    "a night market crowded with shoppers and lanterns",
]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    enc = PromptEncoder(use_cache=False)
    X = enc.encode(SIMPLE + BUSY).astype(np.float64)
    n = len(SIMPLE)
    # generator 0 ("cheap") is good on simple prompts and bad on busy ones; generator 1 is good everywhere
    Y = np.zeros((2 * n, 2))
    rng = np.random.default_rng(0)
    Y[:n, 0], Y[n:, 0] = 4.0, 2.0
    Y[:, 1] = 4.0
    return X, Y + rng.normal(0, 0.1, Y.shape)


def test_default_k() -> None:
    assert default_k(10) == 5 and default_k(527) == 100
    assert default_k(200) == 40 and default_k(10_000) == 100


def test_knn_is_the_mean_of_the_k_nearest(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, Y = data
    p = KNNPredictor(k=3).fit(X, Y)
    mean, std = p.predict(X[:2])
    d = ((X[0] - X) ** 2).sum(1)
    nb = np.argsort(d)[:3]
    assert mean[0, 0] == pytest.approx(Y[nb, 0].mean())
    assert np.all(std > 0)
    idx = nearest(X[:1], X, 2)
    assert idx[0, 0] == 0 and list(idx[0]) == list(np.argsort(((X[0] - X) ** 2).sum(1))[:2])


def test_knn_skips_missing_measurements(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, Y = data
    Y = Y.copy()
    Y[:6, 1] = np.nan
    mean, _ = KNNPredictor(k=2).fit(X, Y).predict(X[:1])
    assert np.isfinite(mean).all()


@pytest.mark.parametrize("name", ["knn", "ridge", "blend", "lexical"])
def test_predictors_separate_simple_and_busy_prompts(data: tuple[np.ndarray, np.ndarray], name: str) -> None:
    emb, Y = data
    X = Features.of(emb, SIMPLE + BUSY)
    n = len(SIMPLE)
    test = np.r_[0, 1, n, n + 1]
    train = np.setdiff1d(np.arange(len(X)), test)
    kw = {"k": 3} if name in ("knn", "blend", "lexical") else {}
    p = make_predictor(name, **kw).fit(X[train], Y[train])
    mean, std = p.predict(X[test])
    assert mean.shape == std.shape == (4, 2)
    # the cheap generator is predicted better on unseen simple prompts than on unseen busy ones
    assert mean[:2, 0].min() > mean[2:, 0].max()
    # round trip through the saved form gives the same predictions
    q = load_predictor(name, p.params(), p.arrays())
    m2, s2 = q.predict(X[test])
    np.testing.assert_allclose(m2, mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(s2, std, rtol=1e-3, atol=1e-4)


def test_ridge_uncertainty_reflects_few_measurements(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, Y = data
    Y = np.c_[Y, Y[:, 1]]
    few = np.ones(len(X), bool)
    few[[0, 5, 13, 20]] = False
    Y[few, 2] = np.nan  # generator 2: measured on 4 prompts only, otherwise the same as generator 1
    p = RidgePredictor().fit(X, Y)
    mean, std = p.predict(X)
    assert std[:, 2].mean() > 1.5 * std[:, 1].mean()
    assert abs(mean[:, 2].mean() - 4.0) < 0.3  # its level comes from its four measurements
    far = (
        PromptEncoder(use_cache=False).encode(["zxqv 12345 lorem ipsum tensor eigenvalue"]).astype(np.float64)
    )
    _, s_far = p.predict(far)
    _, s_near = p.predict(X[:1])
    assert s_far[0, 0] > s_near[0, 0]


def test_ridge_deviation_means_are_predict_parts_without_the_variances(
    data: tuple[np.ndarray, np.ndarray],
) -> None:
    X, Y = data
    p = RidgePredictor().fit(X, Y)
    np.testing.assert_allclose(p.deviation_means(X), p.predict_parts(X)[2], rtol=1e-10, atol=1e-12)


def test_ridge_uncertainty_shrinks_with_more_measurements(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, Y = data
    stds = []
    for n in (3, 8, len(X)):
        Yn = np.c_[Y, Y[:, 1]]
        Yn[n:, 2] = np.nan
        stds.append(RidgePredictor().fit(X, Yn).predict(X)[1][:, 2].mean())
    assert stds[0] > stds[1] > stds[2]


def test_split_anchor_recovers_an_additive_table() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(3, 1, 40), np.array([-0.5, 0.0, 0.5])
    Y = a[:, None] + b[None, :]
    Y[rng.random(Y.shape) < 0.3] = np.nan
    Y[np.all(np.isnan(Y), axis=1), 0] = a[np.all(np.isnan(Y), axis=1)] - 0.5
    anchor, R = split_anchor(Y)
    ok = ~np.isnan(Y)
    np.testing.assert_allclose((anchor[:, None] + R)[ok], Y[ok])
    # a generator's deviation is the same on every prompt: the anchor took the prompt's level
    for j in range(3):
        assert np.nanstd(R[:, j]) < 1e-6


def test_split_anchor_takes_generator_effects_from_prompts_scored_twice() -> None:
    nan = np.nan
    Y = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, nan], [nan, 9.0], [nan, nan]])
    a, R = split_anchor(Y)
    # b = (-0.5, 0.5) from the two prompts scored twice; a one-score prompt's anchor is its score minus its b
    np.testing.assert_allclose(a[:4], [1.5, 3.5, 5.5, 8.5])
    assert np.isnan(a[4]) and np.isnan(R[4]).all()
    assert R[2, 0] == pytest.approx(-0.5) and R[3, 1] == pytest.approx(0.5)
    # nobody scored twice: no generator effects to learn, each anchor is its prompt's score
    a1, R1 = split_anchor(np.array([[1.0, nan], [nan, 3.0]]))
    np.testing.assert_allclose(a1, [1.0, 3.0])
    assert R1[0, 0] == R1[1, 1] == 0.0


def test_one_score_deviations_are_taken_against_the_anchor_model() -> None:
    nan = np.nan
    Y = np.array([[1.0, 2.0], [5.0, nan], [nan, 9.0]])
    a, R = split_anchor(Y)
    out = one_score_deviations(Y, R, np.array([1.5, 4.0, 7.0]))
    np.testing.assert_allclose(out[0], R[0])  # scored twice: its own anchor
    assert out[1, 0] == 1.0 and out[2, 1] == 2.0  # once: the score minus the anchor model's prediction
    assert np.isnan(out[1, 1]) and np.isnan(out[2, 0])
    full = np.array([[1.0, 2.0], [3.0, 5.0]])
    R_full = split_anchor(full)[1]
    assert one_score_deviations(full, R_full, np.zeros(2)) is R_full


def test_a_few_shot_generator_borrows_its_prior_from_prompts_scored_twice() -> None:
    """Generator 1 is measured on 10 prompts; generator 0 on all 400, 390 of them one-score. The prior
    generator 1 borrows comes from generator 0's prompts scored twice (none to speak of here: the anchor's),
    not from its one-score ones, whose targets carry the anchor model's error."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(400, 12))
    level, gap = X @ rng.normal(size=12), X @ rng.normal(0, 0.3, size=12)
    Y = np.c_[level + gap, level - gap] + rng.normal(0, 0.3, (400, 2))
    Y[10:, 1] = np.nan
    p = RidgePredictor().fit(X, Y)
    assert p.devs[0].n == 400  # generator 0 learns from every prompt, one-score ones included
    assert p.devs[1].rho == pytest.approx(p.anchor.rho)  # 10 prompts scored twice: no donor
    Y2 = Y.copy()
    Y2[:60, 1] = (level - gap)[:60]  # now 60 prompts scored twice: a donor, fitted on them alone
    Y2[np.r_[10:25], 1] = np.nan  # (generator 1 keeps 45 of them: its own hyperparameters)
    Y3 = Y2.copy()
    Y3[25:60, 1] = np.nan  # a third generator, measured on the first 10 prompts only
    q = RidgePredictor().fit(X, np.c_[Y2, Y3[:, 1]])
    multi = np.flatnonzero(~np.isnan(Y2[:, 1]))
    a, R = split_anchor(np.c_[Y2, Y3[:, 1]])
    donor = BayesLinear().fit(X[multi], R[multi, 0])
    # it borrows from generator 0 fitted on its 45 twice-scored prompts and from generator 1 (all 45 twice)
    assert q.devs[2].n == 10 and q.devs[2].rho == pytest.approx(float(np.median([donor.rho, q.devs[1].rho])))


@pytest.mark.parametrize("name", ["ridge", "lexical"])
def test_predictors_learn_from_prompts_scored_on_one_generator(
    data: tuple[np.ndarray, np.ndarray], name: str
) -> None:
    """Every training prompt scored by one generator only (as ``gen --score`` collects them): the per-prompt
    anchor would swallow each score, and the router would see no difference between the generators."""
    emb, Y = data
    X = Features.of(emb, SIMPLE + BUSY)
    n = len(SIMPLE)
    test = np.r_[0, 1, n, n + 1]
    train = np.setdiff1d(np.arange(len(X)), test)
    Y1 = Y[train].copy()
    Y1[np.arange(len(train)), np.arange(len(train)) % 2] = np.nan  # alternate prompts keep one score each
    assert ((~np.isnan(Y1)).sum(1) == 1).all()
    p = make_predictor(name, **({"k": 3} if name == "lexical" else {})).fit(X[train], Y1)
    mean, _ = p.predict(X[test])
    gap = mean[:, 1] - mean[:, 0]  # generator 1 over the cheap one: 0 on simple prompts, 2 on busy ones
    # from 20 one-score prompts, shrunk (0.49-0.54 against 0.10-0.20); before, 0 on every prompt
    assert gap[2:].min() > gap[:2].max() + 0.15


def test_bayes_linear_evidence_picks_signal_over_noise() -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(400, 5))
    w = np.array([1.0, -2.0, 0.0, 0.5, 0.0])
    t = X @ w + rng.normal(0, 0.1, 400)
    m = BayesLinear().fit(X, t)
    np.testing.assert_allclose(m.w, w, atol=0.05)
    assert 0.005 < m.noise < 0.02  # the noise variance is about 0.1^2
    flat = BayesLinear().fit(X, rng.normal(0, 1.0, 400))  # no signal: weights shrink towards zero
    assert np.abs(flat.w).max() < 0.2


def test_ridge_prediction_is_linear_in_the_data_size() -> None:
    """Fit and predict at 20,000 prompts x 6 generators (a quarter missing) without n x n memory."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(20000, 384))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Y = rng.normal(size=(20000, 6)) + X[:, :6]
    Y[rng.random(Y.shape) < 0.25] = np.nan
    p = RidgePredictor().fit(X, Y)
    sizes = {k: v.size for k, v in p.arrays().items()}
    assert max(sizes.values()) <= 384 * 384  # nothing grows with the number of prompts
    mean, std = p.predict(X[:10000])
    assert mean.shape == std.shape == (10000, 6) and np.isfinite(mean).all() and (std > 0).all()


def test_fit_rejects_unmeasured_generator(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, Y = data
    Y = Y.copy()
    Y[:, 0] = np.nan
    with pytest.raises(ValueError, match=r"generator columns \[0\] have no measurements"):
        RidgePredictor().fit(X, Y)


def test_column_neighbours_share_one_search_and_match_a_search_per_column() -> None:
    """The shared search (columns measured on most rows) gives each query the same k nearest measured rows
    as a search over that column's measured rows alone, including queries whose first K rows hold too few
    measured ones (the fallback) and a sparsely measured column (its own search)."""
    rng = np.random.default_rng(5)
    T = rng.normal(size=(600, 16)).astype(np.float32)
    Q = rng.normal(size=(80, 16)).astype(np.float32)
    Y = rng.normal(size=(600, 3))
    Y[rng.random(600) < 0.3, 0] = np.nan
    Y[:, 1][np.argsort(((Q[0] - T) ** 2).sum(1))[:150]] = (
        np.nan
    )  # query 0's neighbourhood unmeasured: fallback
    Y[40:, 2] = np.nan  # measured on 40 rows: a search of its own, k' = min(k, 40)
    got = column_neighbours(Q, T, Y, 50)
    for j in range(3):
        rows = np.flatnonzero(~np.isnan(Y[:, j]))
        d = ((Q[:, None, :].astype(np.float64) - T[rows][None].astype(np.float64)) ** 2).sum(2)
        want = Y[rows, j][np.argsort(d, axis=1, kind="stable")[:, : min(50, len(rows))]]
        assert got[j].shape == want.shape
        np.testing.assert_allclose(np.sort(got[j], 1), np.sort(want, 1))
