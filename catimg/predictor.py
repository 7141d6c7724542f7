"""Quality predictors: prompt embedding -> predicted quality of every generator, with an uncertainty.

Two predictors, both numpy only, both trained per generator on the prompts where that generator was measured
(NaN elsewhere), so a generator measured on only a few prompts still gets predictions whose uncertainty says so:

``knn``  The paper's reference (CATImage, arXiv 2506.14753): the mean measured quality of the k nearest training
         prompts (Euclidean distance between unit embeddings), per generator; k = 100 in the paper, here
         ``min(100, max(5, n // 5))`` by default for smaller data. Uncertainty: the standard error of that mean.
``gp``   Gaussian-process regression (kernel ridge with closed-form predictive variance) per generator with an
         RBF kernel on the unit embeddings, k(x, x') = s^2 exp(-|x - x'|^2 / (2 l^2)), a constant mean, and the
         length scale l, signal s^2 and noise sigma^2 chosen by maximising the marginal likelihood on the training
         data. Uncertainty: the posterior standard deviation of the expected quality (without the per-image
         noise sigma), which grows for prompts far from the measured ones and for generators with few measurements.

Held-out numbers (``python -m catimg.benchmarks.routing``) decide which predictor ``auto`` picks.
"""

from __future__ import annotations

import math
from types import TracebackType
from typing import Any, Protocol

import numpy as np

from catimg.errors import RouterError


class Predictor(Protocol):
    name: str

    def fit(self, X: np.ndarray, Y: np.ndarray) -> Predictor: ...

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def params(self) -> dict[str, Any]: ...

    def arrays(self) -> dict[str, np.ndarray]: ...


