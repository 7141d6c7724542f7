"""From prompts to one generator per prompt: predictions, costs and budget in, a routing decision (+ why) out.

:func:`route_prompts` runs five steps: each generator's status (disabled, needs calibration, does not fit,
routable) -> the score matrix (predicted quality and cost per prompt and generator, normalised by
:mod:`catimg.routing.rule`) -> solve (a named level's λ, or a seconds budget via :mod:`catimg.routing.budget`,
or a forced generator) -> each prompt's rows, plus the explanation (runner-up, margin, switch points) only
when asked -> the summary (planned seconds, best single generator). It never loads generator weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np

from catimg.config import Catalog, Generator
from catimg.costs.model import COST_SOURCES
from catimg.durations import format_duration
from catimg.errors import InputError, RouterError
from catimg.routing.budget import Budget, load_seconds, solve_total
from catimg.routing.rule import choose, normalise, runner_up, switch_points, values

if TYPE_CHECKING:
    from catimg.costs.model import Cost
    from catimg.device import DeviceInfo
    from catimg.routing.router import Router

#: The status of a generator for one run (per prompt in a :class:`GeneratorRow`; ``chosen``/``forced`` only
#: there).
Status = Literal["chosen", "routable", "needs calibration", "disabled", "does not fit", "forced"]
CHOSEN: Final = "chosen"
ROUTABLE: Final = "routable"
NEEDS_CALIBRATION: Final = "needs calibration"
DISABLED: Final = "disabled"
INFEASIBLE: Final = "does not fit"
FORCED: Final = "forced"


@dataclass(frozen=True)
class GeneratorRow:
    name: str
    predicted_quality: float | None
    uncertainty: float | None
    cost_seconds: float
    cost_tflops: float
    cost_kind: str
    value: float | None
    status: Status

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "predicted_quality": self.predicted_quality,
            "uncertainty": self.uncertainty,
            "cost_seconds": self.cost_seconds,
            "cost_tflops": self.cost_tflops,
            "cost_kind": self.cost_kind,
            "cost_source": COST_SOURCES.get(self.cost_kind, self.cost_kind),  # where cost_seconds comes from
            "value": self.value,
            "status": self.status,
        }


@dataclass(frozen=True)
class PromptRoute:
    index: int
    prompt: str
    choice: str
    lam: float
    rows: list[GeneratorRow]
    runner_up: str | None = None
    margin: float | None = None
    switch_down: tuple[str, float] | None = None  # (cheaper generator, λ above which it would win)
    switch_up: tuple[str, float] | None = None  # (dearer generator, λ below which it would win)
    neighbours: list[tuple[str, float]] = field(default_factory=list)
    #: A router trained on several sets: the most similar training prompts of each set.
    neighbours_by_set: dict[str, list[tuple[str, float]]] = field(default_factory=dict)

    def row(self, name: str) -> GeneratorRow:
        return next(r for r in self.rows if r.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "prompt": self.prompt,
            "choice": self.choice,
            "lambda": self.lam,
            "runner_up": self.runner_up,
            "margin": self.margin,
            "switch_down": {"generator": self.switch_down[0], "lambda": self.switch_down[1]}
            if self.switch_down
            else None,
            "switch_up": {"generator": self.switch_up[0], "lambda": self.switch_up[1]}
            if self.switch_up
            else None,
            "neighbours": [{"prompt": p, "similarity": s} for p, s in self.neighbours],
            **(
                {
                    "neighbours_by_set": {
                        k: [{"prompt": p, "similarity": s} for p, s in v]
                        for k, v in self.neighbours_by_set.items()
                    }
                }
                if self.neighbours_by_set
                else {}
            ),
            "generators": [r.to_dict() for r in self.rows],
        }


@dataclass(frozen=True)
class RoutingResult:
    routes: list[PromptRoute]
    generators: tuple[Generator, ...]
    costs: dict[str, Cost]
    device: DeviceInfo
    budget: str
    lam: float | None  # one λ for the whole run (None when forced)
    total_budget_seconds: float | None
    planned_seconds: float
    planned_load_seconds: float
    best_single: str | None  # routable generator with the highest mean predicted quality
    best_single_seconds: float | None
    best_single_quality: float | None
    mean_predicted_quality: float | None
    statuses: dict[str, Status]
    metric: str
    scale: tuple[float, float]
    levels: dict[str, float]

    def generator(self, name: str) -> Generator:
        return next(g for g in self.generators if g.name == name)

    def shares(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.routes:
            counts[r.choice] = counts.get(r.choice, 0) + 1
        return counts

    def level_for(self, lam: float) -> str:
        """Describe where λ sits among the named levels."""
        lv = sorted(self.levels.items(), key=lambda kv: -kv[1])
        for name, val in lv:
            if abs(lam - val) <= 1e-9 * max(1.0, abs(val)):
                return name
        above = [n for n, v in lv if v > lam]
        below = [n for n, v in lv if v < lam]
        if above and below:
            return f"between {above[-1]} and {below[0]}"
        if above:  # λ below every level's but max's: only max is more generous
            return f"more generous than {above[-1]}"
        return f"tighter than {below[0]}" if below else "-"

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": getattr(self.device, "name", str(self.device)),
            "budget": self.budget,
            "lambda": self.lam,
            "metric": self.metric,
            "scale": list(self.scale),
            "total_budget_seconds": self.total_budget_seconds,
            "planned_seconds": self.planned_seconds,
            "planned_load_seconds": self.planned_load_seconds,
            "mean_predicted_quality": self.mean_predicted_quality,
            "best_single": {
                "generator": self.best_single,
                "seconds": self.best_single_seconds,
                "mean_predicted_quality": self.best_single_quality,
            },
            "shares": self.shares(),
            "statuses": self.statuses,
            "costs": {name: c.to_dict() for name, c in self.costs.items()},
            "prompts": [r.to_dict() for r in self.routes],
        }


@dataclass(frozen=True, eq=False)
class ScoreMatrix:
    """What the rule sees for one run, per prompt and generator (columns in catalog order)."""

    names: tuple[str, ...]
    models: tuple[str, ...]
    q: np.ndarray  # (n, g) predicted quality in metric units; NaN where the router gives none
    s: np.ndarray  # (n, g) its uncertainty
    qn: np.ndarray  # (n, g) q normalised by catimg.routing.rule
    seconds: np.ndarray  # (g,) seconds per image on this device
    tflops: np.ndarray  # (g,)
    load: np.ndarray  # (g,) seconds to load each generator's pipeline
    cn: np.ndarray  # (g,) seconds normalised by catimg.routing.rule (over the generators the router knows)
    allowed: np.ndarray  # (g,) bool: routable in this run
    emb: np.ndarray | None  # (n, d) prompt embeddings; None when the router is not used
    sources: tuple[
        str, ...
    ] = ()  # (g,) where each cost comes from (catimg.costs.model.COST_SOURCES), for messages


@dataclass(frozen=True, eq=False)
class Solution:
    """One generator (column) per prompt, and the λ that chose them (None when a generator is forced)."""

    lam: float | None
    choice: np.ndarray  # (n,) int

    @property
    def forced(self) -> bool:
        return self.lam is None


@dataclass(frozen=True)
class Explanation:
    """Why a prompt's choice won: the runner-up and its margin, and where on λ the choice would change."""

    runner_up: str | None = None
    margin: float | None = None
    switch_down: tuple[str, float] | None = None
    switch_up: tuple[str, float] | None = None


