"""The calibration campaign: measure the user's own generators on a prompt set and store the results.

For each prompt x generator x seed the campaign generates an image (through :mod:`catimg.generate`, so each
pipeline loads once and step variants share it), scores it with a :class:`~catimg.scorer.Scorer`, and records
the image, its measured seconds and its score in the :class:`~catimg.store.Store` in one transaction.

Incremental and resumable: work already in the store for a generator's *settings hash*, prompt, seed and metric
is skipped, so a re-run after Ctrl-C continues where it stopped, a generator added to ``models.toml`` is the
only one measured, and a changed generator (steps, scheduler, size, source …) is measured anew while its old
measurements stay. Nothing here prints: progress goes to ``on_event(kind, data)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catimg.errors import CatimgError, InputError, did_you_mean

if TYPE_CHECKING:
    from catimg.config import Catalog, Generator
    from catimg.device import DeviceInfo
    from catimg.scorer import Scorer
    from catimg.store import Store

Event = Callable[[str, dict[str, Any]], None]
DEFAULT_SET = "parti-geneval-200"


@dataclass(frozen=True)
class Job:
    """One image to make and score."""

    index: int  # prompt index in the campaign's prompt list
    prompt: str
    generator: Generator
    seed: int


@dataclass
class GeneratorPlan:
    name: str
    hash: str
    todo: int
    done: int
    seconds_per_image: float | None  # measured median on this device when known, else the cost model
    seconds_kind: str  # measured-here | explicit | measured | estimated | unknown
    load_seconds: float

    @property
    def estimated_seconds(self) -> float | None:
        if self.seconds_per_image is None:
            return None
        return self.todo * self.seconds_per_image + (self.load_seconds if self.todo else 0.0)


@dataclass
class CampaignPlan:
    prompts: list[str]
    generators: list[Generator]
    seeds: list[int]
    metric: str
    jobs: list[Job]
    per_generator: list[GeneratorPlan]
    notes: list[str] = field(default_factory=list)
    skipped_generators: dict[str, str] = field(default_factory=dict)  # name -> why not measured

    @property
    def images(self) -> int:
        return len(self.jobs)

    @property
    def done(self) -> int:
        return sum(g.done for g in self.per_generator)

    @property
    def estimated_seconds(self) -> float | None:
        vals = [g.estimated_seconds for g in self.per_generator if g.todo]
        if any(v is None for v in vals):
            return None
        return float(sum(v for v in vals if v is not None))

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "prompts": len(self.prompts),
            "seeds": self.seeds,
            "images": self.images,
            "already_measured": self.done,
            "estimated_seconds": self.estimated_seconds,
            "generators": [
                {"name": g.name, "hash": g.hash, "images": g.todo, "already_measured": g.done,
                 "seconds_per_image": g.seconds_per_image, "seconds_kind": g.seconds_kind,
                 "estimated_seconds": g.estimated_seconds}
                for g in self.per_generator
            ],
            "not_measured": self.skipped_generators,
            "notes": self.notes,
        }


@dataclass
class CampaignResult:
    plan: CampaignPlan
    recorded: int = 0
    failed: list[tuple[str, str, int, str]] = field(default_factory=list)  # (generator, prompt, seed, error)
    interrupted: bool = False
    wall_seconds: float = 0.0
    seconds_by_generator: dict[str, float] = field(default_factory=dict)
    images_by_generator: dict[str, int] = field(default_factory=dict)
    loads: list[str] = field(default_factory=list)


def select_prompts(prompts: Sequence[str], limit: int | None, origin: str) -> tuple[list[str], list[str]]:
    """Deduplicate (keeping order) and apply ``limit``; returns (prompts, notes)."""
    notes: list[str] = []
    uniq = list(dict.fromkeys(prompts))
    if len(uniq) < len(prompts):
        notes.append(f"{origin}: {len(prompts) - len(uniq)} repeated prompt(s) measured once")
    if limit is not None:
        if limit < 1:
            raise InputError(f"--limit {limit}: must be 1 or more")
        if len(uniq) < limit:
            notes.append(f"{origin} has {len(uniq)} prompts, fewer than --limit {limit}; measuring all {len(uniq)}")
        uniq = uniq[:limit]
    return uniq, notes


def select_generators(catalog: Catalog, names: Sequence[str] | None) -> list[Generator]:
    """The generators to measure: the named ones (any, enabled or not), else every enabled one."""
    if not names:
        return list(catalog.enabled)
    out = []
    for n in names:
        n = n.strip()
        if not n:
            continue
        if n not in catalog:
            raise InputError(
                f'--generators: no generator "{n}" in {catalog.path}{did_you_mean(n, catalog.names)}; '
                f"known: {', '.join(catalog.names)}"
            )
        g = catalog.get(n)
        if g not in out:
            out.append(g)
    if not out:
        raise InputError("--generators: empty list; name one or more generators from models.toml, comma-separated")
    return out


def plan_campaign(
    prompts: Sequence[str],
    generators: Sequence[Generator],
    store: Store,
    metric: str,
    seeds: int = 1,
    device: DeviceInfo | None = None,
    check_weights: bool = True,
    explicit_generators: bool = False,
    notes: Sequence[str] = (),
) -> CampaignPlan:
    """Work out what is left to do: jobs not yet in the store, and how long they should take.

    Generators whose weights are not available locally are left out with a note (an error when the user named
    them with ``--generators``).
    """
    if seeds < 1:
        raise InputError(f"--seeds {seeds}: must be 1 or more")
    plist = list(prompts)
    seed_list = list(range(seeds))
    gens: list[Generator] = []
    skipped: dict[str, str] = {}
    for g in generators:
        if check_weights:
            from catimg.pipelines import check_weights as _check

            try:
                _check(g, False)
            except CatimgError as exc:
                if explicit_generators:
                    raise
                skipped[g.name] = exc.message
                continue
        gens.append(g)
    if not gens:
        first, why = next(iter(skipped.items()))
        more = f" (and {len(skipped) - 1} more: {', '.join(list(skipped)[1:])})" if len(skipped) > 1 else ""
        raise InputError(f"no generator to measure: {why}{more}; fetch the weights or choose others with --generators")
    hashes = {g.name: store.register_generator(g) for g in gens}
    done = store.done(metric, hashes.values())
    jobs: list[Job] = []
    per: list[GeneratorPlan] = []
    costs = _costs(gens, device, store)
    loaded_models: set[str] = set()
    for g in gens:
        h = hashes[g.name]
        todo = [Job(i, p, g, s) for i, p in enumerate(plist) for s in seed_list if (h, p, s) not in done]
        sec, kind, load = costs[g.name]
        first_of_model = g.model not in loaded_models and bool(todo)
        if todo:
            loaded_models.add(g.model)
        per.append(GeneratorPlan(g.name, h, len(todo), len(plist) * len(seed_list) - len(todo), sec, kind,
                                 load if first_of_model else 0.0))
        jobs.extend(todo)
    return CampaignPlan(plist, gens, seed_list, metric, jobs, per, list(notes), skipped)


def _costs(gens: Sequence[Generator], device: DeviceInfo | None, store: Store) -> dict[str, tuple[float | None, str, float]]:
    out: dict[str, tuple[float | None, str, float]] = {}
    dclass = None
    if device is not None:
        from catimg.device import device_class

        dclass = device_class(device)
    for g in gens:
        sec: float | None = None
        kind, load = "unknown", 0.0
        if device is not None:
            try:
                from catimg.cost import generator_cost

                c = generator_cost(g, device)
                sec, kind, load = c.seconds, c.kind, c.load_seconds
            except CatimgError:
                pass
        here = store.measured_seconds(g, dclass)
        if here is not None and g.cost_seconds is None:
            sec, kind = here, "measured-here"
        out[g.name] = (sec, kind, load)
    return out


def run_campaign(
    plan: CampaignPlan,
    store: Store,
    scorer: Scorer,
    device: DeviceInfo,
    out_dir: str | Path,
    on_event: Event | None = None,
    dtype: str | None = None,
    allow_download: bool = False,
    batch_size: int | None = None,
    loader: Any = None,
    engine: Any = None,
) -> CampaignResult:
    """Generate, score and record every job of ``plan``. Ctrl-C stops after the image in flight.

    ``engine``: a function with :func:`catimg.generate.run_plan`'s signature that makes the images (default: the
    local engine; e.g. ``functools.partial(catimg.engine_ray.run_plan_ray, address=...)``). Scoring and the store
    stay in this process either way.
    """
    from catimg.device import device_class
    from catimg.generate import PlanItem, RunOptions, run_plan

    emit = on_event or (lambda kind, data: None)
    res = CampaignResult(plan=plan)
    hashes = {g.name: g.hash for g in plan.per_generator}
    dclass = device_class(device)
    items = [PlanItem(index=j.index, prompt=j.prompt, generator=j.generator, seed=j.seed, image=j.seed,
                      negative=j.generator.negative_prompt) for j in plan.jobs]
    if not items:
        return res
    t0 = time.perf_counter()

    def on_gen_event(kind: str, data: dict[str, Any]) -> None:
        if kind == "image":
            rec = data["record"]
            it = rec.item
            if rec.status == "failed" or rec.file is None:
                res.failed.append((it.generator.name, it.prompt, it.seed, rec.error or "failed"))
                emit("failed", {"generator": it.generator.name, "prompt": it.prompt, "seed": it.seed, "error": rec.error})
                return
            from PIL import Image

            with Image.open(rec.file) as im:
                im.load()
                value = scorer.score([im], [it.prompt])[0]
            store.record(it.prompt, hashes[it.generator.name], it.seed, {plan.metric: value}, seconds=rec.seconds,
                         path=rec.file, device=dclass, source="calibrate", scorer=scorer.model_id)
            res.recorded += 1
            name = it.generator.name
            res.seconds_by_generator[name] = res.seconds_by_generator.get(name, 0.0) + rec.seconds
            res.images_by_generator[name] = res.images_by_generator.get(name, 0) + 1
            emit("recorded", {"generator": name, "prompt": it.prompt, "seed": it.seed, "score": value,
                              "seconds": rec.seconds, "file": rec.file})
        elif kind == "load":
            emit("load", data)
        elif kind == "step":
            emit("step", data)

    options = RunOptions(out_dir=Path(out_dir), device=device, dtype=dtype, allow_download=allow_download,
                         batch_size=batch_size, metadata=True, resume=False, budget="calibrate", loader=loader)
    try:
        run = (engine or run_plan)(items, options, on_gen_event)
        res.interrupted = run.interrupted
        res.loads = list(run.loads)
    except KeyboardInterrupt:
        res.interrupted = True
    res.wall_seconds = time.perf_counter() - t0
    return res
