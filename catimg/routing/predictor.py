"""Quality predictors: prompt embedding (and, for ``lexical``, the prompt's words) -> predicted quality of
every generator, with an epistemic uncertainty.

All predictors predict with numpy (torch partially sorts big blocks of neighbour distances, and runs
``lexical``'s sparse products in its fit), train on a prompt x generator table ``Y`` with NaN where a
generator was not measured, and cost about linearly in the number of prompts n and generators g (see each
class). Predictions are in metric units; the uncertainty
is the standard deviation of the *expected* quality (what more measurements would remove), not of one
image's score.

``knn``    The paper's reference (CATImage, arXiv 2506.14753): per generator the mean measured quality of the
           k nearest training prompts (Euclidean distance between unit embeddings); k = 100 in the paper, here
           ``min(100, max(5, n // 5))`` by default for smaller data. Uncertainty: the standard error of that
           mean. Cost: fit O(1); prediction O(m n d) in chunks; the artifact keeps every training embedding
           (float16).
``ridge``  What routing needs, modelled directly. The rule argmax_g q_g - lambda c_g depends only on the
           *differences* between generators on a prompt, while most of the variance of measured quality is how
           hard the prompt is for every generator. So the table is split into a per-prompt *anchor* a_i (the
           prompt's quality level, from the additive model y_ig = a_i + b_g by alternating means, which
           handles missing cells) and per-generator *deviations* r_ig = y_ig - a_i (for a prompt scored by
           one generator only, y_ig minus the anchor model's prediction: :func:`one_score_deviations`; those
           prompts teach the deviations too, as ``gen --score`` collects them). The anchor and each
           deviation get a Bayesian linear regression on the unit embedding (unpenalised mean, Gaussian prior
           on the weights); the prior-to-noise ratio and the noise are chosen per model by maximising the
           marginal likelihood on the training data (closed form through one d x d eigendecomposition).
           Prediction: anchor + deviation; uncertainty: the posterior standard deviation of both, summed in
           variance. It shrinks as a generator gets more measurements (posterior covariance ~ 1/n) and grows
           for prompts in directions of the embedding space the measured prompts do not cover. A deviation
           model with fewer than ``MIN_OWN_HYPER`` prompts borrows the median prior-to-noise ratio of the
           well-measured ones and pools its own noise estimate with their median noise (``NOISE_PRIOR_DOF``
           pseudo-prompts), so a generator calibrated on ten prompts gets its offset from those ten and an
           honest, wide uncertainty that its own spread widens. Cost: fit O(n d^2 g), prediction O(m d g);
           the weights are (g + 1) x (d + 1) means and d x d covariances, independent of n.
``blend``  A mix of ``ridge`` and a relative KNN (k nearest prompts' deviations added to the ridge anchor):
           the linear model's global trends plus the neighbours' local ones. The KNN share (``weight``) is
           what ``catimg train`` fits to its out-of-fold predictions (:mod:`catimg.training.crossval`); a
           bare ``fit`` keeps the constructor's (0.5; ``lexical`` 0.4). The neighbours are
           :class:`~catimg.routing.neighbours.Neighbours`: every training prompt up to ``KNN_MAX`` of them,
           beyond that ``KNN_MAX // 2`` clusters of all of them (a neighbourhood is the nearest clusters,
           taken whole, holding at least k measured prompts). Uncertainty: the ridge posterior. Cost: as
           ``ridge``, plus O(n KNN_MAX d) to build the clusters and O(m KNN_MAX d) to search them.
``lexical`` ``blend`` whose linear part also reads the prompt's *words*: a ridge on word and word-pair tf-idf
           features (:mod:`catimg.routing.ngrams`) fitted, per generator, to what the embedding ridge leaves
           of the deviations (one word, "text", "two", "a man", can decide that a cheap generator fails, and a
           mean-pooled sentence embedding blurs it); mixed with the relative KNN as ``blend`` is. Needs the
           prompts' texts (:class:`Features`). Uncertainty: the ridge posterior. Cost: fit O(n d^2 g) +
           O(iterations x non-zeros x g) + the neighbours'; the artifact holds the ridge, at most 50,000
           n-grams with one weight per generator and at most KNN_MAX neighbour prototypes, whatever n is.

Held-out routing numbers (``python -m catimg.benchmarks.routing``) decided which predictor ``auto`` trains
(:data:`AUTO`); a training run does not choose between predictors, it reports the chosen one's
cross-validated routing numbers in the data card.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from catimg.errors import RouterError
from catimg.routing.neighbours import Neighbours, column_neighbours
from catimg.routing.ngrams import NgramVocab, masked_ridge

#: Deviation models with fewer measured prompts than this borrow the hyperparameters of the well-measured
#: ones.
MIN_OWN_HYPER = 30
#: A deviation model that borrows hyperparameters estimates its noise from its own prompts pooled with the
#: borrowed noise counted as this many pseudo-prompts: on 10 prompts a third its own, on 29 two thirds.
NOISE_PRIOR_DOF = MIN_OWN_HYPER / 2
#: Prior-to-noise variance ratios searched by the marginal likelihood (per unit of squared embedding norm).
RHO_GRID = tuple(float(x) for x in np.geomspace(1e-3, 1e3, 49))


@dataclass(frozen=True)
class Features:
    """What a predictor sees of n prompts: their unit embeddings (n, d) and their texts (n,), or None where
    only embeddings are at hand (every predictor but ``lexical`` reads the embeddings alone).

    Indexing selects prompts, as on an array: ``X[rows]`` is the Features of those rows."""

    emb: np.ndarray
    texts: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.emb)

    def __getitem__(self, idx: Any) -> Features:
        return Features(self.emb[idx], None if self.texts is None else self.texts[idx])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.emb.shape)

    @classmethod
    def of(cls, emb: np.ndarray, texts: Sequence[str] | None = None) -> Features:
        if texts is not None and len(texts) != len(emb):
            raise ValueError(f"{len(texts)} prompt texts for {len(emb)} embeddings")
        arr = None if texts is None else np.array(list(texts), dtype=object).reshape(-1)
        return cls(np.asarray(emb), arr)


#: A predictor's input: Features, or a bare (n, d) array of embeddings.
Inputs = Features | np.ndarray


def emb_of(X: Inputs) -> np.ndarray:
    return X.emb if isinstance(X, Features) else np.asarray(X)


def texts_of(X: Inputs) -> list[str]:
    """The prompt texts of X; ValueError when X carries embeddings only."""
    if not isinstance(X, Features) or X.texts is None:
        raise ValueError("this predictor needs the prompts' texts as well as their embeddings")
    return [str(t) for t in X.texts]


class Predictor(Protocol):
    name: str

    def fit(self, X: Inputs, Y: np.ndarray) -> Predictor: ...

    def predict(self, X: Inputs) -> tuple[np.ndarray, np.ndarray]: ...

    def params(self) -> dict[str, Any]: ...

    def arrays(self) -> dict[str, np.ndarray]: ...


def default_k(n: int) -> int:
    """The KNN k for n training prompts: the paper's 100, smaller for small data."""
    return int(min(100, max(5, n // 5)))


def _check_fit(X: Inputs, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, scores) as float64 arrays; ValueError for shapes that do not fit or unusable scores."""
    X = np.asarray(emb_of(X), dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError(f"X {X.shape} and Y {Y.shape} must be (n, d) and (n, g)")
    if np.isinf(Y).any():
        raise ValueError("Y holds infinite scores")
    empty = np.all(np.isnan(Y), axis=0)
    if empty.any():
        raise ValueError(f"generator columns {np.flatnonzero(empty).tolist()} have no measurements")
    return X, Y


class KNNPredictor:
    """Mean measured quality of the k nearest training prompts, per generator (the paper's reference)."""

    name = "knn"

    def __init__(self, k: int | None = None) -> None:
        self.k = k
        self.X: np.ndarray | None = None
        self.Y: np.ndarray | None = None

    def fit(self, X: Inputs, Y: np.ndarray) -> KNNPredictor:
        X, Y = _check_fit(X, Y)
        if self.k is None:
            self.k = default_k(X.shape[0])
        self.X, self.Y = X.astype(np.float32), Y
        return self

    def predict(self, X: Inputs) -> tuple[np.ndarray, np.ndarray]:
        assert self.X is not None and self.Y is not None and self.k is not None
        X = emb_of(X)
        m, g = X.shape[0], self.Y.shape[1]
        mean, std = np.empty((m, g)), np.empty((m, g))
        for j, vals in enumerate(column_neighbours(X, self.X, self.Y, self.k)):
            col = self.Y[~np.isnan(self.Y[:, j]), j]
            col_var = float(col.var()) if len(col) > 1 else 0.0
            k = vals.shape[1]
            mean[:, j] = vals.mean(1)
            # standard error of the neighbour mean, with the column variance as a one-sample prior
            std[:, j] = np.sqrt((vals.var(1) * k + col_var) / (k + 1) / k)
        return mean, std

    def params(self) -> dict[str, Any]:
        return {"k": self.k}

    def arrays(self) -> dict[str, np.ndarray]:
        assert self.X is not None and self.Y is not None
        return {"X": self.X.astype(np.float16), "Y": self.Y.astype(np.float32)}

    @classmethod
    def from_saved(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> KNNPredictor:
        p = cls(k=int(params["k"]))
        p.X = arrays["X"].astype(np.float32)
        p.Y = arrays["Y"].astype(np.float64)
        return p


def split_anchor(Y: np.ndarray, iters: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """(anchor a (n,), deviations R (n, g)) of the additive model y_ig = a_i + b_g fitted by alternating
    means.

    ``R = Y - a`` (NaN where Y is); the b_g end up in the deviations' means. Only prompts scored by at least
    two generators inform the b_g: a prompt with one score fits it exactly whatever b is, so it gets
    a_i = y_ig - b_g afterwards (and r_ig = b_g, which says nothing about the prompt: see
    :func:`one_score_deviations`). Rows with no score get a NaN anchor; without any prompt scored twice the
    b_g are 0.
    """
    M = ~np.isnan(Y)
    multi = M.sum(1) >= 2
    Mm, Zm = M[multi], np.where(M[multi], Y[multi], 0.0)
    cnt_row, cnt_col = Mm.sum(1), np.maximum(Mm.sum(0), 1)
    b = np.zeros(Y.shape[1])
    for _ in range(iters if multi.any() else 0):
        a = ((Zm - b[None, :]) * Mm).sum(1) / cnt_row
        b_new = ((Zm - a[:, None]) * Mm).sum(0) / cnt_col
        b_new -= b_new.mean()  # identifiability: the generator effects average to zero
        if np.max(np.abs(b_new - b)) < 1e-10:
            b = b_new
            break
        b = b_new
    cnt = M.sum(1)
    a = np.where(cnt > 0, (np.where(M, Y - b[None, :], 0.0)).sum(1) / np.maximum(cnt, 1), np.nan)
    return a, Y - a[:, None]


def one_score_deviations(Y: np.ndarray, R: np.ndarray, anchor_mean: np.ndarray) -> np.ndarray:
    """``R`` with the deviations of prompts scored by one generator taken against the anchor *model*
    (``anchor_mean``: its prediction at every prompt) instead of the prompt's own anchor.

    A one-score prompt's own anchor absorbs its score (r_ig = b_g), so it would teach the deviation models
    nothing and pull them towards "no difference" where such prompts are many; y_ig - â(x_i) keeps what the
    score says about generator g there, with the anchor model's error as extra noise. This is what lets a
    router learn from measurements that score each prompt on one generator (``gen --score`` in use, sparse
    public sets); ``python -m catimg.benchmarks.learning_curve --one-score S`` measures it."""
    single = (~np.isnan(Y)).sum(1) == 1
    if not single.any():
        return R
    out = R.copy()
    out[single] = Y[single] - anchor_mean[single, None]
    return out


class BayesLinear:
    """One Bayesian linear regression t = mu + w . (x - xbar) + noise, w ~ N(0, rho * noise * I).

    rho and the noise variance maximise the marginal likelihood (or are given). Fields are the posterior:
    ``mu`` (with variance noise / n), ``w`` and ``cov`` (d x d posterior covariance of w).
    """

    def __init__(self) -> None:
        self.n = 0
        self.mu = 0.0
        self.xbar: np.ndarray = np.zeros(0)
        self.w: np.ndarray = np.zeros(0)
        self.cov: np.ndarray = np.zeros((0, 0))
        self._cov32: np.ndarray | None = None  # float32 copy for predict
        self.noise = 1.0
        self.rho = 1.0

    @staticmethod
    def moments(X: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
        """(xbar, centred X'X, centred X't, mean t, centred t't): all a fit needs, one pass over the rows.

        The d x d Gram matrix is summed in float32 (the dominant cost: n d^2, twice as fast and no centred
        copy of X) and centred afterwards in float64; for unit embeddings its relative error is about 1e-6,
        far below the prior's regularisation."""
        xbar = X.mean(0)
        tbar = float(t.mean())
        tc = t - tbar
        X32 = np.asarray(X, np.float32)
        S = (X32.T @ X32).astype(np.float64) - len(X) * np.outer(xbar, xbar)
        return xbar, (S + S.T) / 2, X.T @ tc, tbar, float(tc @ tc)

    def fit(
        self,
        X: np.ndarray,
        t: np.ndarray,
        rho: float | None = None,
        noise: float | None = None,
        noise_prior: tuple[float, float] | None = None,
    ) -> BayesLinear:
        """Fit the posterior. With ``rho`` given and ``noise`` not, the noise is estimated from the data at
        that rho, pooled with ``noise_prior`` = (noise0, nu0) as nu0 pseudo-residuals of variance noise0 when
        given (a few-shot generator: its own spread counts, the others' keeps it from collapsing on ten
        prompts)."""
        n, d = X.shape
        xbar, S, u, tbar, tt = self.moments(X, t)
        lam, V = np.linalg.eigh(S)
        lam = np.maximum(lam, 0.0)
        z = V.T @ u
        dof = max(n - 1, 1)
        if rho is None:  # profile out the noise: for each rho, noise = Q(rho) / dof in closed form
            best = (-np.inf, 1.0, 1.0)
            for r in RHO_GRID:
                q = max(tt - float(np.sum(z * z * r / (1.0 + r * lam))), 1e-12)
                ll = -0.5 * (dof * np.log(q / dof) + float(np.sum(np.log1p(r * lam))))
                if ll > best[0]:
                    best = (ll, r, q / dof)
            _, rho, noise_hat = best
            noise = noise if noise is not None else noise_hat
        elif noise is None:
            q = max(tt - float(np.sum(z * z * rho / (1.0 + rho * lam))), 1e-12)
            if noise_prior is None:
                noise = q / dof
            else:  # n - 1 residual degrees of freedom of its own (none for one prompt) and nu0 borrowed
                noise0, nu0 = noise_prior
                noise = (q + nu0 * noise0) / max(n - 1 + nu0, 1.0)
        assert rho is not None and noise is not None
        noise = max(float(noise), 1e-9)
        # posterior: cov = noise * (S + I/rho)^-1, w = (S + I/rho)^-1 u
        inv = 1.0 / (lam + 1.0 / rho)
        self.n, self.mu, self.xbar, self.noise, self.rho = n, tbar, xbar, noise, float(rho)
        self.w = V @ (inv * z)
        self.cov = (V * (noise * inv)) @ V.T
        self._cov32 = None
        return self

    def predict(self, X: np.ndarray, X32: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and variance of the expected target at X (``X32``: X in float32, when at hand)."""
        mean = self.mean(X)
        # the quadratic form in float32: a third of the time, and an uncertainty needs no more digits
        if self._cov32 is None:
            self._cov32 = self.cov.astype(np.float32)
        Xc32 = (X.astype(np.float32) if X32 is None else X32) - self.xbar.astype(np.float32)
        var = np.einsum("ij,ij->i", Xc32 @ self._cov32, Xc32).astype(np.float64) + self.noise / max(self.n, 1)
        return mean, np.maximum(var, 0.0)

    def mean(self, X: np.ndarray) -> np.ndarray:
        """Posterior mean of the expected target at X."""
        out: np.ndarray = self.mu + X @ self.w - float(self.xbar @ self.w)
        return out

    def state(self) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        return (
            {"n": self.n, "mu": self.mu, "noise": self.noise, "rho": self.rho},
            {
                "xbar": self.xbar.astype(np.float32),
                "w": self.w.astype(np.float64),
                "cov": self.cov.astype(np.float32),
            },
        )

    @classmethod
    def from_state(cls, p: dict[str, Any], a: dict[str, np.ndarray], prefix: str) -> BayesLinear:
        m = cls()
        m.n, m.mu, m.noise, m.rho = int(p["n"]), float(p["mu"]), float(p["noise"]), float(p["rho"])
        m.xbar = a[prefix + "xbar"].astype(np.float64)
        m.w = a[prefix + "w"].astype(np.float64)
        m.cov = a[prefix + "cov"].astype(np.float64)
        if m.w.shape != m.xbar.shape or m.cov.shape != (len(m.w), len(m.w)):
            raise ValueError(f"{prefix} weights have inconsistent shapes")
        return m


class RidgePredictor:
    """Anchor + per-generator deviation, each a Bayesian linear regression on the embedding (module
    docstring)."""

    name = "ridge"

    def __init__(self) -> None:
        self.anchor = BayesLinear()
        self.devs: list[BayesLinear] = []

    def fit(self, X: Inputs, Y: np.ndarray) -> RidgePredictor:
        self.fit_targets(X, Y)
        return self

    def fit_targets(self, X: Inputs, Y: np.ndarray) -> np.ndarray:
        """Fit; return the deviation targets (n, g) the deviation models were fitted to (NaN where not
        measured), which ``blend``'s neighbours and ``lexical``'s n-gram ridge learn from too."""
        X, Y = _check_fit(X, Y)
        a, R = split_anchor(Y)
        has = ~np.isnan(a)
        self.anchor = BayesLinear().fit(X[has], a[has])
        R = one_score_deviations(Y, R, self.anchor.mean(X))
        sets = [np.flatnonzero(~np.isnan(R[:, j])) for j in range(Y.shape[1])]
        own = [j for j, r in enumerate(sets) if len(r) >= MIN_OWN_HYPER]
        self.devs = [BayesLinear() for _ in sets]
        for j in own:
            self.devs[j].fit(X[sets[j]], R[sets[j], j])
        donors = self._donors(X, Y, R, sets, own)
        rho = float(np.median([d.rho for d in donors])) if donors else self.anchor.rho
        noise = (
            float(np.median([d.noise for d in donors]))
            if donors
            else max(self.anchor.noise, float(np.nanvar(R)) if np.sum(~np.isnan(R)) > 1 else 1e-2)
        )
        for j, rows in enumerate(sets):
            if j not in own:  # the others' prior shape; the noise pooled from its own spread and theirs
                self.devs[j].fit(X[rows], R[rows, j], rho=rho, noise_prior=(noise, NOISE_PRIOR_DOF))
        return R

    def _donors(
        self, X: np.ndarray, Y: np.ndarray, R: np.ndarray, sets: list[np.ndarray], own: list[int]
    ) -> list[BayesLinear]:
        """The fits whose hyperparameters a sparsely measured generator borrows: each well-measured
        generator's, on its prompts scored at least twice (at least MIN_OWN_HYPER of them). One-score
        prompts' targets carry the anchor model's error, which the marginal likelihood reads as a weaker
        signal: a prior taken from them made a generator measured on 10-25 prompts look surer of itself than
        it was (PQPP, SDXL on 25 prompts: own std 0.10 against an error of 0.23)."""
        multi = (~np.isnan(Y)).sum(1) >= 2
        donors = []
        for j in own:
            rows = sets[j][multi[sets[j]]]
            if len(rows) == len(sets[j]):
                donors.append(self.devs[j])
            elif len(rows) >= MIN_OWN_HYPER:
                donors.append(BayesLinear().fit(X[rows], R[rows, j]))
        return donors

    def predict_parts(self, X: Inputs) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(anchor mean, anchor var, deviation means (m, g), deviation vars (m, g))."""
        X = np.asarray(emb_of(X), np.float64)
        X32 = X.astype(np.float32)
        am, av = self.anchor.predict(X, X32)
        parts = [d.predict(X, X32) for d in self.devs]
        return am, av, np.stack([p[0] for p in parts], 1), np.stack([p[1] for p in parts], 1)

    def deviation_means(self, X: np.ndarray) -> np.ndarray:
        """The deviation means of :meth:`predict_parts` (m, g) alone, in one product (no variances)."""
        W = np.stack([d.w for d in self.devs], 1)
        return X @ W + np.array([d.mu - d.xbar @ d.w for d in self.devs])

    def predict(self, X: Inputs) -> tuple[np.ndarray, np.ndarray]:
        am, av, dm, dv = self.predict_parts(X)
        return am[:, None] + dm, np.sqrt(av[:, None] + dv)

    def params(self) -> dict[str, Any]:
        return {
            "model": "anchor + per-generator deviation, Bayesian linear regression on the unit embedding",
            "anchor": self.anchor.state()[0],
            "deviations": [d.state()[0] for d in self.devs],
        }

    def arrays(self) -> dict[str, np.ndarray]:
        out = {f"anchor.{k}": v for k, v in self.anchor.state()[1].items()}
        for j, d in enumerate(self.devs):
            out.update({f"dev{j}.{k}": v for k, v in d.state()[1].items()})
        return out

    @classmethod
    def from_saved(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> RidgePredictor:
        p = cls()
        p.anchor = BayesLinear.from_state(params["anchor"], arrays, "anchor.")
        p.devs = [BayesLinear.from_state(s, arrays, f"dev{j}.") for j, s in enumerate(params["deviations"])]
        return p


#: ``blend`` and ``lexical`` keep every training prompt as a neighbour up to this many, else half as many
#: clusters of all of them (:class:`~catimg.routing.neighbours.Neighbours`): the artifact stays bounded
#: (6.3 MB of float16 embeddings at d = 384) and prediction searches at most this many.
KNN_MAX = 8192


class BlendPredictor:
    """The ridge prediction and a relative KNN (ridge anchor + the k nearest prompts' mean deviations, from
    the :class:`~catimg.routing.neighbours.Neighbours` of at most ``knn_max`` prototypes), mixed at the KNN
    share ``weight``."""

    name = "blend"

    def __init__(
        self, k: int | None = None, weight: float = 0.5, knn_max: int = KNN_MAX, seed: int = 0
    ) -> None:
        self.k = k
        self.weight = weight
        self.knn_max = knn_max
        self.seed = seed  # of the neighbour clusters' k-means sample (beyond knn_max prompts)
        self.ridge = RidgePredictor()
        self.nb: Neighbours | None = None

    def fit(self, X: Inputs, Y: np.ndarray) -> BlendPredictor:
        emb, Y = _check_fit(X, Y)
        self._keep_neighbours(emb, self.ridge.fit_targets(emb, Y))
        return self

    def _keep_neighbours(self, emb: np.ndarray, R: np.ndarray) -> None:
        if self.k is None:
            self.k = default_k(len(emb))
        self.nb = Neighbours.build(emb, R, self.knn_max, self.seed)

    def _linear(self, X: Inputs, dm: np.ndarray) -> np.ndarray:
        """The linear part of the deviations (the ridge's here)."""
        return dm

    def _parts(
        self, X: Inputs, variances: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """(anchor means (m,), linear deviations (m, g), KNN deviations (m, g), variances (m, g) or None
        without ``variances``: the posterior variances are most of the ridge's prediction time)."""
        assert self.nb is not None and self.k is not None
        emb = np.asarray(emb_of(X), np.float64)
        var = None
        if variances:
            am, av, dm, dv = self.ridge.predict_parts(emb)
            var = av[:, None] + dv
        else:
            am, dm = self.ridge.anchor.mean(emb), self.ridge.deviation_means(emb)
        lin = self._linear(X, dm)
        knn = self.nb.means(emb, self.k) if len(emb) else lin
        return am, lin, knn, var

    def predict(self, X: Inputs) -> tuple[np.ndarray, np.ndarray]:
        am, lin, knn, var = self._parts(X)
        assert var is not None
        dev = self.weight * knn + (1.0 - self.weight) * lin
        return am[:, None] + dev, np.sqrt(var)

    def predict_shares(self, X: Inputs) -> tuple[np.ndarray, np.ndarray]:
        """Predicted means at KNN share 0 and at share 1 (no uncertainty): :meth:`predict` mixes them at
        ``weight`` (training chooses the share from these, :mod:`catimg.training.crossval`)."""
        am, lin, knn, _ = self._parts(X, variances=False)
        return am[:, None] + lin, am[:, None] + knn

    def params(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "weight": self.weight,
            "knn_max": self.knn_max,
            "seed": self.seed,
            **self.ridge.params(),
        }

    def arrays(self) -> dict[str, np.ndarray]:
        assert self.nb is not None
        return {**self.nb.arrays(), **self.ridge.arrays()}

    @classmethod
    def from_saved(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> BlendPredictor:
        p = cls(
            k=int(params["k"]),
            weight=float(params["weight"]),
            knn_max=int(params.get("knn_max", KNN_MAX)),
            seed=int(params.get("seed", 0)),
        )
        p._restore(params, arrays)
        return p

    def _restore(self, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """The ridge and the neighbours from a saved router's params and arrays."""
        self.ridge = RidgePredictor.from_saved(params, arrays)
        self.nb = Neighbours.from_arrays(arrays)


class LexicalPredictor(BlendPredictor):
    """``blend`` whose linear part also reads the prompt's words: ridge deviations + a ridge on word and
    word-pair tf-idf features (:mod:`catimg.routing.ngrams`) fitted to what the embedding ridge leaves of the
    deviations; mixed with the relative KNN of at most ``knn_max`` training prompts."""

    name = "lexical"

    def __init__(
        self,
        k: int | None = None,
        weight: float = 0.4,
        lam: float = 10.0,
        knn_max: int = KNN_MAX,
        seed: int = 0,
    ) -> None:
        super().__init__(k, weight, knn_max, seed)
        self.lam = lam
        self.vocab = NgramVocab()
        self.W = np.zeros((0, 0))

    def fit(self, X: Inputs, Y: np.ndarray) -> LexicalPredictor:
        texts = texts_of(X)
        emb, Y = _check_fit(X, Y)
        R = self.ridge.fit_targets(emb, Y)
        dm = self.ridge.deviation_means(emb)
        self.vocab, S = NgramVocab.fit_transform(texts)
        self.W = masked_ridge(S, R - dm, self.lam)
        self._keep_neighbours(emb, R)
        return self

    def _linear(self, X: Inputs, dm: np.ndarray) -> np.ndarray:
        out: np.ndarray = dm + self.vocab.transform(texts_of(X)).dot(self.W)
        return out

    def params(self) -> dict[str, Any]:
        return {"lam": self.lam, "n_grams": len(self.vocab), **super().params()}

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "ngrams": self.vocab.to_bytes(),
            "idf": self.vocab.idf.astype(np.float32),
            "lexW": self.W.astype(np.float32),
            **super().arrays(),
        }

    @classmethod
    def from_saved(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> LexicalPredictor:
        p = cls(
            k=int(params["k"]),
            weight=float(params["weight"]),
            lam=float(params["lam"]),
            knn_max=int(params.get("knn_max", KNN_MAX)),
            seed=int(params.get("seed", 0)),
        )
        p._restore(params, arrays)
        assert p.nb is not None
        p.vocab = NgramVocab.from_bytes(arrays["ngrams"], arrays["idf"].astype(np.float64))
        p.W = arrays["lexW"].astype(np.float64)
        if p.W.shape != (len(p.vocab), p.nb.S.shape[1]):
            raise ValueError(f"lexical weights {p.W.shape} do not fit {len(p.vocab)} n-grams")
        return p


PREDICTORS: dict[str, type[KNNPredictor] | type[RidgePredictor] | type[BlendPredictor]] = {
    "knn": KNNPredictor,
    "ridge": RidgePredictor,
    "blend": BlendPredictor,
    "lexical": LexicalPredictor,
}
#: What ``--predictor auto`` uses (decided by ``python -m catimg.benchmarks.routing``).
AUTO = "lexical"


def make_predictor(name: str, **kwargs: Any) -> Predictor:
    if name == "auto":
        name = AUTO
    cls = PREDICTORS[name]
    return cls(**kwargs)


def load_predictor(
    name: str, params: dict[str, Any], arrays: dict[str, np.ndarray], where: str = "router"
) -> Predictor:
    if name not in PREDICTORS:
        raise RouterError(
            f'{where}: unknown predictor "{name}"; this catimg knows {", ".join(PREDICTORS)}; '
            "retrain the router with `catimg train`"
        )
    try:
        return PREDICTORS[name].from_saved(params, arrays)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise RouterError(
            f"{where}: predictor weights are incomplete ({exc}); retrain the router with `catimg train`"
        ) from exc
