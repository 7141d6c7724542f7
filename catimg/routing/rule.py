"""The routing rule, in one place: normalise, choose, switch points and breakpoints of λ.

Rule (CATImage): prompt i goes to ``argmax_g  qn[i, g] − λ · cn[g]`` (the *value* of generator g), where

* ``qn = (q − lo) / (hi − lo)`` is the predicted quality on the metric's scale ``(lo, hi)``; a scale of zero
  span (``hi == lo``, e.g. a metric whose measured scores were all equal) divides by 1 instead of by zero;
* ``cn = cost / C`` with C the largest finite, positive cost among the *reference* generators: the generators
  the λ levels were calibrated on, i.e. the router's generators. In training and evaluation that is every
  column given; in routing it is every catalog generator the router knows, whether or not it is enabled or
  fits this device. C does not depend on which generators can be chosen in a run, so λ stays one price of
  compute: disabling a generator, or one not fitting the GPU, never changes the choice between the others.
  Without any such cost, C = 1.

Ties (values equal after rounding to :data:`TIE_DECIMALS` decimals, so that the tie-break is stable across
platforms) go to the cheaper generator, then to the lower column index. A NaN value (no prediction) and a
column outside ``allowed`` never win.

Switch points: for the chosen generator g and another h, ``value_h − value_g = dq − λ·dc``
(``dq = qn_h − qn_g``, ``dc = cn_h − cn_g``) is zero at ``λ = dq / dc``. A cheaper, worse h overtakes g when λ
rises above it; a dearer, better h when λ falls below it. The breakpoints of a λ sweep are these crossings
over every pair of generators and every prompt.

Only numpy; no other catimg module. budget (budgets → λ), routing (route_prompts), evaluate (curves), training
(level calibration) and router (Router.choose) all call this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Values are rounded to this many decimals before ties are broken.
TIE_DECIMALS = 12
#: At most this many distinct λ crossings are kept by :func:`breakpoints` (quantiles beyond that).
MAX_SWEEP_POINTS = 600


def normalise_quality(q: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """``(q − lo) / (hi − lo)``; a zero span divides by 1. NaN stays NaN."""
    lo, hi = float(scale[0]), float(scale[1])
    span = (hi - lo) or 1.0
    return (np.asarray(q, float) - lo) / span


def cost_scale(cost: np.ndarray, reference: np.ndarray | None = None) -> float:
    """C: the largest finite, positive cost among the ``reference`` columns (a bool mask; None = all); else
    1."""
    c = np.asarray(cost, float)
    ref = c if reference is None else c[np.asarray(reference, bool)]
    ref = ref[np.isfinite(ref) & (ref > 0)]
    return float(ref.max()) if ref.size else 1.0


def normalise_cost(cost: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """``cost / C`` (see :func:`cost_scale`)."""
    return np.asarray(cost, float) / cost_scale(cost, reference)


def normalise(
    q: np.ndarray, cost: np.ndarray, scale: tuple[float, float], reference: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(qn, cn): qualities in metric units and raw costs, normalised by the rule."""
    return normalise_quality(q, scale), normalise_cost(cost, reference)


def values(qn: np.ndarray, cn: np.ndarray, lam: float) -> np.ndarray:
    """``qn − λ·cn`` per (prompt, generator); qn is (n, g), cn is (g,)."""
    return np.asarray(qn, float) - lam * np.asarray(cn, float)[None, :]


def _comparable(qn: np.ndarray, cn: np.ndarray, lam: float, allowed: np.ndarray | None) -> np.ndarray:
    """Values ready for comparison: rounded, −inf where NaN or not allowed."""
    v = values(qn, cn, lam)
    if allowed is not None:
        v = np.where(np.asarray(allowed, bool)[None, :], v, -np.inf)
    v = np.where(np.isnan(v), -np.inf, v)
    return np.round(v, TIE_DECIMALS)


def _cost_rank(cn: np.ndarray) -> np.ndarray:
    """Rank of each column in the tie-break order: cheapest first, then the lower index."""
    order = np.lexsort((np.arange(cn.size), cn))
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank


