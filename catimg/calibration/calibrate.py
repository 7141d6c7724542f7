"""The calibration campaign: measure the user's own generators on a prompt set and store the results.

For each prompt x generator x seed the campaign generates an image (through :mod:`catimg.generation.generate`,
so each pipeline loads once and step variants share it), scores it with a
:class:`~catimg.calibration.scorer.Scorer`, and records the image, its measured seconds and its score in the
:class:`~catimg.calibration.store.Store` in one transaction.

Incremental and resumable: work already in the store for a generator's *settings hash*, prompt, seed and
metric is skipped, so a re-run after Ctrl-C continues where it stopped, a generator added to ``models.toml``
is the only one measured, and a changed generator (steps, scheduler, size, source …) is measured anew while
its old measurements stay. Scoring and storing run in the engine's per-image ``on_image`` hook, not in the
progress callback. Nothing here prints: progress goes to ``on_event(event)`` (the typed events of
:mod:`catimg.generation.events`: the engine's :class:`~catimg.generation.events.ModelLoading` and
:class:`~catimg.generation.events.Step`, then one :class:`~catimg.generation.events.ImageScored` or
:class:`~catimg.generation.events.ImageFailed` per image).

Learning from use: :class:`RunScoring` does the same for the images of a ``catimg gen --score`` run. Its
:meth:`RunScoring.on_image` is the run's ``on_image`` hook: it scores each image made and records it (source
``gen``) through the same :func:`record_image` that the campaign uses, keyed by the settings hash of the
generator that made it; a scoring failure stops the scoring (never the run) and is kept in
:attr:`RunScoring.error`. :meth:`RunScoring.backlog` scores the images of an output folder's manifest that the
store does not have yet (``gen --resume --score``). :func:`store_card` counts the store rows a router is
trained on by source, for its data card.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catimg.errors import CatimgError, InputError, did_you_mean
from catimg.generation.events import Event, ImageFailed, ImageScored, ModelLoading, OnEvent, Step, no_events

if TYPE_CHECKING:
    from catimg.calibration.scorer import Scorer
    from catimg.calibration.store import Store
    from catimg.config import Catalog, Generator
    from catimg.device import DeviceInfo
    from catimg.generation.execution import Engine, ImageRecord

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
                {
                    "name": g.name,
                    "hash": g.hash,
                    "images": g.todo,
                    "already_measured": g.done,
                    "seconds_per_image": g.seconds_per_image,
                    "seconds_kind": g.seconds_kind,
                    "estimated_seconds": g.estimated_seconds,
                }
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
            notes.append(
                f"{origin} has {len(uniq)} prompts, fewer than --limit {limit}; measuring all {len(uniq)}"
            )
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
        raise InputError(
            "--generators: empty list; name one or more generators from models.toml, comma-separated"
        )
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
        raise InputError(
            f"no generator to measure: {why}{more}; fetch the weights or choose others with --generators"
        )
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
        per.append(
            GeneratorPlan(
                g.name,
                h,
                len(todo),
                len(plist) * len(seed_list) - len(todo),
                sec,
                kind,
                load if first_of_model else 0.0,
            )
        )
        jobs.extend(todo)
    return CampaignPlan(plist, gens, seed_list, metric, jobs, per, list(notes), skipped)


def _costs(
    gens: Sequence[Generator], device: DeviceInfo | None, store: Store
) -> dict[str, tuple[float | None, str, float]]:
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
                from catimg.costs.model import generator_cost

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
    on_event: OnEvent | None = None,
    dtype: str | None = None,
    allow_download: bool = False,
    batch_size: int | None = None,
    loader: Any = None,
    engine: Engine | None = None,
) -> CampaignResult:
    """Generate, score and record every job of ``plan``. Ctrl-C stops after the image in flight.

    ``engine``: the :class:`~catimg.generation.execution.Engine` that makes the images (default: the local
    engine, :class:`catimg.generation.generate.LocalEngine`; or a
    :class:`catimg.generation.ray_engine.RayEngine`). Scoring and the store stay in this process either way,
    in the engine's ``on_image`` hook.
    """
    from catimg.device import device_class
    from catimg.generation.generate import LocalEngine, PlanItem, RunOptions

    res = CampaignResult(plan=plan)
    items = [
        PlanItem(
            index=j.index,
            prompt=j.prompt,
            generator=j.generator,
            seed=j.seed,
            image=j.seed,
            negative=j.generator.negative_prompt,
        )
        for j in plan.jobs
    ]
    if not items:
        return res
    t0 = time.perf_counter()
    recording = _CampaignRecording(res, store, scorer, device_class(device), on_event or no_events)
    options = RunOptions(
        out_dir=Path(out_dir),
        device=device,
        dtype=dtype,
        allow_download=allow_download,
        batch_size=batch_size,
        metadata=True,
        resume=False,
        budget="calibrate",
        loader=loader,
    )
    try:
        run = (engine or LocalEngine()).run(items, options, recording.on_gen_event, recording.on_image)
        res.interrupted = run.interrupted
        res.loads = list(run.loads)
    except KeyboardInterrupt:
        res.interrupted = True
    res.wall_seconds = time.perf_counter() - t0
    return res


class _CampaignRecording:
    """A campaign's hooks into the engine: each image scored and recorded (``on_image``), the engine's loads
    and steps passed on as progress (``on_gen_event``), the counts kept in the :class:`CampaignResult`."""

    def __init__(
        self, res: CampaignResult, store: Store, scorer: Scorer, dclass: str | None, emit: OnEvent
    ) -> None:
        self.res, self.store, self.scorer, self.dclass, self.emit = res, store, scorer, dclass, emit
        self.hashes = {g.name: g.hash for g in res.plan.per_generator}

    def on_image(self, rec: ImageRecord) -> None:  # scoring and the store: the engine's per-image hook
        it, res = rec.item, self.res
        if rec.status == "failed" or rec.file is None:
            res.failed.append((it.generator.name, it.prompt, it.seed, rec.error or "failed"))
            self.emit(
                ImageFailed(generator=it.generator.name, prompt=it.prompt, seed=it.seed, error=rec.error)
            )
            return
        value = record_image(
            self.store,
            self.scorer,
            res.plan.metric,
            self.hashes[it.generator.name],
            it.prompt,
            it.seed,
            rec.file,
            rec.seconds,
            self.dclass,
            "calibrate",
        )
        res.recorded += 1
        name = it.generator.name
        res.seconds_by_generator[name] = res.seconds_by_generator.get(name, 0.0) + rec.seconds
        res.images_by_generator[name] = res.images_by_generator.get(name, 0) + 1
        self.emit(
            ImageScored(
                generator=name,
                prompt=it.prompt,
                seed=it.seed,
                score=value,
                seconds=rec.seconds,
                file=rec.file,
            )
        )

    def on_gen_event(self, event: Event) -> None:  # progress only: the engine's loads and steps go through
        if isinstance(event, (ModelLoading, Step)):
            self.emit(event)


# --- the catimg calibrate use case -------------------------------------------------------------------------


@dataclass(frozen=True)
class CampaignRequest:
    """What a ``catimg calibrate`` run was asked for, options parsed and checked."""

    prompts: tuple[str, ...]
    origin: str  # where the prompts come from ("prompt set NAME" or the file), for notes
    metric: str = "clipscore"
    generators: tuple[str, ...] | None = None  # --generators as named (None: not given, every enabled one)
    seeds: int = 1
    limit: int | None = None
    scorer_model: str | None = None
    db: Path | None = None
    models: Path | None = None
    out: Path | None = None  # the images (None: images/ next to the database)
    device: str | None = None
    dtype: str | None = None
    batch_size: int | None = None
    dry_run: bool = False


@dataclass(frozen=True)
class Campaign:
    """An opened campaign: its store (locked for a real run) and its plan."""

    request: CampaignRequest
    store: Store
    plan: CampaignPlan
    catalog: Catalog
    device: DeviceInfo
    scorer_note: str  # "METRIC with MODEL", or "missing: why"

    @property
    def out_dir(self) -> Path:
        return self.request.out if self.request.out is not None else self.store.path.parent / "images"


@contextmanager
def open_campaign(request: CampaignRequest) -> Iterator[Campaign]:
    """The campaign of ``request``: the metric, prompts, generators and device checked, the store opened (its
    campaign lock taken unless a dry run) and the plan made, with a note for every generator left out."""
    from catimg.calibration.scorer import get_spec
    from catimg.calibration.store import Store
    from catimg.config import load_catalog
    from catimg.device import detect_device

    req = request
    get_spec(req.metric)  # unknown metric: fail before anything else
    plist, notes = select_prompts(req.prompts, req.limit, req.origin)
    catalog = load_catalog(req.models)
    gens = select_generators(catalog, req.generators)
    dev = detect_device(req.device)
    named = req.generators is not None
    with Store.open(req.db, dry_run=req.dry_run) as store:
        if not req.dry_run:
            store.acquire_campaign()
        plan = plan_campaign(
            plist,
            gens,
            store,
            req.metric,
            seeds=req.seeds,
            device=dev,
            check_weights=not req.dry_run,
            explicit_generators=named,
            notes=notes,
        )
        scorer_note = scorer_status(req.metric, req.scorer_model)
        note_left_out(plan, catalog, named=named, dry_run=req.dry_run)
        yield Campaign(req, store, plan, catalog, dev, scorer_note)


def note_left_out(plan: CampaignPlan, catalog: Catalog, named: bool, dry_run: bool) -> None:
    """Say in ``plan`` what it leaves out: disabled generators unless --generators named them; with a dry run
    (which does not check weights), the generators whose weights are missing."""
    if dry_run:
        from catimg.pipelines import check_weights, fetch_hint

        for g in plan.generators:
            try:
                check_weights(g, False)
            except CatimgError:
                plan.notes.append(
                    f"weights missing for {g.name} ({g.source}): a real run leaves it out; "
                    f"{fetch_hint(g.source)}"
                )
    if not named:
        for g in catalog.generators:
            if not g.enabled:
                plan.skipped_generators.setdefault(
                    g.name, "disabled in models.toml; name it with --generators to measure it"
                )


def scorer_status(metric: str, model: str | None) -> str:
    """ "METRIC with MODEL" when the scorer's weights are there, else "missing: why"."""
    from catimg.calibration.scorer import check_scorer, get_spec

    mid = model or get_spec(metric).default_model
    try:
        check_scorer(metric, model)
    except CatimgError as exc:
        return f"missing: {exc.message}"
    return f"{metric} with {mid}"