def route_prompts(
    prompts: list[str],
    catalog: Catalog,
    router: Router,
    device: DeviceInfo,
    budget: Budget | None = None,
    total_budget: float | None = None,
    forced: str | None = None,
    encoder: Any = None,
    neighbours: int = 0,
    costs: dict[str, Cost] | None = None,
    run_as: Callable[[Generator], Generator] | None = None,
    batch: int = 1,
    explain: bool = False,
    router_texts: list[str] | None = None,
) -> RoutingResult:
    """Predict, cost and route every prompt. Never loads generator weights.

    statuses -> score matrix -> solve -> routes (with the explanation only when ``explain``) -> summary.
    ``run_as`` maps a catalog generator to the settings the run will use (``gen --width/--height/--dtype``)
    and ``batch`` is the images per pipeline call: costs (and so routing, plans and summaries) follow them,
    while the router still recognises each generator by its catalog settings. ``explain`` adds each prompt's
    runner-up, margin and switch points; ``neighbours`` the most similar training prompts. ``router_texts``:
    the prompts as the generators see them (cut to their text encoder, :func:`catimg.prompts.fit_prompts`),
    for the router only.
    """
    from catimg.routing.encoder import default_encoder

    _check_prompts(prompts)
    budget = budget or Budget(level="medium")
    forced_gen = catalog.get(forced) if forced else None
    enc = encoder or default_encoder()
    use_router = _router_usable(router, catalog, enc.encoder_id, forced_gen)
    if costs is None:
        costs = _costs(catalog.generators, device, router, use_router, forced_gen, run_as, batch)
    statuses = generator_statuses(catalog.generators, costs, router, use_router)
    _require_routable(catalog, statuses, forced_gen)
    scores = score_matrix(
        router_texts or prompts, catalog.generators, router, costs, statuses, enc if use_router else None
    )
    sol = solve(scores, router, budget, total_budget, forced_gen)
    if forced_gen is not None:
        statuses[forced_gen.name] = FORCED
    routes = _routes(prompts, catalog, scores, sol, statuses, costs, router, neighbours, explain)
    return _summary(
        routes,
        catalog,
        scores,
        sol,
        costs,
        device,
        statuses,
        router,
        budget=budget,
        total_budget=total_budget,
        forced=forced if forced_gen is not None else None,
    )


