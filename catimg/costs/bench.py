"""Measure generators on this device (``catimg bench``) and keep the results in a cache.

A measurement runs the real pipeline: load time, then ``warmup`` untimed images and ``repeats`` timed ones.
Per image a step callback records when each denoising step ends, which splits the image time into seconds per
denoising step (median of the step intervals) and fixed seconds (text encoding before the first step, VAE
decode and image conversion after the last). Peak memory comes from ``torch.cuda.max_memory_allocated`` on
CUDA; other devices leave it unmeasured.

The cache is one JSON file, ``bench.json`` in the user cache dir (``$CATIMG_CACHE_DIR`` overrides), keyed by
device class, dtype and the generator's settings hash: a changed generator (source, steps, size, scheduler …)
or another device misses. A generator that differs from a measured one only by its step count reuses that
measurement (same weights, same per-step time). A corrupt cache file is set aside and a one-line warning is
queued (:func:`pop_warnings`), never a traceback.

Every ``catimg gen`` run (local engine) feeds the cache too, through :func:`record_run`: the seconds per image
it measured (and its load times) become the entry of each generator it ran, with ``source = "catimg gen"``.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from catimg.config import Generator
from catimg.device import DeviceInfo, default_dtype, device_class
from catimg.errors import CatimgError, GenerationError, first_line
from catimg.paths import cache_dir

CACHE_FORMAT = 1
_warnings: list[str] = []


@dataclass(frozen=True)
class BenchResult:
    """One generator measured on one device class."""

    generator: str
    settings_hash: str
    model_hash: str  # settings without the step count: step variants share it
    device_class: str
    dtype: str
    load_seconds: float
    step_seconds: float
    fixed_seconds: float
    peak_memory_gb: float | None
    steps_run: int
    repeats: int
    warmup: int
    image_seconds: list[float] = field(default_factory=list)  # each timed image
    measured_at: str = ""
    torch_version: str = ""
    note: str = ""
    source: str = "catimg bench"  # or "catimg gen" (a run's own images, see record_run)

    def seconds_per_image(self, steps: int | None = None) -> float:
        n = self.steps_run if steps is None else steps
        return self.fixed_seconds + self.step_seconds * n

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> BenchResult:
        return BenchResult(**d)


# ------------------------------------------------------------------------------------------- cache


def cache_path() -> Path:
    return cache_dir() / "bench.json"


def model_hash(gen: Generator) -> str:
    import hashlib

    settings = {k: v for k, v in gen.settings().items() if k != "steps"}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def cache_key(device: DeviceInfo, dtype: str, settings_hash: str) -> str:
    return f"{device_class(device)}|{dtype}|{settings_hash}"


def pop_warnings() -> list[str]:
    """Warnings queued by cache reads (e.g. a corrupt file was discarded); the CLI prints them once."""
    out = list(_warnings)
    _warnings.clear()
    return out


def load_cache(path: Path | None = None) -> dict[str, BenchResult]:
    """The cache entries; a corrupt or foreign file is renamed to ``bench.json.corrupt`` with a queued
    warning."""
    path = path or cache_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        _warnings.append(f"bench cache {path} is unreadable ({exc.strerror}); ignoring it")
        return {}
    try:
        doc = json.loads(text)
        if (
            not isinstance(doc, dict)
            or doc.get("format") != CACHE_FORMAT
            or not isinstance(doc.get("entries"), dict)
        ):
            raise ValueError("not a catimg bench cache of format 1")
        # from_dict validates every entry's fields
        return {key: BenchResult.from_dict(entry) for key, entry in doc["entries"].items()}
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        reason = first_line(exc, limit=80)
        try:
            path.replace(path.with_name(path.name + ".corrupt"))
        except OSError:
            pass
        _warnings.append(
            f"bench cache {path} was corrupt ({reason}); discarded it, run `catimg bench` to measure again"
        )
        return {}


def save_results(results: Iterable[BenchResult], device: DeviceInfo, path: Path | None = None) -> Path:
    """Add (or replace) results in the cache file, atomically."""
    path = path or cache_path()
    entries = load_cache(path)
    for r in results:
        entries[cache_key(device, r.dtype, r.settings_hash)] = r
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(
        json.dumps(
            {"format": CACHE_FORMAT, "entries": {k: r.to_dict() for k, r in entries.items()}}, indent=1
        ),
        encoding="utf-8",
    )
    tmp.replace(path)
    return path


def lookup(gen: Generator, device: DeviceInfo, dtype: str | None = None) -> BenchResult | None:
    """The measurement for ``gen`` on this device class and dtype, or None.

    An exact settings match wins; else a measurement of the same model with another step count is reused (the
    per-step and fixed seconds carry over). Any other change of settings, device class or dtype misses.
    """
    dtype = dtype or default_dtype(device, gen.dtype)
    entries = load_cache()
    if not entries:
        return None
    exact = entries.get(cache_key(device, dtype, gen.settings_hash()))
    if exact is not None:
        return exact
    dclass = device_class(device)
    mh = model_hash(gen)
    for r in entries.values():
        if r.device_class == dclass and r.dtype == dtype and r.model_hash == mh:
            return replace(r, note=f"from the measurement of {r.generator} ({r.steps_run} steps)")
    return None


#: The most recent image times a cache entry fed by gen runs keeps (their median is its seconds per image).
RUN_HISTORY = 20


def record_run(
    images: Iterable[tuple[Generator, float]],
    load_seconds: Mapping[str, float],
    device: DeviceInfo,
    dtype: str | None = None,
    path: Path | None = None,
) -> list[BenchResult]:
    """Feed what a ``gen`` run measured into the cache, so that the next plan on this device uses it.

    ``images``: (generator as run, measured seconds per image) for every image made, in the order made;
    ``load_seconds``: model name -> seconds to load, for the models the run loaded; ``dtype``: the run's
    --dtype. Per generator settings: the run's image times join the times of earlier gen runs (the last
    :data:`RUN_HISTORY`), and their median becomes its seconds per image; the first image after a load is left
    out when there are others (it carries the warm-up, as ``bench``'s warm-up image does). A ``bench``
    measurement of the same settings keeps its split into per-step and fixed seconds, scaled to that median;
    without one, all of it counts per step. A cache that cannot be written is a queued warning, never an
    error.
    """
    groups: dict[str, tuple[Generator, list[float]]] = {}
    for gen, secs in images:
        if secs > 0:
            groups.setdefault(gen.settings_hash(), (gen, []))[1].append(float(secs))
    if not groups:
        return []
    entries = load_cache(path)
    out = [_run_entry(gen, times, load_seconds, device, dtype, entries) for gen, times in groups.values()]
    try:
        save_results(out, device, path)
    except OSError as exc:
        _warnings.append(
            f"bench cache {path or cache_path()} could not be written ({exc.strerror}); "
            "this run's measured seconds were not kept"
        )
        return []
    return out


def _run_entry(
    gen: Generator,
    times: list[float],
    load_seconds: Mapping[str, float],
    device: DeviceInfo,
    dtype: str | None,
    entries: dict[str, BenchResult],
) -> BenchResult:
    import sys

    d = default_dtype(device, dtype if dtype and dtype != "auto" else gen.dtype)
    old = entries.get(cache_key(device, d, gen.settings_hash()))
    warm = 1 if gen.model in load_seconds and len(times) > 1 else 0
    history = list(old.image_seconds) if old is not None and old.source == "catimg gen" else []
    kept = (history + times[warm:])[-RUN_HISTORY:]
    per_image = statistics.median(kept)
    steps = max(gen.steps, 1)
    step, fixed = per_image / steps, 0.0
    if old is not None and old.seconds_per_image(steps) > 0:
        ratio = per_image / old.seconds_per_image(steps)
        step, fixed = old.step_seconds * ratio, old.fixed_seconds * ratio
    load = load_seconds.get(gen.model, old.load_seconds if old is not None else 0.0)
    torch = sys.modules.get("torch")
    return BenchResult(
        generator=gen.name,
        settings_hash=gen.settings_hash(),
        model_hash=model_hash(gen),
        device_class=device_class(device),
        dtype=d,
        load_seconds=round(float(load), 4),
        step_seconds=step,
        fixed_seconds=fixed,
        peak_memory_gb=old.peak_memory_gb if old is not None else None,
        steps_run=steps,
        repeats=len(kept),
        warmup=warm,
        image_seconds=[round(x, 5) for x in kept],
        measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        torch_version=str(getattr(torch, "__version__", "")),
        note=f"seconds per image of gen runs (median of the last {len(kept)} images, "
        "batched as the runs were)",
        source="catimg gen",
    )


# ------------------------------------------------------------------------------------------- measuring


def _load(gen: Generator, device: DeviceInfo, dtype: str, allow_download: bool) -> Any:
    """The pipeline of ``gen`` on ``device``, loaded as every run loads it
    (:func:`catimg.pipelines.load_pipeline`)."""
    from catimg.pipelines import load_pipeline

    return load_pipeline(gen, device, dtype, allow_download)


def _preimport(gen: Generator) -> None:
    """Import the pipeline and component classes named in model_index.json so that load time excludes
    imports."""
    import importlib

    from catimg.pipelines import weights_location

    folder = weights_location(gen)
    if folder is None:
        return
    try:
        index = json.loads((Path(folder) / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    wanted = [("diffusers", index.get("_class_name"))]
    wanted += [
        tuple(v) for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and len(v) == 2
    ]
    for lib, cls in wanted:
        if not lib or not cls:
            continue
        try:
            getattr(importlib.import_module(lib), cls)
        except Exception:
            continue


def measure(
    gen: Generator,
    device: DeviceInfo,
    repeats: int = 3,
    warmup: int = 1,
    allow_download: bool = False,
    prompt: str = "a photograph of a red bicycle leaning on a blue wall",
    loader: Callable[[Generator, DeviceInfo, str, bool], Any] | None = None,
) -> BenchResult:
    """Load ``gen``'s pipeline on ``device`` and time it (see the module doc for what is measured)."""
    import torch

    from catimg.pipelines import apply_scheduler

    if repeats < 1 or warmup < 0:
        raise CatimgError(
            f"--repeats {repeats} / --warmup {warmup}: need at least 1 repeat and 0 or more warm-ups"
        )
    dtype = default_dtype(device, gen.dtype)
    cuda = device.kind == "cuda"
    sync = _synchronizer(device)
    _preimport(gen)  # import time is not load time
    if cuda:
        torch.cuda.reset_peak_memory_stats(device.torch_device)
    t0 = time.perf_counter()
    pipe = (loader or _load)(gen, device, dtype, allow_download)
    sync()
    load_seconds = time.perf_counter() - t0
    pipe.set_progress_bar_config(disable=True)
    apply_scheduler(pipe, gen)
    steps = max(gen.steps, 3)  # at least two step intervals to split per-step from fixed time
    timed = [_time_image(pipe, gen, prompt, steps, seed, sync) for seed in range(warmup + repeats)][warmup:]
    peak = torch.cuda.max_memory_allocated(device.torch_device) / 1024**3 if cuda else None
    result = BenchResult(
        generator=gen.name,
        settings_hash=gen.settings_hash(),
        model_hash=model_hash(gen),
        device_class=device_class(device),
        dtype=dtype,
        load_seconds=round(load_seconds, 4),
        step_seconds=statistics.median(t.step for t in timed),
        fixed_seconds=statistics.median(t.fixed for t in timed),
        peak_memory_gb=None if peak is None else round(peak, 3),
        steps_run=steps,
        repeats=repeats,
        warmup=warmup,
        image_seconds=[round(t.total, 5) for t in timed],
        measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        torch_version=torch.__version__,
        note="" if cuda else f"peak memory is measured on CUDA only (device: {device.kind})",
    )
    del pipe
    if cuda:
        torch.cuda.empty_cache()
    return result


@dataclass(frozen=True)
class ImageTime:
    """One timed image: its seconds, split into seconds per denoising step and fixed seconds."""

    total: float
    step: float
    fixed: float

    @staticmethod
    def split(total: float, stamps: list[float], steps: int) -> ImageTime:
        """The split by the median interval between step ends (``stamps``), or evenly without two of them."""
        intervals = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
        step = statistics.median(intervals) if intervals else total / steps
        return ImageTime(total, step, max(total - step * steps, 0.0))


def _synchronizer(device: DeviceInfo) -> Callable[[], None]:
    """A function that waits for ``device``'s queued work (a no-op on the CPU), so that clocks read real
    ends."""
    import torch

    def sync() -> None:
        if device.kind == "cuda":
            torch.cuda.synchronize(device.torch_device)
        elif device.kind == "mps":
            torch.mps.synchronize()

    return sync


def _time_image(
    pipe: Any, gen: Generator, prompt: str, steps: int, seed: int, sync: Callable[[], None]
) -> ImageTime:
    """Make one image of ``prompt`` with ``steps`` steps and time it, with a clock reading at every step
    end."""
    import inspect

    import torch

    stamps: list[float] = []

    def on_step(_pipe: Any, _i: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        sync()
        stamps.append(time.perf_counter())
        return kwargs

    def on_step_old(_i: int, _t: Any, _latents: Any) -> None:
        sync()
        stamps.append(time.perf_counter())

    params = set(inspect.signature(pipe.__call__).parameters)
    call: dict[str, Any] = dict(
        prompt=prompt,
        num_inference_steps=steps,
        width=gen.width,
        height=gen.height,
        guidance_scale=gen.guidance,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="pil",
    )
    if gen.negative_prompt and "negative_prompt" in params:
        call["negative_prompt"] = gen.negative_prompt
    if "clean_caption" in params:
        call["clean_caption"] = False
    if "callback_on_step_end" in params:
        call["callback_on_step_end"] = on_step
    elif "callback" in params:
        call.update(callback=on_step_old, callback_steps=1)
    sync()
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            pipe(**call)
    except CatimgError:
        raise
    except Exception as exc:
        raise GenerationError(f"{gen.name}: the benchmark image failed ({first_line(exc)})") from exc
    sync()
    return ImageTime.split(time.perf_counter() - start, stamps, steps)
