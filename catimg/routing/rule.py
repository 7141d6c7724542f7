"""The routing rule, in one place: normalise, choose, switch points, and the exact path of a λ sweep.

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
rises above it; a dearer, better h when λ falls below it. A sweep of λ from 0 upwards
(:func:`sweep_path`) follows every prompt's switches to ever cheaper generators, so quality–cost curves and
budget levels see every distinct policy of the sweep, not a sample of λs.

Only numpy; no other catimg module. budget (budgets → λ), routing (route_prompts), evaluate (curves), training
(level calibration) and router (Router.choose) all call this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Values are rounded to this many decimals before ties are broken.
TIE_DECIMALS = 12
#: Switch λs of a sweep closer than this (relative above 1) are one λ: what :func:`choose` sees there.
LAMBDA_TIE = 1e-9


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


@dataclass(frozen=True)
class SweepPath:
    """Every choice a sweep of λ from 0 upwards makes, exactly: the choice at λ = 0 and each later switch.

    A prompt's choice only ever moves to a cheaper generator as λ rises, so it switches at most g − 1 times;
    the switches of all prompts, in order of λ, give every distinct policy of the sweep (its *states*).
    ``lam``, ``row``, ``src`` and ``dst`` have one entry per switch: at λ ``lam[e]`` prompt ``row[e]`` moves
    from column ``src[e]`` to column ``dst[e]``."""

    start: np.ndarray
    lam: np.ndarray
    row: np.ndarray
    src: np.ndarray
    dst: np.ndarray

    def _cuts(self) -> np.ndarray:
        """Indices where a new distinct λ begins (λs closer than :data:`LAMBDA_TIE` count as one)."""
        gap = np.diff(self.lam)
        return np.flatnonzero(gap > LAMBDA_TIE * np.maximum(1.0, np.abs(self.lam[1:]))) + 1

    def ends(self) -> np.ndarray:
        """(s,) how many switches each state has made: 0, then all the switches up to each distinct λ."""
        if not len(self.lam):
            return np.zeros(1, np.int64)
        return np.concatenate([[0], self._cuts(), [len(self.lam)]])

    def state_lambdas(self) -> np.ndarray:
        """(s,) a λ inside each state: 0, the midpoints between consecutive distinct switch λs, and one past
        the last (every prompt then at its cheapest reachable generator)."""
        if not len(self.lam):
            return np.zeros(1)
        cuts = self._cuts()
        mids = (self.lam[cuts - 1] + self.lam[cuts]) / 2
        return np.concatenate([[0.0], mids, [self.lam[-1] * 1.01 + 1e-6]])

    def sums(self, V: np.ndarray) -> np.ndarray:
        """(s,) per state, the sum over prompts of ``V[i, choice of i]`` ((n, g) values, e.g. measured
        qualities or costs): one cumulative sum over the switches, no re-routing per λ."""
        V = np.asarray(V, float)
        first = V[np.arange(len(self.start)), self.start].sum()
        steps = np.concatenate([[0.0], np.cumsum(V[self.row, self.dst] - V[self.row, self.src])])
        out: np.ndarray = first + steps[self.ends()]
        return out

    def mean_costs(self, cost: np.ndarray) -> np.ndarray:
        """(s,) the mean cost per prompt of each state, for per-generator costs ``cost`` (g,)."""
        n = len(self.start)
        out: np.ndarray = self.sums(np.broadcast_to(np.asarray(cost, float), (n, len(cost)))) / max(n, 1)
        return out

    def choice(self, state: int) -> np.ndarray:
        """(n,) the choice of every prompt in state ``state`` (an index into :meth:`ends`)."""
        k = int(self.ends()[state])
        out = self.start.copy()
        rows, last = np.unique(self.row[:k][::-1], return_index=True)  # each prompt's latest switch
        out[rows] = self.dst[:k][::-1][last]
        return out


def sweep_path(qn: np.ndarray, cn: np.ndarray) -> SweepPath:
    """The exact :class:`SweepPath` of normalised predictions ``qn`` (n, g) and costs ``cn`` (g,).

    From :func:`choose` at λ = 0, each prompt's next switch is to the cheaper generator whose value overtakes
    the current one first (the least crossing λ; among equal ones the cheapest, as :func:`choose` breaks
    ties); NaN predictions never win. O(n g²) time, no λ grid: a sweep over 100,000 prompts of 10 generators
    takes a fraction of a second where routing the prompts at 600 λs took 10 s."""
    qn = np.asarray(qn, float)
    cn = np.asarray(cn, float)
    n, g = qn.shape
    start = choose(qn, cn, 0.0)
    rank = _cost_rank(cn)
    cur, at = start.copy(), np.zeros(n)
    live = np.arange(n)
    parts: list[tuple[np.ndarray, ...]] = []
    for _ in range(g - 1):
        j = cur[live]
        dc = cn[j][:, None] - cn[None, :]  # > 0: a cheaper generator
        with np.errstate(divide="ignore", invalid="ignore"):
            lam = (qn[live, j][:, None] - qn[live]) / dc
        lam = np.where((dc > 0) & ~np.isnan(lam), np.maximum(lam, at[live][:, None]), np.inf)
        first = lam.min(1)
        moves = np.isfinite(first)
        tied = lam <= first[:, None] + LAMBDA_TIE * np.maximum(1.0, first[:, None])
        h = np.where(tied, rank[None, :], g).argmin(1)
        live, j, h, first = live[moves], j[moves], h[moves], first[moves]
        parts.append((first, live, j, h))
        cur[live], at[live] = h, first
        if not len(live):
            break
    if parts:
        lam_all, row, src, dst = (np.concatenate(x) for x in zip(*parts, strict=True))
    else:
        none = np.zeros(0, np.int64)
        lam_all, row, src, dst = np.zeros(0), none, none, none
    order = np.argsort(lam_all, kind="stable")
    return SweepPath(start, lam_all[order], row[order], src[order], dst[order])