def _routes(
    prompts: list[str],
    catalog: Catalog,
    scores: ScoreMatrix,
    sol: Solution,
    statuses: dict[str, Status],
    costs: dict[str, Cost],
    router: Router,
    neighbours: int,
    explain: bool,
) -> list[PromptRoute]:
    """One :class:`PromptRoute` per prompt: its choice, its table rows and, when asked, the explanation and
    the most similar training prompts."""
    emb = scores.emb if neighbours else None
    nb = router.neighbours(emb, k=neighbours) if emb is not None else [[] for _ in prompts]
    nbs = (
        router.neighbours_by_set(emb, k=neighbours)
        if emb is not None and router.sets
        else [{} for _ in prompts]
    )
    routes = []
    for i, p in enumerate(prompts):
        why = explain_choice(i, scores, sol) if explain and not sol.forced else Explanation()
        routes.append(
            PromptRoute(
                index=i,
                prompt=p,
                choice=scores.names[int(sol.choice[i])],
                lam=0.0 if sol.lam is None else sol.lam,
                rows=_rows(i, catalog.generators, scores, sol, statuses, costs),
                runner_up=why.runner_up,
                margin=why.margin,
                switch_down=why.switch_down,
                switch_up=why.switch_up,
                neighbours=list(nb[i]),
                neighbours_by_set=nbs[i],
            )
        )
    return routes


def _check_prompts(prompts: list[str]) -> None:
    if not prompts:
        raise InputError("no prompts given; pass a prompt or -f FILE")
    for i, p in enumerate(prompts):
        if not p.strip():
            raise InputError(f"prompt {i + 1} is empty; give some text to generate from")


def _router_usable(router: Router, catalog: Catalog, encoder_id: str, forced_gen: Generator | None) -> bool:
    """Whether the router can predict for this catalog; RouterError when it cannot and nothing is forced.

    Forcing a generator skips routing: it needs the catalog entry (and, to generate, the weights), not a
    router that knows the catalog; the router's predictions are still shown when it can give them.
    """
    try:
        router.check(catalog, encoder_id)
    except RouterError:
        if forced_gen is None:
            raise
        return False
    return True


def _costs(
    gens: tuple[Generator, ...],
    device: DeviceInfo,
    router: Router,
    use_router: bool,
    forced_gen: Generator | None,
    run_as: Callable[[Generator], Generator] | None,
    batch: int,
) -> dict[str, Cost]:
    """Every generator's cost on this device: one that will not be routed to may lack a cost; one that can be
    chosen may not."""
    from catimg.costs.model import routing_costs

    knowable = {g.name for g in gens if g.enabled and router.knows(g)}
    # the one cost rule (catimg.costs.model): explicit > measured here > the router's trained-with seconds >
    # estimate
    return routing_costs(
        gens,
        device,
        router=router if use_router else None,
        run_as=run_as,
        unknown_ok=lambda g: forced_gen is not None or g.name not in knowable,
        batch=batch,
    )


