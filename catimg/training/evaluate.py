"""Held-out evaluation of routing: quality-cost curves and the headline numbers.

Definitions (costs in the router's cost unit, qualities in metric units, means over held-out prompts where
every generator was measured):

- **Routing rule** (:mod:`catimg.routing.rule`): for a price lambda, prompt i goes to
  argmax_g  q_norm(g, i) - lambda * c_norm(g) with q_norm = (q - lo) / (hi - lo) on the metric scale and
  c_norm = cost / the max cost of the generators evaluated; ties go to the cheaper generator.
- **Curve**: sweeping lambda from 0 to "always the cheapest" gives points (mean cost, mean *measured*
  quality), one per distinct policy of the sweep (every prompt's every switch, exactly:
  :func:`~catimg.routing.rule.sweep_path`). Between two points the curve is linear (randomising between the
  two policies reaches any cost in between); beyond the last point it stays flat. AUC and APGR integrate
  this piecewise-linear curve exactly.
- **AUC** (``auc``): the mean height of the curve over the cost range of the single generators,
  1/(c_max - c_min) * integral from c_min to c_max of Q(c) dc, in metric units (higher is better).
- **Quality at the best single generator's cost** (``quality_at_best_cost``): Q(c_best) where the best single
  generator is the one with the highest mean measured quality.
- **Cost to match** (``cost_to_match``): the least cost c with Q(c) >= the best single generator's quality,
  also as a percentage of c_best (``cost_to_match_pct``); None when the curve never matches it.
- **APGR** (``apgr``, average performance gap recovered): the mean gain of the curve over random mixing of the
  cheapest and the best single generator (the straight line between their points), over the cost range between
  them, as a share of the same gain of the oracle's curve (1 = the oracle, 0 = no better than that mix).
- **Oracle**: the same sweep with the measured qualities as predictions (an upper bound nobody can reach; part
  of it is seed luck).
- **Random**: a prompt-blind random mix of single generators; its expected curve is the upper convex hull of
  the single generators' (cost, quality) points (the best any policy can do that does not look at the prompt).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

# The routing rule lives in catimg.routing.rule; ``choose`` takes qualities in metric units and raw costs
# (also used by training's level calibration and the benchmarks).
from catimg.routing.rule import choose_metric, normalise, sweep_path

choose = choose_metric  # an assignment, not `import ... as choose`: mypy --strict treats it as exported


#: Points per curve in ``eval --json`` and its plot (see :meth:`Curve.thinned`).
MAX_SHOWN_POINTS = 601


@dataclass
class Curve:
    lambdas: np.ndarray
    costs: np.ndarray  # mean cost per lambda
    qualities: np.ndarray  # mean measured quality per lambda

    def sorted(self) -> tuple[np.ndarray, np.ndarray]:
        o = np.lexsort((-self.qualities, self.costs))
        return self.costs[o], self.qualities[o]

    def at(self, c: float) -> float:
        x, y = self.sorted()
        return float(np.interp(c, x, y))

    def thinned(self, max_points: int = MAX_SHOWN_POINTS) -> tuple[list[float], list[float]]:
        """(costs, qualities) of at most ``max_points`` of its points, evenly spread along the curve by cost
        rank, both ends kept: what ``eval --json`` and ``--plot`` show (a sweep over thousands of prompts has
        a point per switch; the numbers use them all)."""
        x, y = self.sorted()
        keep = np.unique(np.linspace(0, len(x) - 1, min(len(x), max_points)).round().astype(int))
        return x[keep].tolist(), y[keep].tolist()


def sweep(q_pred: np.ndarray, q_true: np.ndarray, costs: np.ndarray, scale: tuple[float, float]) -> Curve:
    """The curve of a λ sweep of predictions ``q_pred`` scored with measured ``q_true`` (both (n, g), metric
    units): every distinct policy of the sweep (:func:`~catimg.routing.rule.sweep_path`), none skipped."""
    costs = np.asarray(costs, float)
    path = sweep_path(*normalise(q_pred, costs, scale))
    n = max(len(q_true), 1)
    return Curve(path.state_lambdas(), path.mean_costs(costs), path.sums(q_true) / n)


def hull_curve(single_costs: np.ndarray, single_q: np.ndarray) -> Curve:
    """Upper concave hull of the single generators' points: the expected curve of random routing."""
    o = np.lexsort((-single_q, single_costs))
    pts = [(float(single_costs[i]), float(single_q[i])) for i in o]
    hull: list[tuple[float, float]] = []
    for p in pts:
        if hull and p[1] <= hull[-1][1]:
            continue  # costs more, no better
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (y2 - y1) * (p[0] - x1) <= (p[1] - y1) * (x2 - x1):
                hull.pop()
            else:
                break
        hull.append(p)
    xs = np.array([h[0] for h in hull])
    ys = np.array([h[1] for h in hull])
    return Curve(np.full(len(xs), np.nan), xs, ys)


