"""Nearest training prompts: the search behind the ``knn``, ``blend`` and ``lexical`` predictors and explain's
"most similar training prompts", and the bounded neighbour memory of ``blend`` and ``lexical``.

- :func:`nearest`: exact k-nearest search by Euclidean distance, in blocks of queries (at least CHUNK, more
  against few rows: BLOCK_CELLS distances a block).
- :func:`column_neighbours`: per generator column, the values of the k nearest *measured* rows (one shared
  search for the columns measured on most rows).
- :class:`Neighbours`: what ``blend`` and ``lexical`` keep of their training prompts for their relative KNN,
  as *prototypes*: a unit embedding with the sum and the count of the measured deviations behind it, per
  generator. Up to ``max_protos`` training prompts every prompt is a prototype (an exact KNN). Beyond, the
  prototypes are ``max_protos // 2`` clusters of all the prompts (spherical k-means: KMEANS_ITERS Lloyd passes
  over a seeded sample, then every prompt assigned to its nearest centre), and a query's neighbourhood is its
  nearest clusters, taken whole, until they hold at least k measured prompts of the generator. So every
  training prompt counts whatever n is (the rule before kept a seeded sample of max_protos prompts: 8 % of
  100,000), the artifact stays bounded, and prediction searches max_protos // 2 centres. Measured on PQPP
  (`README.md`, "Training at scale"): with its 6,000 train prompts clustered as 100,000 would be, the
  ``lexical`` predictor lost 0.4 points of cross-validated APGR against the exact KNN on all prompts, and
  gained 0.8 against an exact KNN on a sample of the same share as 8,192 of 100,000.

Cost: :func:`nearest` O(m n d); building clusters O(n * max_protos * d) (fit), searching them O(m * max_protos
* d).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Query rows per block in nearest-neighbour search: at least CHUNK, and as many as BLOCK_CELLS distances
#: allow (32 MB of float32), so memory stays max(CHUNK x n, BLOCK_CELLS) floats. Against the 4,096 clusters
#: of a large router a block is 2,048 queries: 10,000 are searched in 0.39 s, 0.52 s in blocks of 512.
CHUNK = 512
BLOCK_CELLS = 1 << 23
#: Lloyd passes of the k-means, over a seeded sample of at most KMEANS_SAMPLE_PER_CENTRE rows per centre.
KMEANS_ITERS = 3
KMEANS_SAMPLE_PER_CENTRE = 4
#: A generator whose k measured neighbours need more than this many nearest clusters (a sparsely measured
#: one) gets a search of its own over the clusters that hold its measurements.
MAX_SHARED_CLUSTERS = 64


def nearest(Q: np.ndarray, T: np.ndarray, k: int, rows: np.ndarray | None = None) -> np.ndarray:
    """Indices (m, k) into ``T`` (or into ``T[rows]``) of the k nearest rows for every query, nearest first.

    Euclidean distance; computed in blocks of queries (see BLOCK_CELLS), so memory is bounded whatever m is.
    """
    T = np.asarray(
        T if rows is None else T[rows], np.float32
    )  # one conversion (the index is float16), not per block
    n = T.shape[0]
    k = min(k, n)
    Tn = (T**2).sum(1)
    T2 = 2.0 * T
    out = np.empty((Q.shape[0], k), dtype=np.int64)
    block = max(CHUNK, BLOCK_CELLS // max(n, 1))
    for s in range(0, Q.shape[0], block):
        q = np.asarray(Q[s : s + block], np.float32)
        G = q @ T2.T
        G -= Tn[None, :]  # = |q|^2 - distance^2: the larger, the nearer (|q|^2 is the same for every column)
        out[s : s + block] = _top_k(G, k)
    return out


#: Up to this k, the nearest rows are found by k passes of argmax (half the time of a partition for explain's
#: 3).
SMALL_K = 8
#: Blocks of at least this many scores are partially sorted by torch (imported then) rather than numpy.
TORCH_TOPK_MIN = 1 << 20


def _top_k(G: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k largest values per row, largest first (ties: the lower index first). Clobbers
    G."""
    n = G.shape[1]
    if k <= SMALL_K and k < n:
        rows = np.arange(len(G))
        cols = np.empty((len(G), k), dtype=np.int64)
        for c in range(k):
            cols[:, c] = j = G.argmax(1)
            G[rows, j] = -np.inf
        return cols
    if k < n and G.size >= TORCH_TOPK_MIN:
        import torch  # a partial sort of a big block: ~20x numpy's argpartition (10,000 x 4,096, k = 11)

        top = torch.topk(torch.from_numpy(np.ascontiguousarray(G, np.float32)), k, dim=1)
        idx, vals = top.indices.numpy(), top.values.numpy()
        return np.take_along_axis(idx, np.lexsort((idx, -vals), axis=1), 1)
    idx = np.argpartition(-G, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (len(G), 1))
    order = (-np.take_along_axis(G, idx, 1)).argsort(1, kind="stable")
    return np.take_along_axis(idx, order, 1)