def campaign_scorer(campaign: Campaign) -> Scorer | None:
    """The scorer loaded (corrupt weights: one error, nothing generated yet); None when nothing is left to
    do."""
    from catimg.calibration.scorer import load_scorer

    req = campaign.request
    if not campaign.plan.jobs:
        return None
    return load_scorer(req.metric, req.scorer_model, campaign.device.torch_device)


def measure(
    campaign: Campaign, scorer: Scorer, engine: Engine | None = None, on_event: OnEvent | None = None
) -> CampaignResult:
    """Make, score and record the campaign's images (:func:`run_campaign` with the request's settings)."""
    req = campaign.request
    return run_campaign(
        campaign.plan,
        campaign.store,
        scorer,
        campaign.device,
        campaign.out_dir,
        on_event=on_event,
        dtype=req.dtype,
        batch_size=req.batch_size,
        engine=engine,
    )


# --- one writer of scored images ---------------------------------------------------------------------------

#: Sources of store rows measured on this machine by catimg itself (the rest were imported).
OWN_SOURCES = ("gen", "calibrate")
_MADE = ("ok", "retried", "fallback")


def record_image(
    store: Store,
    scorer: Scorer,
    metric: str,
    generator_hash: str,
    prompt: str,
    seed: int,
    file: str | Path,
    seconds: float | None,
    device: str | None,
    source: str,
) -> float:
    """Score the image in ``file`` against ``prompt`` and record it (one transaction); returns the score."""
    from PIL import Image

    with Image.open(file) as im:
        im.load()
        value = scorer.score([im], [prompt])[0]
    store.record(
        prompt,
        generator_hash,
        seed,
        {metric: value},
        seconds=seconds,
        path=file,
        device=device,
        source=source,
        scorer=scorer.model_id,
    )
    return value


