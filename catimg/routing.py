"""From prompts to one generator per prompt: predictions, costs and budget in, a routing decision (+ why) out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from catimg.budget import Budget, solve_total
from catimg.config import Catalog, Generator
from catimg.cost import COST_SOURCES
from catimg.durations import format_duration
from catimg.errors import InputError, RouterError
from catimg.rule import choose

if TYPE_CHECKING:
    from catimg.cost import Cost
    from catimg.device import DeviceInfo
    from catimg.router import Router

# statuses of a generator for one run
CHOSEN = "chosen"
ROUTABLE = "routable"
NEEDS_CALIBRATION = "needs calibration"
DISABLED = "disabled"
INFEASIBLE = "does not fit"
FORCED = "forced"


@dataclass(frozen=True)
class GeneratorRow:
    name: str
    predicted_quality: float | None
    uncertainty: float | None
    cost_seconds: float
    cost_tflops: float
    cost_kind: str
    value: float | None
    status: str

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
            "switch_down": {"generator": self.switch_down[0], "lambda": self.switch_down[1]} if self.switch_down else None,
            "switch_up": {"generator": self.switch_up[0], "lambda": self.switch_up[1]} if self.switch_up else None,
            "neighbours": [{"prompt": p, "similarity": s} for p, s in self.neighbours],
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
    statuses: dict[str, str]
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
) -> RoutingResult:
    """Predict, cost and route every prompt. Never loads generator weights.

    ``run_as`` maps a catalog generator to the settings the run will use (``gen --width/--height/--dtype``) and
    ``batch`` is the images per pipeline call: costs (and so routing, plans and summaries) follow them, while the
    router still recognises each generator by its catalog settings.
    """
    from catimg.cost import routing_costs
    from catimg.encoder import default_encoder

    if not prompts:
        raise InputError("no prompts given; pass a prompt or -f FILE")
    for i, p in enumerate(prompts):
        if not p.strip():
            raise InputError(f"prompt {i + 1} is empty; give some text to generate from")
    budget = budget or Budget(level="medium")
    gens = catalog.generators
    names = [g.name for g in gens]
    forced_gen = catalog.get(forced) if forced else None
    # forcing a generator skips routing: it needs the catalog entry (and, to generate, the weights), not a router
    # that knows the catalog; the router's predictions are still shown when it can give them
    use_router = True
    try:
        router.check(catalog, (encoder or default_encoder()).encoder_id)
    except RouterError:
        if forced_gen is None:
            raise
        use_router = False
    if costs is None:
        # a generator that will not be routed to may lack a cost; one that can be chosen may not
        knowable = {g.name for g in gens if g.enabled and router.knows(g)}
        # the one cost rule (catimg.cost): explicit > measured here > the router's trained-with seconds > estimate
        costs = routing_costs(gens, device, router=router if use_router else None, run_as=run_as,
                              unknown_ok=lambda g: forced_gen is not None or g.name not in knowable, batch=batch)

    statuses: dict[str, str] = {}
    for g in gens:
        c = costs[g.name]
        if not g.enabled:
            statuses[g.name] = DISABLED
        elif not (use_router and router.knows(g)):
            statuses[g.name] = NEEDS_CALIBRATION
        elif not c.feasible:
            statuses[g.name] = INFEASIBLE
        else:
            statuses[g.name] = ROUTABLE
    allowed = np.array([statuses[n] == ROUTABLE for n in names])
    if forced_gen is None and not allowed.any():
        why = "; ".join(f"{n}: {s}" for n, s in statuses.items())
        raise InputError(
            f"{catalog.path}: no generator can be routed ({why}); calibrate one, enable one, or force one with --generator"
        )

    n, n_gens = len(prompts), len(gens)
    q = np.full((n, n_gens), np.nan)
    s = np.full((n, n_gens), np.nan)
    emb = None
    if use_router:
        emb = (encoder or default_encoder()).encode(prompts)
        mean_r, std_r = router.predict(emb)
        col = {name: i for i, name in enumerate(router.generators)}
        for j, gen in enumerate(gens):
            if router.knows(gen) and gen.name in col:
                q[:, j] = mean_r[:, col[gen.name]]
                s[:, j] = std_r[:, col[gen.name]]
    lo, hi = router.scale
    qn = (q - lo) / (hi - lo)
    cost_s = np.array([costs[nm].seconds for nm in names], dtype=float)
    tflops = np.array([costs[nm].tflops for nm in names], dtype=float)
    load_s = np.array([costs[nm].load_seconds for nm in names], dtype=float)
    models = [gg.model for gg in gens]
    known_costs = cost_s[allowed] if allowed.any() else cost_s
    known_costs = known_costs[np.isfinite(known_costs)]
    cmax = float(known_costs.max()) if known_costs.size and known_costs.max() > 0 else 1.0
    cn = cost_s / cmax

    lam: float | None
    if forced_gen is not None:
        lam = None
        choice = np.full(n, names.index(forced_gen.name))
        statuses[forced_gen.name] = FORCED
    elif total_budget is not None:
        lam, choice = solve_total(qn, cost_s, total_budget, allowed, load_s, models, reference=allowed,
                                  labels=names)
    elif budget.seconds is not None:
        lam, choice = solve_total(qn, cost_s, budget.seconds * n, allowed, None, None, option="--budget",
                                  reference=allowed, labels=names)
    else:
        assert budget.level is not None
        lam = float(router.levels[budget.level])
        choice = choose(qn, cn, lam, allowed)

    nb = router.neighbours(emb, k=neighbours) if neighbours and emb is not None else [[] for _ in prompts]
    routes = []
    lam_v = 0.0 if lam is None else lam
    value = qn - lam_v * cn[None, :]
    for i, p in enumerate(prompts):
        cj = int(choice[i])
        rows = []
        for j, gen in enumerate(gens):
            st = statuses[gen.name]
            if j == cj:
                st = FORCED if forced_gen is not None else CHOSEN
            known = not np.isnan(q[i, j])
            rows.append(
                GeneratorRow(
                    name=gen.name,
                    predicted_quality=float(q[i, j]) if known else None,
                    uncertainty=float(s[i, j]) if known else None,
                    cost_seconds=float(cost_s[j]),
                    cost_tflops=float(tflops[j]),
                    cost_kind=costs[gen.name].kind,
                    value=float(value[i, j]) if known else None,
                    status=st,
                )
            )
        runner_up = margin = None
        switch_down = switch_up = None
        if forced_gen is None:
            others = [int(j) for j in np.flatnonzero(allowed) if j != cj]
            if others:
                k = max(others, key=lambda j: (value[i, j], -cost_s[j], -j))
                runner_up, margin = names[k], float(value[i, cj] - value[i, k])
            # λ at which another generator overtakes the choice
            downs, ups = [], []
            for j in others:
                dq, dc = qn[i, j] - qn[i, cj], cn[j] - cn[cj]
                if dc < 0 and dq < 0:  # cheaper and worse: wins when λ rises above dq/dc
                    downs.append((names[j], float(dq / dc)))
                elif dc > 0 and dq > 0:  # dearer and better: wins when λ falls below dq/dc
                    ups.append((names[j], float(dq / dc)))
            if downs:
                switch_down = min(downs, key=lambda t: t[1])
            if ups:
                switch_up = max(ups, key=lambda t: t[1])
        routes.append(
            PromptRoute(
                index=i, prompt=p, choice=names[cj], lam=lam_v, rows=rows, runner_up=runner_up, margin=margin,
                switch_down=switch_down, switch_up=switch_up, neighbours=list(nb[i]),
            )
        )

    used_models = {models[int(j)]: float(load_s[int(j)]) for j in np.unique(choice)}
    planned = float(cost_s[choice].sum())
    chosen_q = q[np.arange(n), choice]
    mean_q = float(np.nanmean(chosen_q)) if not np.all(np.isnan(chosen_q)) else None
    best_single = best_secs = best_q = None
    if allowed.any():
        means = np.where(allowed, np.nanmean(np.where(np.isnan(q), -np.inf, q), axis=0), -np.inf)
        b = int(np.argmax(means))
        best_single, best_secs, best_q = names[b], float(cost_s[b] * n + load_s[b]), float(np.mean(q[:, b]))
    return RoutingResult(
        routes=routes,
        generators=gens,
        costs=costs,
        device=device,
        budget=(f"--generator {forced}" if forced_gen is not None else
                f"{format_duration(total_budget)} total" if total_budget is not None else budget.describe()),
        lam=lam,
        total_budget_seconds=total_budget if total_budget is not None else (budget.seconds * n if budget.seconds else None),
        planned_seconds=planned,
        planned_load_seconds=float(sum(used_models.values())),
        best_single=best_single,
        best_single_seconds=best_secs,
        best_single_quality=best_q,
        mean_predicted_quality=mean_q,
        statuses=statuses,
        metric=router.metric,
        scale=(float(lo), float(hi)),
        levels=dict(router.levels),
    )
