"""The ``catimg gen`` use case: plan a run, make its images, account for what it spent.

The command line parses, calls these and renders; every policy of a run lives here, testable without a CLI:

* :class:`GenRequest`: what the user asked for (prompts, budgets, catalog and router paths, a forced
  generator, seed, images per prompt, size and dtype overrides, the output folder, ``--resume``, the engine).
* :func:`plan_run` -> :class:`RunPlan`: with ``--resume`` the folder repaired after a crash and the
  manifest's base seed reused (:func:`resume_state`); a run that could not make a single image stopped
  before torch is imported (:func:`check_weights_early`); the prompts routed as the generators' text encoders
  cut them; when a chosen generator's weights are missing, routed again among the generators whose weights
  are there (a reduced catalog, said in a note; :func:`route_available`); then one
  :class:`~catimg.generation.generate.PlanItem` per image. A dry run keeps the plan and carries the
  missing-weights error the real run would stop with (``RunPlan.stop``).
* :func:`make_images` -> :class:`GenResult`: the plan made through an
  :class:`~catimg.generation.execution.Engine` (:func:`engine_for` picks the local or the Ray one), the
  local engine's measured seconds fed to this device's cost cache, and the run's :class:`Spend` against its
  budget (:func:`spend`).

Nothing here prints. Two hooks let the caller show what happens while planning: ``embedding`` (a context
manager around the first routing, which embeds the prompts) and ``on_routed`` (called with the routing that
the plan follows, before the plan is built).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catimg.errors import InputError, WeightsMissingError

if TYPE_CHECKING:
    from catimg.config import Catalog, Generator
    from catimg.device import DeviceInfo
    from catimg.generation.events import OnEvent, OnImage
    from catimg.generation.execution import Engine, RunOptions, RunResult
    from catimg.generation.generate import PlanItem
    from catimg.routing.budget import Budget
    from catimg.routing.route import RoutingResult
    from catimg.routing.router import Router


@dataclass(frozen=True)
class EngineChoice:
    """``--engine`` and its Ray options (``--ray-address``, ``--workers``)."""

    name: str = "local"
    address: str | None = None
    workers: int | None = None


@dataclass(frozen=True)
class GenRequest:
    """What a ``catimg gen`` run was asked for, options parsed and checked."""

    texts: tuple[str, ...]
    out: Path
    budget: Budget | None = None  # per image; None: the default level
    total_budget: float | None = None  # seconds for the whole run
    models: Path | None = None  # the catalog (None: found as every command finds it)
    router: Path | None = None
    device: str | None = None
    forced: str | None = None  # --generator
    seed: int | None = None  # None: the manifest's with --resume, else random (and recorded)
    images_per_prompt: int = 1
    negative: str | None = None
    size: tuple[int | None, int | None] = (None, None)  # --width, --height overrides
    dtype: str | None = None
    batch_size: int | None = None
    allow_download: bool = False
    metadata: bool = True
    resume: bool = False
    dry_run: bool = False
    engine: EngineChoice = field(default_factory=EngineChoice)


@dataclass(frozen=True)
class RunPlan:
    """A planned run: the routing it follows and one item per image to make."""

    request: GenRequest
    catalog: Catalog
    router: Router
    device: DeviceInfo
    routing: RoutingResult
    items: tuple[PlanItem, ...]
    seed: int  # the base seed: given, the manifest's (--resume) or drawn
    notes: tuple[str, ...]  # what repairing the folder did, re-planning, prompts cut: one line each
    missing: tuple[str, ...] = ()  # generators left out of the routing because their weights are missing
    stop: WeightsMissingError | None = None  # a dry run: the error the real run stops with


@dataclass(frozen=True)
class GeneratorSpend:
    """Planned and actual seconds of one generator in a gen run (its model's load on its first generator)."""

    generator: str
    model: str
    images_planned: int
    images_made: int
    planned_seconds: float  # predicted seconds of the images planned for it
    actual_seconds: float  # measured seconds of the images it made (and tried)
    planned_load_seconds: float | None
    actual_load_seconds: float | None


@dataclass(frozen=True)
class Spend:
    """A gen run's spend against its budget: the plan's estimate (loading included) and the run's wall
    time."""

    budget_seconds: float | None  # --total-budget, or --budget SECONDS x prompts; None for a level
    planned_seconds: float
    actual_seconds: float  # wall time of the run
    images_seconds: float
    load_seconds: float
    planned_load_seconds: float
    interrupted: bool
    generators: tuple[GeneratorSpend, ...]

    @property
    def over_seconds(self) -> float | None:
        return None if self.budget_seconds is None else self.actual_seconds - self.budget_seconds

    @property
    def other_seconds(self) -> float:
        """Wall time spent neither making images nor loading models (never negative)."""
        return max(self.actual_seconds - self.images_seconds - self.load_seconds, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "over_seconds": self.over_seconds}


@dataclass(frozen=True)
class GenResult:
    """A made run: what the engine did and what it spent."""

    run: RunResult
    spend: Spend


# ---------------------------------------------------------------------------------------------- planning


def plan_run(
    request: GenRequest,
    *,
    embedding: Callable[[], AbstractContextManager[object]] = nullcontext,
    on_routed: Callable[[RoutingResult], None] | None = None,
) -> RunPlan:
    """Plan ``request``'s run (see the module docstring); reads OUT's manifest, writes to OUT only when
    repairing it (``--resume``)."""
    from catimg.config import load_catalog
    from catimg.device import detect_device
    from catimg.generation.generate import plan_from_routing, run_settings
    from catimg.routing.router import load_router

    req = request
    repaired, seed = resume_state(req.out, req.resume and not req.dry_run, req.seed)
    catalog = load_catalog(req.models)
    if not req.dry_run:  # weights first: a missing model stops the run within a second, before torch
        check_weights_early(catalog, req.forced, req.allow_download)
    rt, dev = load_router(req.router), detect_device(req.device)
    width, height = req.size
    # costs follow the settings the run will use: size, dtype, device and batch overrides
    run_as = partial(run_settings, width=width, height=height, dtype=req.dtype)
    route = partial(
        _route_prompts,
        list(req.texts),
        rt=rt,
        dev=dev,
        budget=req.budget,
        total=req.total_budget,
        run_as=run_as,
        batch=req.batch_size or 1,
    )
    result, notes, missing, stop = _route_run(req, catalog, route, embedding)
    if on_routed is not None:
        on_routed(result)
    items = plan_from_routing(
        result, seed=seed, images_per_prompt=req.images_per_prompt, negative=req.negative, size=req.size
    )
    return RunPlan(
        request=req,
        catalog=catalog,
        router=rt,
        device=dev,
        routing=result,
        items=tuple(items),
        seed=seed,
        notes=(*repaired, *notes),
        missing=missing,
        stop=stop,
    )


def resume_state(out: Path, resume: bool, seed: int | None) -> tuple[list[str], int]:
    """(what repairing OUT after a crash did, the base seed).

    With ``resume``: corrupt manifest lines are set aside (all at once), orphan PNGs adopted and stale .tmp
    files removed, and the manifest's seed is reused unless ``seed`` is given. A seed not found otherwise is
    random (and recorded in every image's manifest line)."""
    repaired: list[str] = []
    if resume:
        from catimg.generation.output import read_manifest, repair_out_dir

        repaired = repair_out_dir(out)
        records = read_manifest(out)
        if seed is None:
            seed = next((int(r["base_seed"]) for r in records if r.get("base_seed") is not None), None)
    if seed is None:
        import secrets

        seed = secrets.randbelow(2**31)
    return repaired, seed


def check_weights_early(catalog: Catalog, forced: str | None, allow_download: bool) -> None:
    """Raise one WeightsMissingError naming every missing model when nothing could be generated anyway.

    With a forced generator: that generator's model. Otherwise every enabled generator's: if none of them is
    on disk the run could not make a single image. (When only some are missing, routing re-plans among the
    others.) Reads the catalog and the disk only; no torch.
    """
    from catimg.pipelines import missing_weights

    gens = [catalog.get(forced)] if forced else list(catalog.enabled)
    if not gens:
        return
    err = missing_weights(gens, allow_download)
    if err is None:
        return
    if forced or all(missing_weights([g], allow_download) is not None for g in gens):
        raise err


#: ``route(catalog, forced=..., router_texts=...)``: the run's prompts routed with its router, device and
#: budget.
Route = Callable[..., "RoutingResult"]


def _route_prompts(
    texts: list[str],
    catalog: Catalog,
    *,
    rt: Router,
    dev: DeviceInfo,
    budget: Budget | None,
    total: float | None,
    run_as: Callable[[Generator], Generator],
    batch: int,
    forced: str | None = None,
    router_texts: list[str] | None = None,
) -> RoutingResult:
    from catimg.routing.route import route_prompts

    return route_prompts(
        texts,
        catalog,
        rt,
        dev,
        budget=budget,
        total_budget=total,
        forced=forced,
        run_as=run_as,
        batch=batch,
        router_texts=router_texts,
    )


def _route_run(
    req: GenRequest,
    catalog: Catalog,
    route: Route,
    embedding: Callable[[], AbstractContextManager[object]],
) -> tuple[RoutingResult, list[str], tuple[str, ...], WeightsMissingError | None]:
    """(routing, notes, generators left out for missing weights, the error a dry run shows after its plan).

    Long prompts are routed as the generator's text encoder cuts them, and said once (a note)."""
    from catimg.prompts import fit_for_run

    fit = fit_for_run(list(req.texts), catalog, req.forced)
    stop: WeightsMissingError | None = None
    missing: tuple[str, ...] = ()
    try:
        with embedding():  # a file of thousands of new prompts takes minutes to embed
            first = route(catalog, forced=req.forced, router_texts=fit.texts)
        result, notes, missing = route_available(
            first, catalog, route, req.forced, req.allow_download, fit.texts
        )
    except WeightsMissingError as exc:
        if not req.dry_run:
            raise
        # a dry run still shows the plan, then fails as the real run would (same message and exit code)
        stop = exc
        result = route(catalog, forced=req.forced, router_texts=fit.texts)
        notes = ["a real run stops before loading anything: the weights are missing (see the error below)"]
    return result, [*notes, *[n for n in [fit.note()] if n]], missing, stop


def route_available(
    result: RoutingResult,
    catalog: Catalog,
    route: Route,
    forced: str | None,
    allow_download: bool,
    router_texts: list[str] | None = None,
) -> tuple[RoutingResult, list[str], tuple[str, ...]]:
    """``result`` if every chosen generator's weights are there; else the prompts routed again among the
    generators whose weights are there, with a note saying so and the generators left out.

    Raises the missing-weights error when the forced generator's weights are missing, and one error naming
    every missing model when no generator is left (or the ones left cannot be routed to)."""
    from catimg.config import Catalog

    missing = _missing_weights(sorted({r.choice for r in result.routes}), catalog, allow_download)
    if not missing:
        return result, [], ()
    if forced is not None:
        raise next(iter(missing.values()))
    # every generator that could be routed to and whose weights are absent is taken out
    others = [g.name for g in catalog.enabled if g.name not in missing]
    missing.update(_missing_weights(others, catalog, allow_download))
    keep = tuple(replace(g, enabled=False) if g.name in missing else g for g in catalog.generators)
    every = _one_error(catalog, missing, allow_download)
    if not any(g.enabled for g in keep):
        raise every
    reduced = Catalog(path=catalog.path, origin=catalog.origin, generators=keep)
    try:
        again = route(reduced, router_texts=router_texts)
    except InputError:
        raise every from None
    note = (
        f"weights not found for {', '.join(sorted(missing))}; re-planned among the generators that are "
        f"available ({', '.join(sorted(g.name for g in keep if g.enabled))}). {every.message}"
    )
    return again, [note], tuple(sorted(missing))


def _missing_weights(
    names: Sequence[str], catalog: Catalog, allow_download: bool
) -> dict[str, WeightsMissingError]:
    """{name: its missing-weights error} for the generators ``names`` whose weights are not there."""
    from catimg.pipelines import check_weights

    missing: dict[str, WeightsMissingError] = {}
    for name in names:
        try:
            check_weights(catalog.get(name), allow_download)
        except WeightsMissingError as exc:
            missing[name] = exc
    return missing


def _one_error(
    catalog: Catalog, missing: dict[str, WeightsMissingError], allow_download: bool
) -> WeightsMissingError:
    """One message for every missing model (with sizes), not one per generator."""
    from catimg.pipelines import missing_weights

    gens = [g for g in catalog.generators if g.name in missing]
    return missing_weights(gens, allow_download) or next(iter(missing.values()))


# ---------------------------------------------------------------------------------------------- making


def run_options(plan: RunPlan) -> RunOptions:
    """The engine's options for ``plan``: the request's, with the routing's budget and the base seed."""
    from catimg.generation.execution import RunOptions

    req = plan.request
    return RunOptions(
        out_dir=req.out,
        device=plan.device,
        dtype=req.dtype,
        allow_download=req.allow_download,
        batch_size=req.batch_size,
        metadata=req.metadata,
        resume=req.resume,
        budget=plan.routing.budget,
        router_version=getattr(plan.router, "version", None),
        base_seed=plan.seed,
        images_per_prompt=req.images_per_prompt,
    )


def engine_for(plan: RunPlan) -> Engine:
    """The request's :class:`~catimg.generation.execution.Engine` (Ray: with each model's predicted load
    seconds, for its scheduler)."""
    choice = plan.request.engine
    if choice.name != "ray":
        from catimg.generation.generate import LocalEngine

        return LocalEngine()
    from catimg.generation.ray_engine import RayEngine

    result = plan.routing
    loads = {result.generator(n).model: c.load_seconds for n, c in result.costs.items()}
    return RayEngine(
        address=choice.address, workers=choice.workers, device=plan.request.device, load_seconds=loads
    )


def make_images(
    plan: RunPlan, engine: Engine, on_event: OnEvent | None = None, on_image: OnImage | None = None
) -> GenResult:
    """Make ``plan``'s images with ``engine`` (progress to ``on_event``, each recorded image to ``on_image``).

    With the local engine the measured seconds feed this device's cost cache (as ``catimg bench`` does), so
    that the next plan uses them. Ctrl-C: the engine stops after the image in flight and returns what it made
    (``run.interrupted``)."""
    res = engine.run(plan.items, run_options(plan), on_event, on_image)
    if plan.request.engine.name != "ray":
        from catimg.costs.bench import record_run

        record_run(
            [(r.generator, r.seconds) for r in res.made], res.load_seconds, plan.device, plan.request.dtype
        )
    return GenResult(run=res, spend=spend(plan.routing, res, plan.items))


def spend(result: RoutingResult, res: RunResult, plan: Sequence[PlanItem] | None = None) -> Spend:
    """The spend of ``res`` against ``result``'s budget and ``plan`` (None: the images the run tried)."""
    items = plan if plan is not None else [r.item for r in res.records]
    planned: dict[str, list[float]] = {}
    for it in items:
        planned.setdefault(it.generator.name, []).append(it.predicted_seconds or 0.0)
    made: dict[str, list[float]] = {}
    models: dict[str, str] = {it.generator.name: it.generator.model for it in items}
    for r in res.records:
        made.setdefault(r.generator.name, []).append(r.seconds)
        models.setdefault(r.generator.name, r.generator.model)
    seen: set[str] = set()
    gens = []
    for name in [*planned, *(n for n in made if n not in planned)]:
        model = models[name]
        first = model not in seen
        seen.add(model)
        cost = result.costs.get(name)
        gens.append(
            GeneratorSpend(
                generator=name,
                model=model,
                images_planned=len(planned.get(name, [])),
                images_made=sum(1 for r in res.made if r.generator.name == name),
                planned_seconds=sum(planned.get(name, [])),
                actual_seconds=sum(made.get(name, [])),
                planned_load_seconds=(cost.load_seconds if cost is not None else None) if first else None,
                actual_load_seconds=res.load_seconds.get(model) if first else None,
            )
        )
    planned_load = sum(g.planned_load_seconds or 0.0 for g in gens if g.images_planned)
    return Spend(
        budget_seconds=result.total_budget_seconds,
        planned_seconds=sum(g.planned_seconds for g in gens) + planned_load,
        actual_seconds=res.wall_seconds,
        images_seconds=sum(g.actual_seconds for g in gens),
        load_seconds=sum(res.load_seconds.values()),
        planned_load_seconds=planned_load,
        interrupted=res.interrupted,
        generators=tuple(gens),
    )