def integral(curve: Curve, a: float, b: float) -> float:
    """The exact integral of the curve (linear between its points, flat beyond them) from cost a to b > a.
    (A sweep's states all differ in cost: every switch is to a cheaper generator.)"""
    x, y = curve.sorted()
    inside = (x > a) & (x < b)
    xs = np.concatenate([[a], x[inside], [b]])
    ys = np.concatenate([[curve.at(a)], y[inside], [curve.at(b)]])
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1])) / 2)


def auc(curve: Curve, c_min: float, c_max: float) -> float:
    """Mean height of the curve over [c_min, c_max] (metric units), integrated exactly."""
    if c_max <= c_min:
        return curve.at(c_min)
    return integral(curve, c_min, c_max) / (c_max - c_min)


def cost_to_match(curve: Curve, target: float) -> float | None:
    """The least cost at which the (linearly interpolated) curve reaches ``target``; None if never."""
    x, y = curve.sorted()
    if y[0] >= target:
        return float(x[0])
    for i in range(1, len(x)):
        if y[i] >= target:
            if y[i] == y[i - 1]:
                return float(x[i])
            t = (target - y[i - 1]) / (y[i] - y[i - 1])
            return float(x[i - 1] + t * (x[i] - x[i - 1]))
    return None


@dataclass
class Summary:
    """Headline numbers of one curve."""

    name: str
    auc: float
    quality_at_best_cost: float
    cost_to_match: float | None
    cost_to_match_pct: float | None
    apgr: float | None = None


def summarise(name: str, curve: Curve, single_costs: np.ndarray, single_q: np.ndarray) -> Summary:
    best = int(np.argmax(single_q))
    c_best, q_best = float(single_costs[best]), float(single_q[best])
    ctm = cost_to_match(curve, q_best - 1e-12)
    return Summary(
        name=name,
        auc=auc(curve, float(single_costs.min()), float(single_costs.max())),
        quality_at_best_cost=curve.at(c_best),
        cost_to_match=ctm,
        cost_to_match_pct=(100.0 * ctm / c_best) if ctm is not None else None,
    )


def mean_gain(curve: Curve, single_costs: np.ndarray, single_q: np.ndarray) -> float:
    """Mean of curve - (the line from the cheapest to the best single generator) over the cost range between
    them, integrated exactly."""
    # the cheapest generator; among equally cheap ones the best (a worse twin at the same cost is no baseline)
    cheap = int(np.lexsort((-np.asarray(single_q, float), np.asarray(single_costs, float)))[0])
    best = int(np.argmax(single_q))
    c0, c1 = float(single_costs[cheap]), float(single_costs[best])
    q0, q1 = float(single_q[cheap]), float(single_q[best])
    if c1 <= c0:  # the cheapest generator is the best: nothing to gain
        return 0.0
    return integral(curve, c0, c1) / (c1 - c0) - (q0 + q1) / 2


def apgr(curve: Curve, oracle: Curve, single_costs: np.ndarray, single_q: np.ndarray) -> float | None:
    """The share of the oracle's mean gain (:func:`mean_gain`) that ``curve`` recovers; None when the oracle
    has none."""
    top = mean_gain(oracle, single_costs, single_q)
    return mean_gain(curve, single_costs, single_q) / top if top > 1e-12 else None


@dataclass(frozen=True)
class SparseCheck:
    """Held-out checks that need no prompt scored by every generator (measurements collected in use, where
    routing numbers cannot be computed): out-of-fold predictions against the generators' mean scores (the
    "column means", a router that ignores the prompt), on the same measured scores. With pairs (two
    generators scored differently on one prompt) the check is how many the predictions order as measured;
    without, how far they miss the scores. ``worse``: worse than the column means by more than
    WORSE_SE standard errors of the paired difference (a small sample is not a verdict)."""

    n_scores: int  # measured scores of the held-out prompts
    rmse: float  # of the out-of-fold predictions on them
    rmse_means: float  # of the column means on them
    n_pairs: int
    order: float | None  # share of the pairs the predictions order as measured (None without pairs)
    order_means: float | None  # the same for the column means
    worse: bool