@dataclass(frozen=True)
class ScoredImage:
    """One image a run scored and recorded."""

    generator: str
    settings_hash: str
    prompt: str
    seed: int
    score: float
    seconds: float | None
    file: Path


class RunScoring:
    """Score the images a ``gen`` run makes and record them in the store (source ``gen``).

    Pass :meth:`on_image` to the engine as its ``on_image`` hook: every image made (ok, retried or fallback)
    is scored with ``scorer`` and recorded under the settings hash of the generator that made it. A failure
    (an unreadable image, the scorer or the store failing) stops the scoring, not the run: the images stay on
    disk and in the manifest, :attr:`error` holds what went wrong and :attr:`unscored` counts the images made
    after it (``gen --resume --score`` scores them later, see :meth:`backlog`).
    """

    def __init__(self, store: Store, scorer: Scorer, device_class: str | None, source: str = "gen") -> None:
        self.store = store
        self.scorer = scorer
        self.metric = scorer.metric
        self.device_class = device_class
        self.source = source
        self.scored: list[ScoredImage] = []
        self.from_backlog = 0  # images of earlier runs scored by backlog()
        self.unscored = 0
        self.error: BaseException | None = None
        self._hashes: dict[str, str] = {}  # settings hash -> registered

    def on_image(self, rec: ImageRecord) -> None:
        """The engine's per-image hook: score and record ``rec`` when it is an image made."""
        if rec.status in _MADE and rec.file is not None:
            self.score(rec.generator, rec.item.prompt, rec.item.seed, Path(rec.file), rec.seconds)

    def score(
        self,
        gen: Generator,
        prompt: str,
        seed: int,
        file: Path,
        seconds: float | None,
        device: str | None = None,
    ) -> ScoredImage | None:
        """Score and record one image (None once the scoring has stopped, or when it stops now)."""
        if self.error is not None:
            self.unscored += 1
            return None
        try:
            h = self._register(gen)
            value = record_image(
                self.store,
                self.scorer,
                self.metric,
                h,
                prompt,
                seed,
                file,
                seconds,
                device or self.device_class,
                self.source,
            )
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - kept and reported in one line by the caller; the run goes on
            self.error = exc
            self.unscored += 1
            return None
        done = ScoredImage(gen.name, h, prompt, seed, value, seconds, file)
        self.scored.append(done)
        return done

    def _register(self, gen: Generator) -> str:
        h = gen.settings_hash()
        if h not in self._hashes:
            self.store.register_generator(gen)
            self._hashes[h] = gen.name
        return h

    def backlog(
        self,
        out_dir: Path,
        records: Sequence[dict[str, Any]],
        generators: Sequence[Generator],
        device_name: str | None = None,
    ) -> list[str]:
        """Score the images of ``records`` (an output folder's manifest) that the store does not have yet.

        ``generators``: the run's generators (routed ones and their fallbacks, with the run's settings); a
        record whose settings are not among them is left alone (and counted in the note returned).
        """
        by_name = {g.name: g for g in generators}
        todo: list[tuple[Generator, dict[str, Any]]] = []
        other = 0
        for rec in records:
            if rec.get("status") not in _MADE or not rec.get("file"):
                continue
            gen, routed = (
                by_name.get(str(rec.get("generator"))),
                by_name.get(str(rec.get("routed_generator"))),
            )
            if gen is None or routed is None or routed.settings_hash() != rec.get("settings_hash"):
                other += 1
                continue
            todo.append((gen, rec))
        done = self.store.done(self.metric, {g.settings_hash() for g, _ in todo})
        missing = 0
        for gen, rec in todo:
            if (gen.settings_hash(), rec["prompt"], int(rec["seed"])) in done:
                continue
            file = out_dir / str(rec["file"])
            if not file.is_file():
                missing += 1
                continue
            same_device = device_name is None or rec.get("device_name") == device_name
            secs = rec.get("measured_seconds")
            if (
                self.score(
                    gen,
                    rec["prompt"],
                    int(rec["seed"]),
                    file,
                    None if secs is None else float(secs),
                    self.device_class if same_device else None,
                )
                is not None
            ):
                self.from_backlog += 1
        notes = []
        if other:
            notes.append(f"{other} image(s) of {out_dir} made with other generator settings were not scored")
        if missing:
            notes.append(
                f"{missing} image(s) of the manifest of {out_dir} are not on disk and were not scored"
            )
        return notes


def store_card(
    store: Store, metric: str, generators: Sequence[Generator], prompts: Sequence[str]
) -> dict[str, Any]:
    """What a router trained on ``prompts`` of the store stands on, for its data card.

    Rows (one per scored image) and prompts of ``metric`` for ``generators`` (their current settings), by
    source; ``own_rows``/``own_prompts`` count those catimg measured on this machine (:data:`OWN_SOURCES`:
    ``gen --score`` and ``calibrate``), the rest were imported.
    """
    from catimg.measurements import prompt_key

    keys = {prompt_key(p) for p in prompts}
    rows = [m for m in store.measurements(metric, list(generators)) if prompt_key(m.prompt) in keys]
    by_source: dict[str, int] = {}
    for m in rows:
        src = m.source or "unknown"
        by_source[src] = by_source.get(src, 0) + 1
    own = [m for m in rows if m.source in OWN_SOURCES]
    return {
        "path": str(store.path.resolve()),
        "metric": metric,
        "rows": len(rows),
        "rows_by_source": dict(sorted(by_source.items())),
        "own_rows": len(own),
        "own_prompts": len({prompt_key(m.prompt) for m in own}),
    }