def default_k(n: int) -> int:
    """The KNN k for n training prompts: the paper's 100, smaller for small data."""
    return int(min(100, max(5, n // 5)))


def _check_fit(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError(f"X {X.shape} and Y {Y.shape} must be (n, d) and (n, g)")
    empty = np.all(np.isnan(Y), axis=0)
    if empty.any():
        raise ValueError(f"generator columns {np.flatnonzero(empty).tolist()} have no measurements")
    return X, Y


def _sqdist(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    d = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * (A @ B.T)
    return np.maximum(d, 0.0)


class KNNPredictor:
    """Mean measured quality of the k nearest training prompts, per generator."""

    name = "knn"

    def __init__(self, k: int | None = None) -> None:
        self.k = k
        self.X: np.ndarray | None = None
        self.Y: np.ndarray | None = None

    def fit(self, X: np.ndarray, Y: np.ndarray) -> KNNPredictor:
        X, Y = _check_fit(X, Y)
        if self.k is None:
            self.k = default_k(X.shape[0])
        self.X, self.Y = X.astype(np.float32), Y
        return self

    def _col_stats(self) -> tuple[np.ndarray, np.ndarray]:
        assert self.Y is not None
        var = np.array([np.nanvar(c) if np.sum(~np.isnan(c)) > 1 else 0.0 for c in self.Y.T])
        return np.nanmean(self.Y, axis=0), var

    def neighbour_index(self, X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices (m, k) of the k nearest training prompts (any generator) and their squared distances."""
        assert self.X is not None
        D = _sqdist(np.asarray(X, np.float32), self.X)
        k = min(k, D.shape[1])
        idx = np.argpartition(D, k - 1, axis=1)[:, :k] if k < D.shape[1] else np.tile(np.arange(D.shape[1]), (len(D), 1))
        order = np.take_along_axis(D, idx, 1).argsort(1, kind="stable")
        idx = np.take_along_axis(idx, order, 1)
        return idx, np.take_along_axis(D, idx, 1)

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert self.X is not None and self.Y is not None and self.k is not None
        X = np.asarray(X, np.float32)
        m, g = X.shape[0], self.Y.shape[1]
        mean = np.empty((m, g))
        std = np.empty((m, g))
        if m == 0:
            return mean, std
        D = _sqdist(X, self.X)
        _, col_var = self._col_stats()
        for j in range(g):
            rows = np.flatnonzero(~np.isnan(self.Y[:, j]))
            k = min(self.k, len(rows))
            Dj = D[:, rows]
            nb = np.argpartition(Dj, k - 1, axis=1)[:, :k] if k < len(rows) else np.tile(np.arange(len(rows)), (m, 1))
            vals = self.Y[rows[nb], j]
            mean[:, j] = vals.mean(1)
            # standard error of the neighbour mean, with the column variance as a one-sample prior
            var = (vals.var(1) * k + col_var[j]) / (k + 1)
            std[:, j] = np.sqrt(var / k)
        return mean, std

    def params(self) -> dict[str, Any]:
        return {"k": self.k}

    def arrays(self) -> dict[str, np.ndarray]:
        assert self.X is not None and self.Y is not None
        return {"X": self.X.astype(np.float32), "Y": self.Y.astype(np.float32)}

    @classmethod
    def from_saved(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> KNNPredictor:
        p = cls(k=int(params["k"]))
        p.X = arrays["X"].astype(np.float32)
        p.Y = arrays["Y"].astype(np.float64)
        return p


#: Length scales tried by the GP (in units of Euclidean distance between unit vectors, which lies in [0, 2]).
GP_LENGTH_SCALES = (0.35, 0.5, 0.7, 1.0, 1.4)
#: Signal-to-noise variance ratios tried by the GP.
GP_SNR = tuple(float(x) for x in np.geomspace(1e-3, 10.0, 25))


class GPPredictor:
    """Per-generator Gaussian-process regression with an RBF kernel; hyperparameters by marginal likelihood."""

    name = "gp"

    def __init__(self, length_scales: tuple[float, ...] = GP_LENGTH_SCALES, snr: tuple[float, ...] = GP_SNR) -> None:
        self.length_scales = tuple(length_scales)
        self.snr = tuple(snr)
        self.X: np.ndarray | None = None  # (n, d) all training prompts
        self.cols: list[dict[str, Any]] = []  # per generator: rows, mu, ell, s2, noise, alpha, Kinv

    def fit(self, X: np.ndarray, Y: np.ndarray) -> GPPredictor:
        X, Y = _check_fit(X, Y)
        self.X = X.astype(np.float32)
        D = _sqdist(X, X)
        self.cols = []
        eig_cache: dict[bytes, dict[float, tuple[np.ndarray, np.ndarray]]] = {}
        for j in range(Y.shape[1]):
            rows = np.flatnonzero(~np.isnan(Y[:, j]))
            key = rows.tobytes()
            if key not in eig_cache:  # generators measured on the same prompts share the eigendecompositions
                Dj = D[np.ix_(rows, rows)]
                eig_cache = {key: {ell: self._eig(Dj, ell) for ell in self.length_scales}}
            self.cols.append(self._fit_one(eig_cache[key], Y[rows, j], rows))
        return self

    @staticmethod
    def _eig(D: np.ndarray, ell: float) -> tuple[np.ndarray, np.ndarray]:
        lam, U = np.linalg.eigh(np.exp(-D / (2 * ell * ell)))
        return np.maximum(lam, 0.0), U

    def _fit_one(self, eigs: dict[float, tuple[np.ndarray, np.ndarray]], y: np.ndarray, rows: np.ndarray) -> dict[str, Any]:
        n = len(y)
        mu = float(y.mean())
        r = y - mu
        total = max(float(r.var()) if n > 1 else 1.0, 1e-6)
        best: tuple[float, float, float, float] | None = None  # (lml, ell, s2, noise)
        if n >= 3:
            for ell, (lam, U) in eigs.items():
                z2 = (U.T @ r) ** 2
                for snr in self.snr:
                    # signal and noise split the observed variance
                    noise = total / (1.0 + snr)
                    s2 = total * snr / (1.0 + snr)
                    ev = s2 * lam + noise
                    lml = -0.5 * float(np.sum(z2 / ev)) - 0.5 * float(np.sum(np.log(ev))) - 0.5 * n * math.log(2 * math.pi)
                    if best is None or lml > best[0]:
                        best = (lml, ell, s2, noise)
        if best is None:  # too few points to choose: a smooth, uncertain prior
            ell = self.length_scales[len(self.length_scales) // 2]
            best = (0.0, ell, total, total)
        _, ell, s2, noise = best
        lam, U = eigs[ell]
        Kinv = (U / (s2 * lam + noise)) @ U.T
        Kinv = (Kinv + Kinv.T) / 2
        return {"rows": rows, "mu": mu, "ell": ell, "s2": s2, "noise": noise, "alpha": Kinv @ r, "Kinv": Kinv}

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert self.X is not None
        X = np.asarray(X, np.float64)
        m = X.shape[0]
        g = len(self.cols)
        mean = np.empty((m, g))
        std = np.empty((m, g))
        if m == 0:
            return mean, std
        D = _sqdist(X, self.X.astype(np.float64))
        for j, c in enumerate(self.cols):
            Ks = c["s2"] * np.exp(-D[:, c["rows"]] / (2 * c["ell"] ** 2))
            mean[:, j] = c["mu"] + Ks @ c["alpha"]
            var = c["s2"] - np.sum((Ks @ c["Kinv"]) * Ks, axis=1)
            # uncertainty of the constant mean itself (noise / n) keeps few-shot generators honest
            var = np.maximum(var, 0.0) + c["noise"] / max(len(c["rows"]), 1)
            std[:, j] = np.sqrt(var)
        return mean, std

    def params(self) -> dict[str, Any]:
        return {
            "kernel": "rbf on unit embeddings",
            "length_scale": [c["ell"] for c in self.cols],
            "signal_variance": [c["s2"] for c in self.cols],
            "noise_variance": [c["noise"] for c in self.cols],
            "mean": [c["mu"] for c in self.cols],
            "n_measured": [len(c["rows"]) for c in self.cols],
        }

    def arrays(self) -> dict[str, np.ndarray]:
        assert self.X is not None
        out: dict[str, np.ndarray] = {"X": self.X.astype(np.float32)}
        for j, c in enumerate(self.cols):
            out[f"rows_{j}"] = c["rows"].astype(np.int64)
            out[f"alpha_{j}"] = c["alpha"].astype(np.float64)
            out[f"Kinv_{j}"] = c["Kinv"].astype(np.float32)
        return out

    @classmethod
    def from_saved(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> GPPredictor:
        p = cls()
        p.X = arrays["X"].astype(np.float32)
        p.cols = []
        for j in range(len(params["length_scale"])):
            p.cols.append({
                "rows": arrays[f"rows_{j}"].astype(np.int64), "mu": float(params["mean"][j]),
                "ell": float(params["length_scale"][j]), "s2": float(params["signal_variance"][j]),
                "noise": float(params["noise_variance"][j]), "alpha": arrays[f"alpha_{j}"].astype(np.float64),
                "Kinv": arrays[f"Kinv_{j}"].astype(np.float64),
            })
        return p


class RelativeGPPredictor:
    """GPs on what routing needs: an anchor (the prompt's mean quality over the well-measured generators) plus,
    per generator, its deviation from that anchor. The choice argmax q_g - lambda c_g depends only on the
    deviations, which are smoother and better shared than the raw scores; a generator measured on few prompts
    learns its deviation (mostly a constant offset) from those few while the anchor comes from all prompts.
    Prediction: anchor + deviation; uncertainty: sqrt(var_anchor + var_deviation)."""

    name = "gp-rel"

    def __init__(self, core_share: float = 0.5) -> None:
        self.core_share = core_share
        self.gp = GPPredictor()
        self.core: np.ndarray | None = None

    def fit(self, X: np.ndarray, Y: np.ndarray) -> RelativeGPPredictor:
        X, Y = _check_fit(X, Y)
        cover = (~np.isnan(Y)).mean(0)
        core = cover >= self.core_share * cover.max()
        with np.errstate(invalid="ignore"), _quiet():
            anchor = np.nanmean(Y[:, core], axis=1)
        D = Y - anchor[:, None]  # NaN where the generator or the anchor is missing
        for j in range(Y.shape[1]):  # a generator never measured together with the anchor: raw deviation from the mean anchor
            if np.all(np.isnan(D[:, j])):
                D[:, j] = Y[:, j] - np.nanmean(anchor)
        self.core = core
        self.gp.fit(X, np.c_[anchor, D])
        return self

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m, s = self.gp.predict(X)
        return m[:, :1] + m[:, 1:], np.sqrt(s[:, :1] ** 2 + s[:, 1:] ** 2)

    def params(self) -> dict[str, Any]:
        assert self.core is not None
        return {"core_share": self.core_share, "core": self.core.astype(int).tolist(), **self.gp.params(),
                "columns": "anchor, then the deviation of each generator"}

    def arrays(self) -> dict[str, np.ndarray]:
        return self.gp.arrays()

    @classmethod
    def from_saved(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> RelativeGPPredictor:
        p = cls(core_share=float(params["core_share"]))
        p.core = np.array(params["core"], dtype=bool)
        p.gp = GPPredictor.from_saved(params, arrays)
        return p


class _quiet:
    def __enter__(self) -> None:
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._w.__exit__(exc_type, exc, tb)


PREDICTORS: dict[str, type[KNNPredictor] | type[GPPredictor] | type[RelativeGPPredictor]] = {"knn": KNNPredictor, "gp": GPPredictor, "gp-rel": RelativeGPPredictor}
#: What ``--predictor auto`` picks (decided by ``python -m catimg.benchmarks.routing``).
AUTO = "gp"


def make_predictor(name: str, **kwargs: Any) -> Predictor:
    if name == "auto":
        name = AUTO
    cls = PREDICTORS[name]
    return cls(**kwargs)


def load_predictor(name: str, params: dict[str, Any], arrays: dict[str, np.ndarray], where: str = "router") -> Predictor:
    if name not in PREDICTORS:
        raise RouterError(f"{where}: unknown predictor \"{name}\"; this catimg knows {', '.join(PREDICTORS)}; upgrade catimg or retrain")
    try:
        return PREDICTORS[name].from_saved(params, arrays)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise RouterError(f"{where}: predictor weights are incomplete ({exc}); retrain the router with `catimg train`") from exc
