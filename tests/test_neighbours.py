"""The neighbour memory of ``blend`` and ``lexical``: exact up to ``max_protos`` prompts, clusters of all the
prompts beyond, and routers of format 2 still read."""

from __future__ import annotations

import numpy as np

from catimg.routing.neighbours import Neighbours, column_neighbours, group_sums, spherical_kmeans
from catimg.routing.predictor import BlendPredictor, load_predictor


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def _table(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    emb = _unit(rng.normal(size=(n, 12)))
    R = rng.normal(size=(n, 3))
    R[rng.random(n) < 0.3, 0] = np.nan  # mostly measured: the shared search
    R[12:, 2] = np.nan  # measured on 12 prompts: a search of its own
    return emb, R


def _whole_clusters(Q: np.ndarray, nb: Neighbours, k: int) -> np.ndarray:
    """The definition, by brute force: per query and column, the nearest clusters taken whole until they hold
    at least min(k, measured) measurements; the mean of those."""
    out = np.empty((len(Q), nb.S.shape[1]))
    for i, q in enumerate(Q):
        order = np.argsort(((nb.X.astype(np.float64) - q) ** 2).sum(1), kind="stable")
        for j in range(nb.S.shape[1]):
            need = min(k, nb.N[:, j].sum())
            cn = np.cumsum(nb.N[order, j])
            last = int(np.argmax(cn >= need - 1e-9))
            out[i, j] = nb.S[order[: last + 1], j].sum() / cn[last]
    return out


def test_up_to_max_protos_every_prompt_is_a_neighbour_and_the_means_are_an_exact_knn() -> None:
    emb, R = _table(300)
    nb = Neighbours.build(emb, R, max_protos=300)
    assert nb.per_prompt and len(nb.X) == 300
    Q = _unit(np.random.default_rng(9).normal(size=(40, 12)))
    want = np.stack([v.mean(1) for v in column_neighbours(Q, emb, R, 20)], 1)
    np.testing.assert_allclose(nb.means(Q, 20), want, rtol=1e-6)


def test_beyond_max_protos_clusters_hold_every_prompt_and_whole_clusters_make_a_neighbourhood() -> None:
    emb, R = _table(900)
    nb = Neighbours.build(emb, R, max_protos=120)
    assert not nb.per_prompt and len(nb.X) <= 60
    np.testing.assert_allclose(np.linalg.norm(nb.X, axis=1), 1.0, rtol=1e-5)
    measured = ~np.isnan(R)
    np.testing.assert_allclose(nb.N.sum(0), measured.sum(0))  # nothing sampled away
    np.testing.assert_allclose(nb.S.sum(0), np.where(measured, R, 0).sum(0))
    Q = _unit(np.random.default_rng(3).normal(size=(50, 12)))
    got = nb.means(Q, 40)
    np.testing.assert_allclose(got, _whole_clusters(Q, nb, 40), rtol=1e-6)
    # the column measured on 12 prompts: every query's neighbourhood is all of them
    np.testing.assert_allclose(got[:, 2], np.nanmean(R[:, 2]), rtol=1e-6)


def test_clusters_keep_what_is_local() -> None:
    """Two groups of prompts far apart, with opposite deviations: each query gets its own group's mean."""
    rng = np.random.default_rng(4)
    a, b = np.eye(12)[0], np.eye(12)[1]
    emb = _unit(np.vstack([a + 0.1 * rng.normal(size=(400, 12)), b + 0.1 * rng.normal(size=(400, 12))]))
    R = np.concatenate([np.full(400, 1.0), np.full(400, -1.0)])[:, None] + 0.1 * rng.normal(size=(800, 1))
    nb = Neighbours.build(emb, R, max_protos=64)
    got = nb.means(_unit(np.vstack([a, b])), 100)[:, 0]
    assert got[0] > 0.9 and got[1] < -0.9


def test_kmeans_is_seeded_and_group_sums_add_up() -> None:
    emb, _ = _table(500)
    c1, a1 = spherical_kmeans(emb, 30, seed=1)
    c2, a2 = spherical_kmeans(emb, 30, seed=1)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(c1, c2)
    assert set(np.unique(a1)) == set(range(len(c1)))  # empty clusters dropped, none referenced
    V = np.arange(10.0).reshape(5, 2)
    np.testing.assert_allclose(
        group_sums(V, np.array([2, 0, 2, 2, 0]), 4), [[10, 12], [0, 0], [10, 13], [0, 0]]
    )


def test_a_format_2_blend_router_still_predicts_as_before() -> None:
    """Format 2 stored every neighbour's deviations as R (NaN where not measured)."""
    emb, R = _table(200)
    Y = R + 1.0
    Y[:, 2] = np.where(np.isnan(R[:, 2]), np.nan, Y[:, 2])
    p = BlendPredictor().fit(emb, Y)
    arrays = p.arrays()
    assert p.nb is not None and p.nb.per_prompt
    old = {k: v for k, v in arrays.items() if k not in ("S", "N")}
    old["R"] = np.where(p.nb.N > 0, p.nb.S, np.nan).astype(np.float32)
    params = {k: v for k, v in p.params().items() if k != "knn_max"}
    Q = emb[:20]
    np.testing.assert_allclose(
        load_predictor("blend", params, old).predict(Q)[0],
        load_predictor("blend", p.params(), arrays).predict(Q)[0],
    )


def test_the_training_seed_reaches_the_clusters_and_is_saved() -> None:
    """fit_predictor's seed seeds the neighbour clusters' k-means as it does the folds; a saved model keeps
    it, and a router saved before the seed was kept loads with seed 0."""
    from catimg.training.crossval import fit_predictor

    emb, R = _table(400)
    Y = np.nan_to_num(R, nan=0.0)[:, :2]
    a = fit_predictor("blend", emb, Y, {"knn_max": 40}, seed=3, cross_validate=False).predictor
    b = fit_predictor("blend", emb, Y, {"knn_max": 40}, seed=3, cross_validate=False).predictor
    c = fit_predictor("blend", emb, Y, {"knn_max": 40}, seed=4, cross_validate=False).predictor
    assert isinstance(a, BlendPredictor) and isinstance(c, BlendPredictor)
    assert a.nb is not None and b.nb is not None and c.nb is not None
    assert a.params()["seed"] == 3 and c.params()["seed"] == 4
    np.testing.assert_array_equal(a.nb.X, b.nb.X)
    assert a.nb.X.shape != c.nb.X.shape or not np.array_equal(a.nb.X, c.nb.X)
    loaded = load_predictor("blend", a.params(), a.arrays())
    assert isinstance(loaded, BlendPredictor) and loaded.seed == 3
    old = {k: v for k, v in a.params().items() if k != "seed"}
    assert isinstance(p := load_predictor("blend", old, a.arrays()), BlendPredictor) and p.seed == 0
