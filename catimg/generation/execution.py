"""The execution core both engines share: from a routed plan's items to saved, recorded images.

The local engine (:func:`catimg.generation.generate.run_plan`) and the Ray engine
(:func:`catimg.generation.ray_engine.run_plan_ray`) are both built from these public pieces, so that one plan
gives the same batches, the same pixels and the same manifest records whichever engine runs it:

* :func:`start_run`: the output folder made ready and, with ``--resume``, the plan positions still to make
  (:func:`catimg.generation.resume.resume_todo`).
* Batching of a plan: :func:`group_plan` (models in order of first use, the generators (step variants) of a
  model one after another), :func:`batch_size` (``RunOptions.batch_size``, else :func:`auto_batch_size` by
  device memory) and :func:`batches`.
* :class:`ImageMaker`: one diffusers call for a batch of one generator. Each image gets its own
  ``torch.Generator`` seeded with its seed, so an image does not depend on its batch-mates; step callbacks
  become ``step`` events; the memory-saving setting (attention and VAE slicing) for a retry; images the
  pipeline's own safety checker flags come back black.
* :func:`retry_policy`: what the one retry of a failed image is (a :class:`Retry`).
* :class:`BatchRunner`: makes a batch with the image maker; a batch that raises is retried image by image; an
  image that fails (an exception, out of memory, a NaN or black image) is retried once as the policy says.
  Every image ends as one :class:`Outcome` (its image, or none when it failed, and its record), handed to a
  sink.
* :func:`describe`: the one :class:`catimg.generation.output.ManifestRecord` of an image, whichever engine
  made it.
* :class:`Engine`: the Protocol both engines satisfy (:class:`catimg.generation.generate.LocalEngine`,
  :class:`catimg.generation.ray_engine.RayEngine`); callers make a plan's images only through it.
* :class:`Recorder`: the one writer of results: the PNG (unless a Ray worker already wrote it), one manifest
  line, an :class:`ImageRecord` in the :class:`RunResult`, the :class:`~catimg.generation.events.ImageDone`
  event and the caller's ``on_image`` hook (per-image work such as scoring).

Nothing here prints; progress goes to an ``on_event(event)`` callback with the typed events of
:mod:`catimg.generation.events`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from catimg import __version__
from catimg.errors import first_line
from catimg.generation.events import (
    BatchStarted,
    ImageDone,
    ModelLoading,
    OnEvent,
    OnImage,
    Retrying,
    Step,
    no_events,
)
from catimg.generation.output import (
    SAVED,
    ImageStatus,
    ManifestRecord,
    append_manifest,
    image_filename,
    png_bytes,
    prepare_out_dir,
    write_new_file,
)
from catimg.pipelines import LoadedPipeline, PipelineCache, resolve_dtype

if TYPE_CHECKING:
    from catimg.config import Generator
    from catimg.device import DeviceInfo
    from catimg.generation.generate import PlanItem


# ------------------------------------------------------------------------------------------------ run types


@dataclass(frozen=True)
class RunOptions:
    """How to run a plan (both engines). Frozen: derive changed options with ``dataclasses.replace``."""

    out_dir: Path
    device: DeviceInfo
    dtype: str | None = None
    allow_download: bool = False
    batch_size: int | None = None  # None: by device memory
    metadata: bool = True
    resume: bool = False
    budget: str | None = None
    router_version: str | None = None
    base_seed: int | None = None
    images_per_prompt: int | None = None
    loader: Any = None  # seam for PipelineCache.loader


@dataclass
class ImageRecord:
    """What became of one image of the plan, for the caller (the manifest line is the file's view of it)."""

    item: PlanItem
    status: ImageStatus
    generator: Generator  # the generator that made the image (differs from item.generator after a fallback)
    file: Path | None = None
    seconds: float = 0.0
    attempts: int = 1
    error: str | None = None
    note: str = ""


@dataclass
class RunResult:
    records: list[ImageRecord] = field(default_factory=list)
    loads: list[str] = field(default_factory=list)  # model names, in load order
    load_seconds: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0
    interrupted: bool = False
    skipped: int = 0
    differences: list[str] = field(default_factory=list)  # --resume: how this run differs from the manifest

    @property
    def made(self) -> list[ImageRecord]:
        return [r for r in self.records if r.status in SAVED]

    @property
    def failed(self) -> list[ImageRecord]:
        return [r for r in self.records if r.status == "failed"]

    def per_generator(self) -> dict[str, dict[str, Any]]:
        """Per generator that made images: count, measured seconds, predicted seconds, mean predicted
        quality."""
        out: dict[str, dict[str, Any]] = {}
        for r in self.made:
            d = out.setdefault(
                r.generator.name,
                {
                    "images": 0,
                    "measured_seconds": 0.0,
                    "predicted_seconds": 0.0,
                    "_q": [],
                    "model": r.generator.model,
                },
            )
            d["images"] += 1
            d["measured_seconds"] += r.seconds
            d["predicted_seconds"] += r.item.predicted_seconds or 0.0
            if r.item.predicted_quality is not None and r.generator.name == r.item.generator.name:
                d["_q"].append(r.item.predicted_quality)
        for d in out.values():
            qs = d.pop("_q")
            d["mean_predicted_quality"] = sum(qs) / len(qs) if qs else None
            d["load_seconds"] = self.load_seconds.get(d["model"], 0.0)
        return out


@dataclass(frozen=True)
class Job:
    """One image to make: its plan item and its position in the plan."""

    position: int
    item: PlanItem


@dataclass(frozen=True)
class Outcome:
    """What became of one job: the image (None when it failed) and its record (no file, worker or time
    yet)."""

    job: Job
    generator: Generator  # the generator that made (or last tried) the image
    record: ManifestRecord
    seconds: float
    image: Any = None

    def file_name(self) -> str:
        it = self.job.item
        return image_filename(it.index, it.prompt, self.generator.name, it.seed)

    def png(self, metadata: bool) -> bytes:
        """The image as PNG bytes, with the record in its text chunks unless ``metadata`` is False."""
        return png_bytes(self.image, self.record.metadata() if metadata else None)


class Engine(Protocol):
    """What makes a plan's images; the CLI and the calibration campaign call an engine only through this.

    Two backends satisfy it: :class:`catimg.generation.generate.LocalEngine` (this process) and
    :class:`catimg.generation.ray_engine.RayEngine` (a Ray cluster). Same contract for both: every image of
    ``plan`` made (or skipped with ``options.resume``), recorded in ``options.out_dir``'s manifest and in the
    returned :class:`RunResult`; progress to ``on_event``; each recorded image to ``on_image`` after its
    ``ImageDone`` event.
    """

    def run(
        self,
        plan: Sequence[PlanItem],
        options: RunOptions,
        on_event: OnEvent | None = None,
        on_image: OnImage | None = None,
    ) -> RunResult: ...


# ------------------------------------------------------------------------------------- the start of a run


def start_run(plan: Sequence[PlanItem], options: RunOptions) -> tuple[RunOptions, list[int], RunResult]:
    """The output folder made ready, the plan positions to make (``--resume`` skips those done) and a
    result."""
    from catimg.generation.resume import resume_todo

    options = replace(options, out_dir=prepare_out_dir(options.out_dir))
    res = RunResult()
    positions = list(range(len(plan)))
    if options.resume:
        positions, res.differences = resume_todo(list(plan), options)
        res.skipped = len(plan) - len(positions)
    return options, positions, res


# ------------------------------------------------------------------------------------------------ batching


def group_plan(plan: Sequence[PlanItem], positions: Iterable[int]) -> list[tuple[Generator, list[int]]]:
    """Positions grouped by generator: models in order of first use, a model's generators one after
    another."""
    by_model: dict[str, dict[str, list[int]]] = {}
    gens: dict[str, Generator] = {}
    for p in positions:
        g = plan[p].generator
        by_model.setdefault(g.model, {}).setdefault(g.name, []).append(p)
        gens[g.name] = g
    return [(gens[name], ps) for per_gen in by_model.values() for name, ps in per_gen.items()]


def auto_batch_size(device: DeviceInfo, peak_memory_gb: float | None) -> int:
    """Prompts per pipeline call: 4 on the CPU; on a GPU as many as the memory left after the model allows
    (≤ 8)."""
    if device.kind == "cpu":
        return 4
    free = device.free_memory_gb if device.free_memory_gb is not None else device.total_memory_gb
    if free is None or peak_memory_gb is None:
        return 1
    per_image = max(0.5, 0.25 * peak_memory_gb)
    return max(1, min(8, int((free - peak_memory_gb) / per_image)))


def batch_size(options: RunOptions, device: DeviceInfo, item: PlanItem) -> int:
    """Images per pipeline call for ``item``'s generator: ``--batch-size``, else by ``device``'s memory."""
    return options.batch_size or auto_batch_size(device, item.peak_memory_gb)


def batches(positions: Sequence[int], size: int) -> list[list[int]]:
    """``positions`` cut into consecutive batches of ``size`` (the last may be shorter)."""
    return [list(positions[s : s + size]) for s in range(0, len(positions), size)]


# ------------------------------------------------------------------------------------------ the image maker


def is_oom(exc: BaseException) -> bool:
    """True for an out-of-memory error (torch's OutOfMemoryError or a message saying so)."""
    return "OutOfMemory" in type(exc).__name__ or "out of memory" in str(exc).lower()


def is_black(image: Any) -> bool:
    """True for an empty, NaN or all-black image (what a failed or censored generation returns)."""
    import numpy as np

    arr = np.asarray(image)
    return arr.size == 0 or not np.isfinite(arr).all() or int(arr.max()) == 0


def _memory_saving(pipe: Any, on: bool) -> None:
    """Attention and VAE slicing on (or off again); what a pipeline does not have is skipped.

    Newer diffusers pipelines have no ``enable_vae_slicing``: their VAE slices itself
    (``vae.enable_slicing``).
    """
    switches: list[tuple[Any, str]] = [
        (pipe, "enable_attention_slicing" if on else "disable_attention_slicing")
    ]
    if hasattr(pipe, "enable_vae_slicing"):
        switches.append((pipe, "enable_vae_slicing" if on else "disable_vae_slicing"))
    else:
        switches.append((getattr(pipe, "vae", None), "enable_slicing" if on else "disable_slicing"))
    for owner, name in switches:
        fn = getattr(owner, name, None)
        if fn is not None:
            try:
                fn()
            except Exception:
                pass


class ImageMaker:
    """One diffusers call for a batch of one generator's images on ``device``; ``step`` events as it goes."""

    def __init__(self, device: DeviceInfo, on_event: OnEvent) -> None:
        self.device = device
        self.on_event = on_event

    def make(
        self, loaded: LoadedPipeline, gen: Generator, items: Sequence[PlanItem], memory_saving: bool = False
    ) -> tuple[list[Any], float]:
        """(PIL images in ``items`` order, seconds of the call); ``memory_saving`` slices attention and
        VAE."""
        if memory_saving:
            _memory_saving(loaded.pipe, True)
        try:
            return self._call(loaded, gen, items)
        finally:
            if memory_saving:
                _memory_saving(loaded.pipe, False)

    def _call(
        self, loaded: LoadedPipeline, gen: Generator, items: Sequence[PlanItem]
    ) -> tuple[list[Any], float]:
        import torch

        loaded.use_scheduler(gen)
        gdev = loaded.generator_device(self.device)
        kw = self._arguments(loaded, gen, items)
        kw["generator"] = [torch.Generator(device=gdev).manual_seed(it.seed) for it in items]
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = loaded.pipe(**kw)
        if self.device.kind == "cuda":
            torch.cuda.synchronize()
        secs = time.perf_counter() - t0
        images = list(out.images)
        for i, flagged in enumerate(getattr(out, "nsfw_content_detected", None) or []):
            if flagged:
                import numpy as np
                from PIL import Image

                images[i] = Image.fromarray(np.zeros((gen.height, gen.width, 3), dtype="uint8"))
        return images, secs

    def _arguments(self, loaded: LoadedPipeline, gen: Generator, items: Sequence[PlanItem]) -> dict[str, Any]:
        """The pipeline call's keyword arguments, less the seeded generators."""
        params = loaded.call_parameters
        kw: dict[str, Any] = {
            "prompt": [it.prompt for it in items],
            "num_inference_steps": gen.steps,
            "guidance_scale": gen.guidance,
            "width": gen.width,
            "height": gen.height,
            "output_type": "pil",
        }
        if any(it.negative for it in items) and "negative_prompt" in params:
            kw["negative_prompt"] = [it.negative for it in items]
        if "clean_caption" in params:
            kw["clean_caption"] = False
        names = tuple(it.prompt for it in items)

        def step(n: int) -> None:
            self.on_event(Step(generator=gen.name, step=n, steps=gen.steps, prompts=names))

        if "callback_on_step_end" in params:

            def on_step_end(p: Any, i: int, t: Any, cb_kwargs: dict[str, Any]) -> dict[str, Any]:
                step(i + 1)
                return cb_kwargs

            kw["callback_on_step_end"] = on_step_end
        elif "callback" in params:
            kw["callback"] = lambda i, t, latents: step(i + 1)
            kw["callback_steps"] = 1
        return kw


# ------------------------------------------------------------------------------------------------ retries


@dataclass(frozen=True)
class Retry:
    """The one retry of an image whose first try failed."""

    target: Generator  # the generator to retry with
    status: Literal["retried", "fallback"]  # the image's status when the retry works
    note: str  # what happened, for the manifest
    memory_saving: bool  # batch of one with attention/VAE slicing


def retry_policy(item: PlanItem, gen: Generator, error: str, fault: BaseException | None) -> Retry:
    """Out of memory: the same generator, saving memory; else the next cheaper generator the plan allows
    (``PlanItem.fallbacks``); else the same generator once more, as a batch of one."""
    note = f"first try failed ({error})"
    if fault is not None and is_oom(fault):
        return Retry(gen, "retried", f"{note}; retried with batch 1 and attention/VAE slicing", True)
    if item.fallbacks:
        target = item.fallbacks[0]
        return Retry(target, "fallback", f"{note}; retried with the cheaper generator {target.name}", False)
    return Retry(gen, "retried", f"{note}; retried once", False)


# --------------------------------------------------------------------------------------- records and runs


def describe(
    item: PlanItem,
    gen: Generator,
    options: RunOptions,
    device: DeviceInfo,
    *,
    scheduler: str | None,
    seconds: float,
    status: ImageStatus,
    attempts: int,
    note: str,
    error: str | None = None,
) -> ManifestRecord:
    """The manifest record of ``item`` made (or tried) with ``gen`` on ``device``; both engines use it."""
    return ManifestRecord(
        index=item.index,
        image=item.image,
        prompt=item.prompt,
        negative_prompt=item.negative,
        seed=item.seed,
        base_seed=options.base_seed,
        images_per_prompt=options.images_per_prompt,
        generator=gen.name,
        routed_generator=item.generator.name,
        settings_hash=item.generator.settings_hash(),  # the routed generator's, with --width/--height
        model=gen.model,
        source=gen.source,
        family=gen.family,
        steps=gen.steps,
        guidance=gen.guidance,
        width=gen.width,
        height=gen.height,
        scheduler=scheduler,
        dtype=resolve_dtype(gen, device, options.dtype),
        device=device.torch_device,
        device_name=device.name,
        predicted_quality=item.predicted_quality,
        predicted_seconds=item.predicted_seconds,
        measured_seconds=round(seconds, 4),
        budget=options.budget,
        lam=item.lam,
        catimg_version=__version__,
        router_version=options.router_version,
        status=status,
        attempts=attempts,
        note=note,
        error=error,
    )


class Pipelines:
    """The pipelines of one process's run: a :class:`PipelineCache` that says ``load`` before each model
    loads."""

    def __init__(self, options: RunOptions, on_event: OnEvent = no_events) -> None:
        self.cache = PipelineCache(
            options.device, options.dtype, options.allow_download, loader=options.loader
        )
        self.on_event = on_event

    def get(self, gen: Generator, item: PlanItem) -> LoadedPipeline:
        if not self.cache.holds(gen.model):
            self.on_event(ModelLoading(model=gen.model, source=gen.source))
        return self.cache.get(gen, offload=item.offload, peak_memory_gb=item.peak_memory_gb)


class BatchRunner:
    """Makes batches of one generator's images with one retry each (:func:`retry_policy`); every image's
    :class:`Outcome` goes to ``sink``. Used as it is by the local engine and by each Ray worker."""

    def __init__(
        self,
        options: RunOptions,
        pipes: Pipelines,
        sink: Callable[[Outcome], object],
        on_event: OnEvent = no_events,
    ) -> None:
        self.opt = options
        self.pipes = pipes
        self.sink = sink
        self.on_event = on_event
        self.maker = ImageMaker(options.device, on_event)

    def run_batch(self, loaded: LoadedPipeline, gen: Generator, jobs: Sequence[Job]) -> None:
        from catimg import interrupts

        interrupts.check()  # a Ctrl-C that something swallowed stops the run here, between images
        self.on_event(BatchStarted(generator=gen.name, images=len(jobs)))
        try:
            images, secs = self.maker.make(loaded, gen, [j.item for j in jobs])
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # a pipeline error or out of memory
            if len(jobs) > 1:  # find the culprit: each image on its own (its batch-mates are not faults)
                for j in jobs:
                    self.run_batch(loaded, gen, [j])
                return
            self._retry(jobs[0], gen, first_line(exc, typed=True, limit=200), exc)
            return
        for j, im in zip(jobs, images, strict=True):
            if is_black(im):
                self._retry(j, gen, "black or NaN image", None)
            else:
                self.sink(self._outcome(j, gen, loaded, secs / len(jobs), "ok", 1, "", image=im))

    def _retry(self, job: Job, gen: Generator, error: str, fault: BaseException | None) -> None:
        it = job.item
        self.on_event(Retrying(item=it, generator=gen.name, error=error))
        retry = retry_policy(it, gen, error, fault)
        loaded: LoadedPipeline | None = None
        try:
            loaded = self.pipes.get(retry.target, it)
            images, secs = self.maker.make(loaded, retry.target, [it], memory_saving=retry.memory_saving)
            if is_black(images[0]):
                raise RuntimeError("black or NaN image")
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            why = f"{error}; retry: {first_line(exc, typed=True, limit=200)}"
            self.sink(self._outcome(job, retry.target, loaded, 0.0, "failed", 2, retry.note, error=why))
            return
        self.sink(
            self._outcome(job, retry.target, loaded, secs, retry.status, 2, retry.note, image=images[0])
        )

    def _outcome(
        self,
        job: Job,
        gen: Generator,
        loaded: LoadedPipeline | None,
        seconds: float,
        status: ImageStatus,
        attempts: int,
        note: str,
        *,
        image: Any = None,
        error: str | None = None,
    ) -> Outcome:
        scheduler = loaded.scheduler_name(gen) if loaded is not None else gen.scheduler
        record = describe(
            job.item,
            gen,
            self.opt,
            self.opt.device,
            scheduler=scheduler,
            seconds=seconds,
            status=status,
            attempts=attempts,
            note=note,
            error=error,
        )
        return Outcome(job, gen, record, seconds, image)


class Recorder:
    """The one writer of a run's results (the local engine, the Ray driver): for each image its PNG (unless a
    worker wrote it already), one manifest line, an :class:`ImageRecord` in ``result``, the
    :class:`~catimg.generation.events.ImageDone` event and then ``on_image`` (the caller's per-image hook,
    e.g. scoring)."""

    def __init__(
        self, options: RunOptions, on_event: OnEvent, result: RunResult, on_image: OnImage | None = None
    ) -> None:
        self.opt = options
        self.on_event = on_event
        self.result = result
        self.on_image = on_image

    def save(self, outcome: Outcome) -> ImageRecord:
        """Record an outcome made in this process (its PNG written here)."""
        png = outcome.png(self.opt.metadata) if outcome.image is not None else None
        return self.record(outcome.job.item, outcome, png=png)

    def record(
        self,
        item: PlanItem,
        outcome: Outcome,
        *,
        png: bytes | None = None,
        file: str | None = None,
        worker: str | None = None,
        note: str | None = None,
    ) -> ImageRecord:
        """Record ``outcome`` for ``item``: ``png`` bytes still to write, or the ``file`` a worker wrote;
        ``note`` replaces the record's note (the Ray driver prefixes what it re-planned)."""
        out = Path(self.opt.out_dir)
        path = (
            write_new_file(out, outcome.file_name(), png)
            if png is not None
            else (out / file if file else None)
        )
        rec = outcome.record
        line = replace(
            rec,
            file=path.name if path is not None else None,
            worker=worker,
            note=rec.note if note is None else note,
            time=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        image = ImageRecord(
            item=item,
            status=rec.status,
            generator=outcome.generator,
            file=path,
            seconds=outcome.seconds,
            attempts=rec.attempts,
            error=rec.error,
            note=line.note,
        )
        self.result.records.append(image)
        append_manifest(out, line.line())
        self.on_event(ImageDone(record=image))
        if self.on_image is not None:
            self.on_image(image)
        return image