#: Columns measured on at least this share of the rows share one neighbour search (see column_neighbours).
SHARED_COVER = 0.5


def column_neighbours(Q: np.ndarray, T: np.ndarray, Y: np.ndarray, k: int) -> list[np.ndarray]:
    """Per column j of ``Y`` (NaN = not measured): the (m, k') values of Y[:, j] at the k nearest measured
    rows (k' = min(k, rows measured)).

    Columns measured on most rows share one search for the K = 2k / coverage nearest rows of all, and take
    their first k' measured ones; a query with fewer than k' among them, and every sparsely measured column,
    gets its own search over the measured rows. Both give the same neighbours (up to the float32 rounding of
    near-equal distances); the shared search saves a search per generator."""
    measured = ~np.isnan(Y)
    cover = measured.sum(0) / max(len(Y), 1)
    shared = [j for j in range(Y.shape[1]) if cover[j] >= SHARED_COVER]
    out: list[np.ndarray] = [np.zeros((0, 1))] * Y.shape[1]
    if not len(Q):
        return out
    idx = nearest(Q, T, int(np.ceil(2 * k / min(cover[shared])))) if shared else None
    for j in range(Y.shape[1]):
        rows = np.flatnonzero(measured[:, j])
        kj = min(k, len(rows))
        if idx is None or j not in shared:
            out[j] = Y[rows, j][nearest(Q, T, k, rows)]
            continue
        ok = measured[idx, j]
        first = np.argsort(~ok, axis=1, kind="stable")[:, :kj]  # positions of the first kj measured, in order
        vals = Y[np.take_along_axis(idx, first, 1), j]
        short = np.flatnonzero(ok.sum(1) < kj)
        if len(short):
            vals[short] = Y[rows, j][nearest(Q[short], T, k, rows)]
        out[j] = vals
    return out