def generator_statuses(
    gens: tuple[Generator, ...], costs: dict[str, Cost], router: Router, use_router: bool
) -> dict[str, Status]:
    """Each generator's status before routing: disabled, needs calibration, does not fit, or routable."""
    statuses: dict[str, Status] = {}
    for g in gens:
        if not g.enabled:
            statuses[g.name] = DISABLED
        elif not (use_router and router.knows(g)):
            statuses[g.name] = NEEDS_CALIBRATION
        elif not costs[g.name].feasible:
            statuses[g.name] = INFEASIBLE
        else:
            statuses[g.name] = ROUTABLE
    return statuses


def _require_routable(catalog: Catalog, statuses: dict[str, Status], forced_gen: Generator | None) -> None:
    if forced_gen is None and ROUTABLE not in statuses.values():
        why = "; ".join(f"{n}: {s}" for n, s in statuses.items())
        raise InputError(
            f"{catalog.path}: no generator can be routed ({why}); calibrate one, enable one, or force "
            "one with --generator"
        )


def score_matrix(
    prompts: list[str],
    gens: tuple[Generator, ...],
    router: Router,
    costs: dict[str, Cost],
    statuses: dict[str, Status],
    encoder: Any,
) -> ScoreMatrix:
    """Predicted quality (when ``encoder`` is given) and costs of every generator, normalised by the rule.

    The cost scale is the largest cost among the generators the router knows, routable in this run or not (the
    generators its λ levels were calibrated on; see :mod:`catimg.routing.rule`).
    """
    names = tuple(g.name for g in gens)
    q = np.full((len(prompts), len(gens)), np.nan)
    s = np.full_like(q, np.nan)
    emb = None
    if encoder is not None:
        emb = encoder.encode(prompts)
        mean_r, std_r = router.predict(emb, prompts)
        col = {name: i for i, name in enumerate(router.generators)}
        for j, gen in enumerate(gens):
            if router.knows(gen) and gen.name in col:
                q[:, j] = mean_r[:, col[gen.name]]
                s[:, j] = std_r[:, col[gen.name]]
    seconds = np.array([costs[nm].seconds for nm in names], dtype=float)
    known = np.array([encoder is not None and router.knows(g) for g in gens], dtype=bool)
    qn, cn = normalise(q, seconds, router.scale, reference=known)
    return ScoreMatrix(
        names=names,
        models=tuple(g.model for g in gens),
        q=q,
        s=s,
        qn=qn,
        seconds=seconds,
        tflops=np.array([costs[nm].tflops for nm in names], dtype=float),
        load=np.array([costs[nm].load_seconds for nm in names], dtype=float),
        cn=cn,
        allowed=np.array([statuses[nm] == ROUTABLE for nm in names], dtype=bool),
        emb=emb,
        sources=tuple(costs[nm].source for nm in names),
    )


def _labels(sc: ScoreMatrix) -> tuple[str, ...]:
    """Each generator with where its cost comes from ("sdxl-turbo (estimated)"), for budget messages."""
    return (
        tuple(f"{n} ({src})" for n, src in zip(sc.names, sc.sources, strict=True)) if sc.sources else sc.names
    )


def solve(
    scores: ScoreMatrix,
    router: Router,
    budget: Budget,
    total_budget: float | None,
    forced_gen: Generator | None,
) -> Solution:
    """One generator per prompt: the forced one, a total or per-image budget in seconds, or a named level."""
    sc, n = scores, len(scores.q)
    if forced_gen is not None:
        return Solution(None, np.full(n, sc.names.index(forced_gen.name)))
    # λ of a seconds budget is on the cost scale of the levels' (sc.cn), so that it can be compared with them
    if total_budget is not None:
        lam, choice = solve_total(
            sc.qn,
            sc.seconds,
            total_budget,
            sc.allowed,
            sc.load,
            list(sc.models),
            cn=sc.cn,
            labels=_labels(sc),
        )
    elif budget.seconds is not None:
        lam, choice = solve_total(
            sc.qn, sc.seconds, budget.seconds * n, sc.allowed, option="--budget", cn=sc.cn, labels=_labels(sc)
        )
    else:
        assert budget.level is not None
        lam = float(router.levels[budget.level])
        choice = choose(sc.qn, sc.cn, lam, sc.allowed)
    return Solution(lam, choice)