#: How many standard errors worse than the column means a :class:`SparseCheck` must be to count as worse.
WORSE_SE = 2.0


def _clearly_positive(d: np.ndarray) -> bool:
    """Whether the mean of paired differences ``d`` is above WORSE_SE standard errors (and above 0)."""
    if d.size < 2:
        return False
    mean, se = float(d.mean()), float(d.std(ddof=1) / np.sqrt(d.size))
    return mean > WORSE_SE * se and mean > 0


def sparse_check(q_pred: np.ndarray, q_true: np.ndarray) -> SparseCheck:
    """:class:`SparseCheck` of predictions ``q_pred`` against scores ``q_true`` (both (n, g); NaN: not
    measured). The column means come from ``q_true`` itself, in-sample, which favours them."""
    M = ~np.isnan(q_true)
    means = np.array([q_true[M[:, j], j].mean() if M[:, j].any() else np.nan for j in range(q_true.shape[1])])
    err, err_means = (q_pred - q_true)[M], (means[None, :] - q_true)[M]
    a, b = np.triu_indices(q_true.shape[1], 1)
    both = M[:, a] & M[:, b]
    dy = np.where(both, q_true[:, a] - q_true[:, b], 0.0)
    pairs = both & (dy != 0)
    sign = np.sign(dy[pairs])
    right = np.sign((q_pred[:, a] - q_pred[:, b])[pairs]) == sign
    right_means = np.sign(np.broadcast_to(means[a] - means[b], dy.shape)[pairs]) == sign
    if pairs.any():
        worse = _clearly_positive(right_means.astype(float) - right)
    else:
        worse = _clearly_positive(err**2 - err_means**2)
    return SparseCheck(
        n_scores=int(M.sum()),
        rmse=float(np.sqrt(np.mean(err**2))) if err.size else float("nan"),
        rmse_means=float(np.sqrt(np.mean(err_means**2))) if err.size else float("nan"),
        n_pairs=int(pairs.sum()),
        order=float(right.mean()) if pairs.any() else None,
        order_means=float(right_means.mean()) if pairs.any() else None,
        worse=worse,
    )


@dataclass
class EvalReport:
    """Everything ``catimg eval`` shows."""

    metric: str
    cost_unit: str
    n_prompts: int
    n_dropped: int
    generators: list[str]
    single: list[dict[str, Any]]  # name, cost, quality
    best_single: str
    summaries: list[Summary]
    levels: list[dict[str, Any]]  # name, lambda, cost, quality, shares
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    #: Generators measured in the file that the router does not know (left out of the evaluation).
    ignored: list[str] = field(default_factory=list)
    #: How many evaluated prompts the router was trained on: those numbers are not held-out (the CLI warns).
    seen_in_training: int = 0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        return d


def evaluate_predictions(
    q_pred: np.ndarray,
    q_true: np.ndarray,
    costs: Sequence[float] | np.ndarray,
    scale: tuple[float, float],
    generators: Sequence[str],
    metric: str = "score",
    cost_unit: str = "tflops",
    levels: dict[str, float] | None = None,
    name: str = "router",
    n_dropped: int = 0,
) -> EvalReport:
    """Curves and numbers for predictions ``q_pred`` against measured ``q_true`` (both (n, g), no NaN)."""
    c = np.asarray(costs, float)
    single_q = q_true.mean(0)
    router = sweep(q_pred, q_true, c, scale)
    oracle = sweep(q_true, q_true, c, scale)
    random = hull_curve(c, single_q)
    sums = [
        summarise(name, router, c, single_q),
        summarise("oracle", oracle, c, single_q),
        summarise("random", random, c, single_q),
    ]
    for s, cv in zip(sums, (router, oracle, random), strict=True):
        s.apgr = apgr(cv, oracle, c, single_q)
    lv = []
    for lname, lam in (levels or {}).items():
        ch = choose(q_pred, c, lam, scale)
        shares = {g: float(np.mean(ch == j)) for j, g in enumerate(generators)}
        lv.append(
            {
                "name": lname,
                "lambda": lam,
                "cost": float(c[ch].mean()),
                "quality": float(q_true[np.arange(len(ch)), ch].mean()),
                "shares": shares,
            }
        )
    curves = {
        k: dict(zip(("cost", "quality"), cv.thinned(), strict=True))
        for k, cv in ((name, router), ("oracle", oracle), ("random", random))
    }
    return EvalReport(
        metric=metric,
        cost_unit=cost_unit,
        n_prompts=len(q_true),
        n_dropped=n_dropped,
        generators=list(generators),
        single=[
            {"name": g, "cost": float(c[j]), "quality": float(single_q[j])} for j, g in enumerate(generators)
        ],
        best_single=generators[int(np.argmax(single_q))],
        summaries=sums,
        levels=lv,
        curves=curves,
    )


