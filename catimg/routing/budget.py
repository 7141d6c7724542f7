"""Budgets: from what the user asks to spend to a price of compute λ (and, for a total budget, a plan).

The rule itself (``argmax_g ( q̂_g − λ · c_g )`` with q̂ and c normalised, the tie-break) lives in
:mod:`catimg.routing.rule`. λ is the price of compute:

* a named level (``low``, ``medium``, ``high``, ``max``) is a λ calibrated on a reference prompt set and
  stored in the router artifact; ``max`` is λ = 0 (best predicted quality, ties to the cheaper generator);
* ``--budget 2.5s`` is a mean of 2.5 seconds per image on this device: λ is chosen over all the prompts given
  so that their mean predicted cost fits (a cap for a single prompt);
* ``--total-budget 10m`` is one budget for a whole prompt file: λ is found by bisection so that the total
  predicted cost, including loading each model the plan uses, fits; a greedy fix-up then spends what is left
  on the upgrades with the most predicted quality per second.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from catimg.durations import format_duration
from catimg.errors import InputError
from catimg.routing.rule import choose, normalise_cost

LEVELS = ("low", "medium", "high", "max")

_DURATION = re.compile(
    r"^\s*(?:(\d+(?:\.\d+)?)\s*h)?"
    r"\s*(?:(\d+(?:\.\d+)?)\s*m(?:in)?)?"
    r"\s*(?:(\d+(?:\.\d+)?)\s*s)?"
    r"\s*(?:(\d+(?:\.\d+)?)\s*ms)?\s*$"
)


@dataclass(frozen=True)
class Budget:
    """A per-image budget: a named level or a mean number of seconds per image."""

    level: str | None = None
    seconds: float | None = None

    def describe(self) -> str:
        return self.level if self.level is not None else f"{format_duration(self.seconds)} per image"


def parse_duration(text: str, option: str = "--total-budget") -> float:
    """'90s', '10m', '1h30m', '2.5', '500ms' -> seconds. A bare number is seconds."""
    t = text.strip().lower()
    example = "2.5s per image" if option == "--budget" else "90s or 10m"
    if t[:1] == "-" and t[1:2].isdigit():  # -5, -5s: a duration, but not a positive one
        raise InputError(f'{option} "{text}" must be positive: give a duration such as {example}')
    try:
        value = float(t)
    except ValueError:
        m = _DURATION.match(t)
        if not t or not m or not any(m.groups()):
            raise InputError(
                f'{option} "{text}" is not a duration; use seconds or minutes such as 90s, 10m, 1h30m'
            ) from None
        h, mi, s, ms = (float(g) if g else 0.0 for g in m.groups())
        value = h * 3600 + mi * 60 + s + ms / 1000
    if not value > 0 or value != value or value == float("inf"):
        raise InputError(f'{option} "{text}" must be positive: give a duration such as {example}')
    return value


def parse_budget(text: str | None) -> Budget:
    """'low' | 'medium' | 'high' | 'max' | '2.5s' | '500ms' | '2.5' -> Budget. None -> medium."""
    if text is None:
        return Budget(level="medium")
    t = text.strip().lower()
    if t in LEVELS:
        return Budget(level=t)
    if t and (t[0].isdigit() or t[0] in ".-"):
        return Budget(seconds=parse_duration(text, "--budget"))
    from catimg.errors import did_you_mean

    raise InputError(
        f'--budget "{text}" is not a level or a duration{did_you_mean(t, LEVELS)}; '
        f"use one of {', '.join(LEVELS)} or seconds per image such as 2.5s"
    )


def plan_cost(
    choice: np.ndarray, cost: np.ndarray, load: np.ndarray | None, models: list[str] | None
) -> float:
    """Total seconds of a plan: per-image costs plus, when given, one load per distinct model used."""
    total = float(cost[choice].sum())
    if load is not None and models is not None:
        total += load_seconds(choice, load, models)
    return total


def load_seconds(choice: np.ndarray, load: np.ndarray, models: Sequence[str]) -> float:
    """Seconds to load the models a plan uses: one load per distinct model (that of its first column used)."""
    used: dict[str, float] = {}
    for j in np.unique(choice):
        used.setdefault(models[int(j)], float(load[int(j)]))
    return sum(used.values())


def solve_total(
    qn: np.ndarray,
    cost: np.ndarray,
    budget_seconds: float,
    allowed: np.ndarray,
    load: np.ndarray | None = None,
    models: list[str] | None = None,
    option: str = "--total-budget",
    cn: np.ndarray | None = None,
    labels: Sequence[str] | None = None,
) -> tuple[float, np.ndarray]:
    """Find λ and a plan whose total predicted cost (images, plus loads when given) fits ``budget_seconds``.

    Bisection on λ (the plan's cost does not increase as λ grows), then a greedy fix-up that spends the slack
    on the single-prompt upgrades with the most predicted quality per extra second. λ is a price on the
    normalised costs ``cn`` (default: :func:`catimg.routing.rule.normalise_cost` of ``cost``); the plan does
    not depend on their scale. Returns (λ, choice). Raises InputError when even the cheapest plan does not fit
    (:func:`too_small`; ``labels`` names the columns in it).
    """
    cn = normalise_cost(cost) if cn is None else np.asarray(cn, float)
    n = qn.shape[0]
    lam_hi = 1.0
    cheapest = choose(qn, cn, 1e9, allowed)
    min_cost = plan_cost(cheapest, cost, load, models)
    if min_cost > budget_seconds * (1 + 1e-9):
        raise InputError(too_small(option, budget_seconds, n, cost, allowed, cheapest, min_cost, labels))
    top = choose(qn, cn, 0.0, allowed)
    if plan_cost(top, cost, load, models) <= budget_seconds:
        return 0.0, top
    while plan_cost(choose(qn, cn, lam_hi, allowed), cost, load, models) > budget_seconds:
        lam_hi *= 2
        if lam_hi > 1e9:
            break
    lam_lo = 0.0
    for _ in range(60):
        mid = (lam_lo + lam_hi) / 2
        if plan_cost(choose(qn, cn, mid, allowed), cost, load, models) <= budget_seconds:
            lam_hi = mid
        else:
            lam_lo = mid
    return lam_hi, _spend_slack(
        qn, cost, budget_seconds, allowed, load, models, choose(qn, cn, lam_hi, allowed)
    )


def _spend_slack(
    qn: np.ndarray,
    cost: np.ndarray,
    budget_seconds: float,
    allowed: np.ndarray,
    load: np.ndarray | None,
    models: list[str] | None,
    choice: np.ndarray,
) -> np.ndarray:
    """Greedy fix-up of a plan that fits: take upgrades (prompt i -> generator j) with the best Δq/Δcost
    (loading a model not used yet counted in Δcost) while they fit."""
    n = qn.shape[0]
    choice = choice.copy()
    spent = plan_cost(choice, cost, load, models)
    while True:
        slack = budget_seconds - spent
        best: tuple[float, int, int, float] | None = None
        for j in np.flatnonzero(allowed):
            dq = qn[:, j] - qn[np.arange(n), choice]
            dc = cost[j] - cost[choice]
            ok = (dq > 1e-12) & ~np.isnan(dq)
            if not ok.any():
                continue
            extra_load = 0.0
            if load is not None and models is not None:
                used_models = {models[int(k)] for k in np.unique(choice)}
                if models[int(j)] not in used_models:
                    extra_load = float(load[j])
            need = dc + extra_load
            fits = ok & (need <= slack + 1e-9)
            if not fits.any():
                continue
            ratio = np.where(fits, dq / np.maximum(need, 1e-12), -np.inf)
            i = int(np.argmax(ratio))
            if best is None or ratio[i] > best[0]:
                best = (float(ratio[i]), i, int(j), 0.0)
        if best is None:
            break
        _, i, best_j, _ = best
        choice[i] = best_j
        new_spent = plan_cost(choice, cost, load, models)
        if new_spent > budget_seconds + 1e-9:  # a downgrade elsewhere removed a model: be safe
            break
        spent = new_spent
    return choice


def too_small(
    option: str,
    budget_seconds: float,
    n: int,
    cost: np.ndarray,
    allowed: np.ndarray,
    cheapest: np.ndarray,
    min_cost: float,
    labels: Sequence[str] | None = None,
) -> str:
    """The message for a budget below the cheapest plan: what the cheapest generator costs on this device and
    the smallest budget that works (rounded up, so that passing it works). ``labels``: a name per column."""
    j = int(np.flatnonzero(allowed)[np.argmin(cost[allowed])])
    name = labels[j] if labels is not None else "the cheapest generator"
    if option == "--budget":  # per image: fewer prompts cannot help
        return (
            f'--budget "{format_duration(budget_seconds / n)}" per image is below the cheapest '
            f"generator on this device: {name} takes {format_duration(cost[j], round_up=True)} per "
            "image. The smallest per-image budget that works here is --budget "
            f'"{format_duration(cost[j], round_up=True)}"; or use a level (low, medium, high, max)'
        )
    used = sorted({labels[int(k)] for k in np.unique(cheapest)}) if labels is not None else [name]
    return (
        f'--total-budget "{format_duration(budget_seconds)}" is below the cheapest plan for '
        f"these {n} prompt(s): {format_duration(min_cost, round_up=True)} with {', '.join(used)} "
        "(loading included). Give at least --total-budget "
        f'"{format_duration(min_cost, round_up=True)}", or route fewer prompts'
    )
