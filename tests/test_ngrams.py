"""Word n-gram features and their masked ridge (catimg.routing.ngrams), and the ``lexical`` predictor that
reads them, on real prompts and real MiniLM embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from catimg.errors import RouterError
from catimg.routing.encoder import PromptEncoder
from catimg.routing.ngrams import NgramVocab, SparseRows, masked_ridge, ngrams
from catimg.routing.predictor import Features, LexicalPredictor, load_predictor, make_predictor


def dense(S: SparseRows) -> np.ndarray:
    D = np.zeros((S.n, S.dim))
    for i in range(S.n):
        D[i, S.cols[S.ptr[i] : S.ptr[i + 1]]] = S.vals[S.ptr[i] : S.ptr[i + 1]]
    return D


def test_ngrams_are_lower_case_words_and_word_pairs() -> None:
    assert ngrams("A Red-Apple, on a TABLE!") == [
        "red",
        "apple",
        "on",
        "table",
        "red apple",
        "apple on",
        "on table",
    ]
    assert ngrams("a") == [] and ngrams("") == []


def test_vocabulary_keeps_ngrams_seen_twice_and_weights_them_by_tf_idf() -> None:
    texts = ["a red apple", "a red car", "a blue car", "a café in paris", "a café at night"]
    v = NgramVocab.fit_transform(texts)[0]
    assert set(v.grams) == {"red", "car", "café"}  # "a" is one letter; the rest occur once
    S = v.transform(["red red car", "nothing known here", "Café"])
    D = dense(S)
    np.testing.assert_allclose(np.linalg.norm(D, axis=1), [1.0, 0.0, 1.0])  # unit rows; unknown words: none
    red, car = v.index["red"], v.index["car"]
    # sublinear term frequency: "red" twice weighs (1 + ln 2) times "car" once (same df, same idf)
    assert D[0, red] / D[0, car] == pytest.approx(1 + np.log(2))
    again = NgramVocab.from_bytes(v.to_bytes(), v.idf)
    assert again.grams == v.grams and dense(again.transform(["café red"])).sum() > 0
    with pytest.raises(ValueError, match="n-grams but"):
        NgramVocab.from_bytes(v.to_bytes(), v.idf[:1])


def test_vocabulary_is_capped_at_the_most_frequent() -> None:
    texts = ["common word"] * 5 + ["rare thing"] * 2 + ["other thing"] * 4
    v = NgramVocab.fit_transform(texts, max_size=3)[0]
    assert v.grams == ["thing", "common", "common word"]  # by document frequency, then alphabetically


def test_sparse_products_and_masked_ridge_match_the_dense_solution() -> None:
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(30)]
    texts = [" ".join(rng.choice(words, rng.integers(0, 6))) for _ in range(80)]
    S = NgramVocab.fit_transform(texts)[1]
    D = dense(S)
    W = rng.normal(size=(S.dim, 3))
    R = rng.normal(size=(S.n, 3))
    np.testing.assert_allclose(S.dot(W), D @ W, atol=1e-12)
    A, AT = S.torch_pair()
    np.testing.assert_allclose((AT @ torch.from_numpy(R)).numpy(), D.T @ R, atol=1e-12)
    T = rng.normal(size=(S.n, 3))
    T[rng.random(T.shape) < 0.3] = np.nan
    got = masked_ridge(S, T, lam=0.5, iters=500, tol=1e-10)
    for j in range(3):
        m = ~np.isnan(T[:, j])
        want = np.linalg.solve(D[m].T @ D[m] + 0.5 * np.eye(S.dim), D[m].T @ T[m, j])
        np.testing.assert_allclose(got[:, j], want, atol=1e-6)


def test_lexical_predictor_learns_a_word_the_embedding_blurs() -> None:
    """The cheap generator fails whenever a prompt asks for written text ("sign saying ..."): a word effect.
    Held-out prompts with the word are predicted worse for it than without, by the n-gram term."""
    subjects = [
        "a cat",
        "a dog",
        "a red car",
        "a small house",
        "an old tree",
        "a blue boat",
        "a horse",
        "a bicycle",
        "a teapot",
        "a lighthouse",
        "a mountain",
        "a bowl of fruit",
    ]
    places = ["in a field", "on a beach", "in the city", "at night", "in the snow"]
    texts, y = [], []
    for i, s in enumerate(subjects):
        for j, p in enumerate(places):
            sign = (i + j) % 2 == 0
            texts.append(f"{s} {p}" + (" next to a sign saying hello" if sign else ""))
            y.append(2.0 if sign else 4.0)
    emb = PromptEncoder(use_cache=False).encode(texts).astype(np.float64)
    Y = np.c_[np.array(y), np.full(len(y), 4.0)] + np.random.default_rng(0).normal(0, 0.05, (len(y), 2))
    X = Features.of(emb, texts)
    test = np.arange(0, len(texts), 7)
    train = np.setdiff1d(np.arange(len(texts)), test)
    p = make_predictor("lexical", k=5).fit(X[train], Y[train])
    mean, _ = p.predict(X[test])
    gap = mean[:, 1] - mean[:, 0]
    has_sign = np.array(["sign" in texts[i] for i in test])
    assert gap[has_sign].min() > gap[~has_sign].max()
    # without the n-gram term (weight 0 on it: lam huge) the same model separates them less
    flat = LexicalPredictor(k=5, lam=1e9).fit(X[train], Y[train]).predict(X[test])[0]
    flat_gap = flat[:, 1] - flat[:, 0]
    assert (
        gap[has_sign].mean() - gap[~has_sign].mean() > flat_gap[has_sign].mean() - flat_gap[~has_sign].mean()
    )


def test_lexical_predictor_needs_texts_and_bounds_its_neighbours() -> None:
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(60, 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    Y = rng.normal(size=(60, 2))
    with pytest.raises(ValueError, match="needs the prompts' texts"):
        make_predictor("lexical").fit(emb, Y)
    texts = [f"prompt number {i % 7} with words" for i in range(60)]
    p = LexicalPredictor(knn_max=25).fit(Features.of(emb, texts), Y)
    # beyond knn_max prompts the neighbours are at most knn_max // 2 clusters that hold every prompt
    assert p.nb is not None and len(p.nb.X) <= 12 and not p.nb.per_prompt
    np.testing.assert_allclose(p.nb.N.sum(0), [60, 60])
    assert np.isfinite(p.predict(Features.of(emb[:5], texts[:5]))[0]).all()
    arrays = p.arrays()
    arrays["lexW"] = arrays["lexW"][:-1]
    with pytest.raises(RouterError, match="predictor weights are incomplete"):
        load_predictor("lexical", p.params(), arrays)
    with pytest.raises(ValueError, match="prompt texts for"):
        Features.of(emb, texts[:3])