def evaluate_router(
    router: Any,
    measurements: Any,
    metric: str | None = None,
    encoder: Any = None,
    costs: dict[str, float] | None = None,
    cost_unit: str | None = None,
) -> EvalReport:
    """Evaluate a loaded router on held-out measurements (a path or a MeasurementTable).

    Only prompts measured on every router generator present in the file count; costs are ``costs`` (seconds
    per image by generator name, in ``cost_unit``: what routing uses on this device) or else the router's own
    (those used in training, in its cost unit). Generators of the file the router does not know are left out
    and listed in ``report.ignored`` (the CLI warns about them).
    """
    from catimg.errors import MeasurementsError
    from catimg.measurements import MeasurementTable, read_measurements

    if isinstance(measurements, MeasurementTable):
        table = measurements
    elif metric is not None:
        table = read_measurements(measurements, metric=metric)
    else:
        try:
            table = read_measurements(measurements, metric=router.metric)
        except MeasurementsError as exc:
            if "no rows with metric" not in exc.message:
                raise
            table = read_measurements(measurements)
    where = table.path or "measurements"
    cols = [g for g in router.generators if g in table.generators]
    ignored = [g for g in table.generators if g not in router.generators]
    if len(cols) < 1:
        raise MeasurementsError(
            f"{where}: none of the router's generators ({', '.join(router.generators)}) is measured "
            f"(the file has {', '.join(table.generators)}); evaluate on measurements of those generators"
        )
    sub = table.select(cols)
    full = ~np.any(np.isnan(sub.Y), axis=1)
    if full.sum() < 1:
        raise MeasurementsError(
            f"{where}: no prompt is measured on every one of {', '.join(cols)}; eval needs full rows"
        )
    n_dropped = int((~full).sum())
    sub = sub.subset(np.flatnonzero(full))
    if encoder is None:
        from catimg.routing.encoder import default_encoder

        encoder = default_encoder()
    emb = encoder.encode(sub.prompts)
    mean, _ = router.predict(emb, sub.prompts)
    idx = [router.generators.index(g) for g in cols]
    # ``costs`` (by name): the costs routing uses on this device (catimg.costs.model.routing_costs, the CLI
    # passes them); None: the router's own training costs
    cvec = np.array([(costs or router.costs)[g] for g in cols])
    report = evaluate_predictions(
        mean[:, idx],
        sub.Y,
        cvec,
        router.scale,
        cols,
        metric=router.metric,
        cost_unit=cost_unit or router.cost_unit,
        levels=router.levels,
        name=f"router ({router.predictor_name})",
        n_dropped=n_dropped,
    )
    report.ignored = ignored
    trained_on = set(router.training_prompts)
    report.seen_in_training = sum(p in trained_on for p in sub.prompts)
    return report


def plot_report(report: EvalReport, path: Any) -> None:
    """Draw the curves of ``report`` to a PNG (needs the optional matplotlib)."""
    from pathlib import Path

    from catimg.errors import InputError

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError(
            f"--plot {path}: matplotlib is not installed; pip install 'catimg[plot]' or drop --plot"
        ) from None
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, cv in report.curves.items():
        o = np.argsort(cv["cost"], kind="stable")
        ax.plot(
            np.array(cv["cost"])[o],
            np.array(cv["quality"])[o],
            label=name,
            linestyle="--" if name in ("oracle", "random") else "-",
        )
    for s in report.single:
        ax.scatter([s["cost"]], [s["quality"]], marker="o", zorder=3)
        ax.annotate(
            s["name"], (s["cost"], s["quality"]), textcoords="offset points", xytext=(4, 4), fontsize=8
        )
    ax.set_xlabel(f"mean cost per image ({report.cost_unit})")
    ax.set_ylabel(f"mean measured quality ({report.metric})")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(path).expanduser()
    if out.parent and not out.parent.exists():
        raise InputError(f"--plot {out}: folder {out.parent} does not exist; create it first")
    fig.savefig(out, dpi=120)
    plt.close(fig)