def group_sums(V: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """(n_groups, columns) sums of the rows of V by group (zeros for an empty group)."""
    order = np.argsort(groups, kind="stable")
    counts = np.bincount(groups, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out = np.zeros((n_groups, V.shape[1]), dtype=np.float64)
    used = counts > 0
    if used.any():
        out[used] = np.add.reduceat(np.asarray(V, np.float64)[order], starts[used], axis=0)
    return out


def spherical_kmeans(E: np.ndarray, c: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(centres, assignment) of the unit rows of E into at most c clusters: centres (c', d) float32 unit
    vectors, assignment (n,) into them; clusters that end up empty are dropped (c' <= c)."""
    rng = np.random.default_rng(seed)
    n = len(E)
    c = max(1, min(c, n))
    sample = np.asarray(
        E[np.sort(rng.choice(n, min(n, KMEANS_SAMPLE_PER_CENTRE * c), replace=False))], np.float32
    )
    centres = sample[rng.choice(len(sample), c, replace=False)].copy()
    for _ in range(KMEANS_ITERS):
        sums = group_sums(sample, nearest(sample, centres, 1)[:, 0], c)
        norms = np.linalg.norm(sums, axis=1)
        moved = norms > 0  # an empty cluster keeps its centre
        centres[moved] = (sums[moved] / norms[moved, None]).astype(np.float32)
    a = nearest(E, centres, 1)[:, 0]
    used = np.unique(a)
    remap = np.full(c, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return centres[used], remap[a]


@dataclass
class Neighbours:
    """Prototypes of the training prompts for a relative KNN: ``X`` (p, d) unit embeddings (the prompts
    themselves, or cluster centres), ``S`` (p, g) the sum and ``N`` (p, g) the count of the measured
    deviations behind each, per generator (see the module docstring)."""

    X: np.ndarray
    S: np.ndarray
    N: np.ndarray

    @classmethod
    def of_prompts(cls, emb: np.ndarray, R: np.ndarray) -> Neighbours:
        """One prototype per prompt; ``R`` (n, g) holds NaN where a generator was not measured."""
        measured = ~np.isnan(R)
        return cls(np.asarray(emb, np.float32), np.where(measured, R, 0.0), measured.astype(np.float64))

    @classmethod
    def build(cls, emb: np.ndarray, R: np.ndarray, max_protos: int, seed: int = 0) -> Neighbours:
        """Every prompt up to ``max_protos`` of them, else ``max_protos // 2`` clusters of all of them."""
        if len(emb) <= max_protos:
            return cls.of_prompts(emb, R)
        centres, a = spherical_kmeans(emb, max(1, max_protos // 2), seed)
        measured = ~np.isnan(R)
        S = group_sums(np.where(measured, R, 0.0), a, len(centres))
        return cls(centres, S, group_sums(measured.astype(np.float64), a, len(centres)))

    def arrays(self) -> dict[str, np.ndarray]:
        """What a router's weights keep of them: ``X`` (float16), ``S`` and ``N`` (float32)."""
        return {
            "X": self.X.astype(np.float16),
            "S": self.S.astype(np.float32),
            "N": self.N.astype(np.float32),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Neighbours:
        """The inverse of :meth:`arrays`; also reads router format 2, which kept every neighbour's deviations
        as ``R`` (NaN where not measured). ValueError when the arrays do not fit together."""
        X = arrays["X"].astype(np.float32)
        if "R" in arrays:
            return cls.of_prompts(X, arrays["R"].astype(np.float64))
        S, N = arrays["S"].astype(np.float64), arrays["N"].astype(np.float64)
        if S.shape != N.shape or len(S) != len(X):
            raise ValueError(f"neighbour sums {S.shape} and counts {N.shape} do not fit {len(X)} prototypes")
        return cls(X, S, N)

    @property
    def per_prompt(self) -> bool:
        """Whether every prototype stands for at most one measurement per generator (an exact KNN)."""
        return bool(np.all(self.N <= 1))

    def means(self, Q: np.ndarray, k: int) -> np.ndarray:
        """(m, g): per query and generator, the mean deviation of its k nearest measured training prompts
        (clusters taken whole: at least k)."""
        if self.per_prompt:
            Y = np.where(self.N > 0, self.S, np.nan)
            return np.stack([v.mean(1) for v in column_neighbours(Q, self.X, Y, k)], 1)
        m, g = len(Q), self.S.shape[1]
        out = np.empty((m, g))
        kg = np.minimum(float(k), self.N.sum(0))
        need = np.ceil(2 * kg / np.maximum(self.N.sum(0) / len(self.X), 1e-12))
        shared = [j for j in range(g) if need[j] <= MAX_SHARED_CLUSTERS]
        # one search for them all, twice as deep as clusters of the mean size would need: sizes differ, and a
        # query short of k measured prompts costs a search of its own (100,000 prompts x 10 generators: 11
        # deep left 10 more searches over all the centres, 22 deep none)
        idx = nearest(Q, self.X, int(2 * need[shared].max())) if shared else None
        for j in range(g):
            rows = np.arange(m)
            if idx is not None and j in shared:
                out[:, j], short = self._prefix_means(idx, j, kg[j])
                rows = np.flatnonzero(short)
            if len(rows):
                held = np.flatnonzero(self.N[:, j] > 0)  # each holds >= 1: min(k, len) of them reach kg
                own = held[nearest(Q[rows], self.X, int(min(len(held), np.ceil(kg[j]))), held)]
                out[rows, j] = self._prefix_means(own, j, kg[j])[0]
        return out

    def _prefix_means(self, idx: np.ndarray, j: int, kg: float) -> tuple[np.ndarray, np.ndarray]:
        """Mean of column j over each row's nearest prototypes ``idx`` (nearest first) up to the first that
        brings the count to kg, and which rows never reach it."""
        cn = np.cumsum(self.N[idx, j], 1)
        cs = np.cumsum(self.S[idx, j], 1)
        hit = cn >= kg - 1e-9
        first = hit.argmax(1)
        r = np.arange(len(idx))
        return cs[r, first] / np.maximum(cn[r, first], 1e-12), ~hit[:, -1]