def choose(qn: np.ndarray, cn: np.ndarray, lam: float, allowed: np.ndarray | None = None) -> np.ndarray:
    """Per row, the column maximising ``qn − λ·cn``; ties go to the lower cost, then the lower column index.

    qn: (n, g) normalised predicted quality; cn: (g,) normalised costs; allowed: (g,) bool mask of routable
    columns.
    """
    cn = np.asarray(cn, float)
    v = _comparable(qn, cn, lam, allowed)
    tied = v >= v.max(axis=1, keepdims=True)
    ranked = np.where(tied, _cost_rank(cn)[None, :], np.iinfo(np.int64).max)
    return np.asarray(np.argmin(ranked, axis=1))


def choose_metric(q: np.ndarray, cost: np.ndarray, lam: float, scale: tuple[float, float]) -> np.ndarray:
    """:func:`choose` on qualities in metric units and raw costs (every column allowed and in the cost
    scale)."""
    qn, cn = normalise(q, cost, scale)
    return choose(qn, cn, lam)


def runner_up(qn_row: np.ndarray, cn: np.ndarray, lam: float, chosen: int, allowed: np.ndarray) -> int | None:
    """The best allowed column of one prompt other than ``chosen``, by the same order as :func:`choose`."""
    others = np.asarray(allowed, bool).copy()
    others[chosen] = False
    if not others.any():
        return None
    return int(choose(np.asarray(qn_row, float)[None, :], cn, lam, others)[0])


def crossing(dq: np.ndarray | float, dc: np.ndarray | float) -> np.ndarray:
    """The λ at which two generators' values are equal: ``dq / dc`` (differences of qn and of cn)."""
    return np.asarray(np.asarray(dq, float) / np.asarray(dc, float))


@dataclass(frozen=True)
class Switch:
    """Another generator (column) that overtakes the choice at price ``lam``."""

    column: int
    lam: float


@dataclass(frozen=True)
class Switches:
    """Where one prompt's choice changes: ``down`` wins above its λ (cheaper), ``up`` below its λ (dearer)."""

    down: Switch | None
    up: Switch | None


def switch_points(qn_row: np.ndarray, cn: np.ndarray, chosen: int, allowed: np.ndarray) -> Switches:
    """The nearest λ at which a cheaper and a dearer allowed generator would overtake ``chosen`` for one
    prompt.

    Exact when ``chosen`` is the choice at the current λ: the choice holds from ``up.lam`` to ``down.lam`` (a
    bound is None when no generator ever overtakes on that side).
    """
    q = np.asarray(qn_row, float)
    cn = np.asarray(cn, float)
    dq, dc = q - q[chosen], cn - cn[chosen]
    others = np.asarray(allowed, bool).copy()
    others[chosen] = False
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = crossing(dq, dc)
    cheaper = others & (dc < 0) & (dq < 0)
    dearer = others & (dc > 0) & (dq > 0)
    down = up = None
    if cheaper.any():
        j = int(np.flatnonzero(cheaper)[np.argmin(lam[cheaper])])
        down = Switch(j, float(lam[j]))
    if dearer.any():
        j = int(np.flatnonzero(dearer)[np.argmax(lam[dearer])])
        up = Switch(j, float(lam[j]))
    return Switches(down=down, up=up)


def crossings(qn: np.ndarray, cn: np.ndarray) -> np.ndarray:
    """Every positive λ at which two generators' values cross for some prompt (sorted, unique)."""
    cn = np.asarray(cn, float)
    lams = []
    g = qn.shape[1]
    for a in range(g):
        for b in range(a + 1, g):
            dc = cn[b] - cn[a]
            if abs(dc) < 1e-12:
                continue
            lam = crossing(qn[:, b] - qn[:, a], dc)
            lams.append(lam[lam > 0])
    return np.unique(np.concatenate(lams)) if lams else np.zeros(0)


def breakpoints(
    q: np.ndarray, cost: np.ndarray, scale: tuple[float, float], max_points: int = MAX_SWEEP_POINTS
) -> np.ndarray:
    """λs (>= 0) that visit every distinct choice of a sweep: 0, the midpoints between consecutive crossings,
    and one past the last crossing (always the cheapest). Beyond ``max_points`` crossings, their quantiles."""
    qn, cn = normalise(q, cost, scale)
    allv = crossings(qn, cn)
    if len(allv) > max_points:
        allv = np.quantile(allv, np.linspace(0, 1, max_points))
    mids = (allv[:-1] + allv[1:]) / 2 if len(allv) > 1 else np.zeros(0)
    top = (allv[-1] * 1.01 + 1e-6) if len(allv) else 1.0
    return np.unique(np.concatenate([[0.0], mids, [top]]))