def _rows(
    i: int,
    gens: tuple[Generator, ...],
    scores: ScoreMatrix,
    sol: Solution,
    statuses: dict[str, Status],
    costs: dict[str, Cost],
) -> list[GeneratorRow]:
    """Prompt ``i``'s row of every generator: prediction, cost, value at the run's λ and status."""
    sc, cj = scores, int(sol.choice[i])
    value = values(sc.qn[i : i + 1], sc.cn, 0.0 if sol.lam is None else sol.lam)[0]
    rows = []
    for j, gen in enumerate(gens):
        known = not np.isnan(sc.q[i, j])
        status = statuses[gen.name] if j != cj else FORCED if sol.forced else CHOSEN
        rows.append(
            GeneratorRow(
                name=gen.name,
                predicted_quality=float(sc.q[i, j]) if known else None,
                uncertainty=float(sc.s[i, j]) if known else None,
                cost_seconds=float(sc.seconds[j]),
                cost_tflops=float(sc.tflops[j]),
                cost_kind=costs[gen.name].kind,
                value=float(value[j]) if known else None,
                status=status,
            )
        )
    return rows


def explain_choice(i: int, scores: ScoreMatrix, sol: Solution) -> Explanation:
    """Prompt ``i``'s runner-up (by the rule's order) with its margin in value, and its switch points on λ."""
    sc, cj = scores, int(sol.choice[i])
    lam = 0.0 if sol.lam is None else sol.lam
    k = runner_up(sc.qn[i], sc.cn, lam, cj, sc.allowed)
    value = values(sc.qn[i : i + 1], sc.cn, lam)[0]
    sw = switch_points(sc.qn[i], sc.cn, cj, sc.allowed)
    return Explanation(
        runner_up=None if k is None else sc.names[k],
        margin=None if k is None else float(value[cj] - value[k]),
        switch_down=None if sw.down is None else (sc.names[sw.down.column], sw.down.lam),
        switch_up=None if sw.up is None else (sc.names[sw.up.column], sw.up.lam),
    )


def _summary(
    routes: list[PromptRoute],
    catalog: Catalog,
    scores: ScoreMatrix,
    sol: Solution,
    costs: dict[str, Cost],
    device: DeviceInfo,
    statuses: dict[str, Status],
    router: Router,
    *,
    budget: Budget,
    total_budget: float | None,
    forced: str | None,
) -> RoutingResult:
    """The run's totals: planned seconds (one load per model used), mean predicted quality, best single
    generator."""
    sc, choice, n = scores, sol.choice, len(routes)
    chosen_q = sc.q[np.arange(n), choice]
    best_single = best_secs = best_q = None
    if sc.allowed.any():
        means = np.where(sc.allowed, np.nanmean(np.where(np.isnan(sc.q), -np.inf, sc.q), axis=0), -np.inf)
        b = int(np.argmax(means))
        best_single, best_secs, best_q = (
            sc.names[b],
            float(sc.seconds[b] * n + sc.load[b]),
            float(np.mean(sc.q[:, b])),
        )
    lo, hi = router.scale
    return RoutingResult(
        routes=routes,
        generators=catalog.generators,
        costs=costs,
        device=device,
        budget=(
            f"--generator {forced}"
            if forced is not None
            else f"{format_duration(total_budget)} total"
            if total_budget is not None
            else budget.describe()
        ),
        lam=sol.lam,
        total_budget_seconds=total_budget
        if total_budget is not None
        else (budget.seconds * n if budget.seconds else None),
        planned_seconds=float(sc.seconds[choice].sum()),
        planned_load_seconds=load_seconds(choice, sc.load, sc.models),
        best_single=best_single,
        best_single_seconds=best_secs,
        best_single_quality=best_q,
        mean_predicted_quality=float(np.nanmean(chosen_q)) if not np.all(np.isnan(chosen_q)) else None,
        statuses=statuses,
        metric=router.metric,
        scale=(float(lo), float(hi)),
        levels=dict(router.levels),
    )
