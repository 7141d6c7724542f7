"""Word n-gram features of prompts and a ridge regression on them: the lexical term of the ``lexical``
predictor (:mod:`catimg.routing.predictor`).

A sentence embedding averages a prompt's tokens into one vector and loses some of what decides whether a cheap
generator is enough: one word ("a man", "two", "text") can make a prompt hard for one generator and not for
another. This module gives the predictor those words back, numpy only and linear in the data:

- :class:`NgramVocab` tokenises like a search engine (lower case, runs of two or more word characters) and
  keeps the words and word pairs (bigrams) found in at least ``min_df`` training prompts, the ``max_size``
  most frequent of them. A prompt's features are tf-idf weights ``(1 + ln tf) * idf`` (``idf = ln((1 + n) /
  (1 + df)) + 1``), scaled to unit length; n-grams the vocabulary does not know are ignored, so a prompt of
  unknown words gets no lexical term.
- :class:`SparseRows` holds those features as compressed rows (a few dozen non-zeros per prompt) with the two
  products a solver needs.
- :func:`masked_ridge` fits one weight vector per target column, ``min sum_measured (s_i . w_j - t_ij)^2 +
  lam |w_j|^2``, by conjugate gradients on all columns at once (NaN targets are left out of their column's
  loss). Cost: O(iterations x non-zeros x columns); memory O(non-zeros x columns).

The vocabulary travels in a router's weights as UTF-8 bytes (n-grams joined by newlines, which no n-gram can
contain), with its idf weights, so a saved router needs nothing else to featurise new prompts.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

TOKEN = re.compile(r"\b\w\w+\b")


def ngrams(text: str) -> list[str]:
    """The words (two or more word characters, lower case) of a prompt and its adjacent word pairs."""
    words = TOKEN.findall(text.lower())
    return words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]


class SparseRows:
    """Compressed sparse rows: row i has values ``vals[ptr[i]:ptr[i + 1]]`` in columns ``cols[...]``."""

    def __init__(self, ptr: np.ndarray, cols: np.ndarray, vals: np.ndarray, dim: int) -> None:
        self.ptr, self.cols, self.vals, self.dim = ptr, cols, vals, dim
        self.n = len(ptr) - 1
        self._rows = np.repeat(np.arange(self.n), np.diff(ptr))
        self._order = np.argsort(cols, kind="stable")

    def dot(self, W: np.ndarray) -> np.ndarray:
        """Rows times W (dim, g) -> (n, g)."""
        out = np.zeros((self.n, W.shape[1]))
        starts = self.ptr[:-1]
        full = starts < self.ptr[1:]
        if full.any():
            out[full] = np.add.reduceat(self.vals[:, None] * W[self.cols], starts[full], axis=0)
        return out

    def tdot(self, R: np.ndarray) -> np.ndarray:
        """Transposed rows times R (n, g) -> (dim, g)."""
        out = np.zeros((self.dim, R.shape[1]))
        if len(self.cols):
            o = self._order
            cols = self.cols[o]
            starts = np.flatnonzero(np.r_[True, cols[1:] != cols[:-1]])
            out[cols[starts]] = np.add.reduceat(self.vals[o][:, None] * R[self._rows[o]], starts, axis=0)
        return out


class NgramVocab:
    """The n-grams of the training prompts that features are made of, with their idf weights."""

    def __init__(self, grams: Sequence[str] = (), idf: np.ndarray | None = None) -> None:
        self.grams = list(grams)
        self.index = {g: i for i, g in enumerate(self.grams)}
        self.idf = np.zeros(0) if idf is None else np.asarray(idf, np.float64)

    def __len__(self) -> int:
        return len(self.grams)

    @classmethod
    def fit(cls, texts: Sequence[str], min_df: int = 2, max_size: int = 50_000) -> NgramVocab:
        df: Counter[str] = Counter()
        for t in texts:
            df.update(set(ngrams(t)))
        kept = sorted((g for g, c in df.items() if c >= min_df), key=lambda g: (-df[g], g))[:max_size]
        n = len(texts)
        idf = np.array([np.log((1 + n) / (1 + df[g])) + 1.0 for g in kept], np.float64)
        return cls(kept, idf)

    def transform(self, texts: Sequence[str]) -> SparseRows:
        ptr, cols, vals = [0], [], []
        for t in texts:
            counts = Counter(g for g in ngrams(t) if g in self.index)
            ids = np.fromiter((self.index[g] for g in counts), np.int64, len(counts))
            v = (1.0 + np.log(np.fromiter(counts.values(), np.float64, len(counts)))) * self.idf[ids]
            norm = float(np.sqrt(v @ v))
            cols.append(ids)
            vals.append(v / norm if norm > 0 else v)
            ptr.append(ptr[-1] + len(ids))
        return SparseRows(
            np.array(ptr, np.int64),
            np.concatenate(cols) if cols else np.zeros(0, np.int64),
            np.concatenate(vals) if vals else np.zeros(0),
            len(self.grams),
        )

    def to_bytes(self) -> np.ndarray:
        raw: np.ndarray = np.frombuffer("\n".join(self.grams).encode("utf-8"), dtype=np.uint8).copy()
        return raw

    @classmethod
    def from_bytes(cls, raw: np.ndarray, idf: np.ndarray) -> NgramVocab:
        text = np.asarray(raw, np.uint8).tobytes().decode("utf-8")
        grams = text.split("\n") if text else []
        if len(grams) != len(idf):
            raise ValueError(f"{len(grams)} n-grams but {len(idf)} idf weights")
        return cls(grams, idf)


def masked_ridge(S: SparseRows, T: np.ndarray, lam: float, iters: int = 100, tol: float = 1e-4) -> np.ndarray:
    """Weights (dim, g): per column j the ridge solution on the rows where T[:, j] is not NaN.

    Conjugate gradients on ``(S' M_j S + lam I) w_j = S' M_j t_j`` for every column at once (each column its
    own step sizes), stopped when every column's residual fell by ``tol`` or after ``iters`` steps.
    """
    M = ~np.isnan(T)
    T0 = np.where(M, T, 0.0)
    W = np.zeros((S.dim, T.shape[1]))
    Res = S.tdot(T0)
    P = Res.copy()
    rr = (Res * Res).sum(0)
    goal = tol * tol * rr
    for _ in range(iters):
        if np.all(rr <= goal):
            break
        AP = S.tdot(M * S.dot(P)) + lam * P
        alpha = rr / np.maximum((P * AP).sum(0), 1e-300)
        W += alpha * P
        Res -= alpha * AP
        rr_new = (Res * Res).sum(0)
        P = Res + (rr_new / np.maximum(rr, 1e-300)) * P
        rr = rr_new
    return W
