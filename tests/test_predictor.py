"""Quality predictors on real MiniLM embeddings: KNN (the paper's) and the GP."""

from __future__ import annotations

import numpy as np
import pytest

from catimg.encoder import PromptEncoder
from catimg.predictor import GPPredictor, KNNPredictor, default_k, load_predictor, make_predictor

SIMPLE = ["a white wall", "a red apple", "a blue cup", "a wooden chair", "a green leaf", "a plain sky",
          "a glass of water", "a single stone", "a yellow lemon", "a black cat", "a closed door", "a paper plane"]
BUSY = ["a crowded market with many people and colourful stalls", "a busy train station full of travellers at rush hour",
        "a festival crowd dancing under fireworks", "a packed stadium cheering at night",
        "a street parade with hundreds of musicians", "children playing in a crowded park with balloons",
        "a bustling harbour with boats and fishermen", "a noisy city square full of tourists and pigeons",
        "a concert hall full of people applauding", "a crowded beach with umbrellas and surfers",
        "a school yard full of running children", "a night market crowded with shoppers and lanterns"]


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
    idx, d2 = p.neighbour_index(X[:1], 2)
    assert idx[0, 0] == 0 and d2[0, 0] == pytest.approx(0.0, abs=1e-5)


def test_knn_skips_missing_measurements(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, Y = data
    Y = Y.copy()
    Y[:6, 1] = np.nan
    mean, _ = KNNPredictor(k=2).fit(X, Y).predict(X[:1])
    assert np.isfinite(mean).all()


@pytest.mark.parametrize("name", ["knn", "gp"])
def test_predictors_separate_simple_and_busy_prompts(data: tuple[np.ndarray, np.ndarray], name: str) -> None:
    X, Y = data
    n = len(SIMPLE)
    test = np.r_[0, 1, n, n + 1]
    train = np.setdiff1d(np.arange(len(X)), test)
    p = make_predictor(name, **({"k": 3} if name == "knn" else {})).fit(X[train], Y[train])
    mean, std = p.predict(X[test])
    assert mean.shape == std.shape == (4, 2)
    # the cheap generator is predicted better on unseen simple prompts than on unseen busy ones
    assert mean[:2, 0].min() > mean[2:, 0].max()
    # round trip through the saved form gives the same predictions
    q = load_predictor(name, p.params(), p.arrays())
    m2, s2 = q.predict(X[test])
    np.testing.assert_allclose(m2, mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(s2, std, rtol=1e-3, atol=1e-4)


def test_gp_uncertainty_reflects_few_measurements(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, Y = data
    Y = np.c_[Y, Y[:, 1]]
    few = np.ones(len(X), bool)
    few[[0, 5, 13, 20]] = False
    Y[few, 2] = np.nan  # generator 2: measured on 4 prompts only, otherwise the same as generator 1
    p = GPPredictor().fit(X, Y)
    _, std = p.predict(X)
    assert std[:, 2].mean() > 1.5 * std[:, 1].mean()
    far = PromptEncoder(use_cache=False).encode(["zxqv 12345 lorem ipsum tensor eigenvalue"]).astype(np.float64)
    _, s_far = p.predict(far)
    _, s_near = p.predict(X[:1])
    assert s_far[0, 0] > s_near[0, 0]


def test_fit_rejects_unmeasured_generator(data: tuple[np.ndarray, np.ndarray]) -> None:
    X, Y = data
    Y = Y.copy()
    Y[:, 0] = np.nan
    with pytest.raises(ValueError, match=r"generator columns \[0\] have no measurements"):
        GPPredictor().fit(X, Y)
