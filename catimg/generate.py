"""Executing a routed plan: group by model, load each pipeline once, batch, generate, save, record.

The input is an already-routed plan (one :class:`PlanItem` per image: prompt, generator, seed, predictions); the
output a :class:`RunResult` with one :class:`ImageRecord` per image. Nothing here prints: progress goes to an
``on_event(kind, data)`` callback that the CLI renders.

Order of work: models in order of first use, the generators (step variants) of a model one after another, prompts
that share a generator in batches (``batch_size`` or by device memory). Each image gets its own
``torch.Generator`` seeded with its seed, so an image does not depend on its batch-mates: same prompt, seed,
generator and device give the same image.

Faults: a batch that raises is retried image by image; an image that fails (an exception, out of memory, a NaN or
black image) is retried once, with a memory-saving setting (batch of one, attention and VAE slicing) when memory
ran out, else with the next cheaper generator the plan allows (``PlanItem.fallbacks``), else as a batch of one.
What happened is recorded in the manifest (``status``: ok, retried, fallback, failed). Ctrl-C stops after the
image in flight, keeps everything written, and returns with ``interrupted = True``. Disk errors stop the run
(GenerationError) with everything saved so far recorded.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catimg import __version__
from catimg.errors import InputError, first_line
from catimg.output import append_manifest, image_filename, prepare_out_dir, save_image
from catimg.pipelines import PipelineCache, apply_scheduler, resolve_dtype

if TYPE_CHECKING:
    from catimg.config import Generator
    from catimg.device import DeviceInfo
    from catimg.routing import RoutingResult

MAX_SEED = 2**32 - 1
Event = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class PlanItem:
    """One image to make."""

    index: int  # prompt index (0-based, file order)
    prompt: str
    generator: Generator
    seed: int
    image: int = 0  # image number for this prompt (0 .. images_per_prompt-1)
    negative: str = ""
    predicted_quality: float | None = None
    predicted_seconds: float | None = None
    lam: float | None = None
    fallbacks: tuple[Generator, ...] = ()  # cheaper generators the budget allows, best first
    offload: bool = False
    peak_memory_gb: float | None = None


@dataclass
class ImageRecord:
    item: PlanItem
    status: str  # ok | retried | fallback | failed | skipped
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
        return [r for r in self.records if r.status in ("ok", "retried", "fallback")]

    @property
    def failed(self) -> list[ImageRecord]:
        return [r for r in self.records if r.status == "failed"]

    def per_generator(self) -> dict[str, dict[str, Any]]:
        """Per generator that made images: count, measured seconds, predicted seconds, mean predicted quality."""
        out: dict[str, dict[str, Any]] = {}
        for r in self.made:
            d = out.setdefault(r.generator.name, {"images": 0, "measured_seconds": 0.0, "predicted_seconds": 0.0,
                                                 "_q": [], "model": r.generator.model})
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


def check_seed(seed: int) -> int:
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0 or seed > MAX_SEED:
        raise InputError(f"--seed {seed}: must be a whole number from 0 to {MAX_SEED}")
    return seed


def build_plan(
    routed: Sequence[tuple[int, str, Generator, float | None, float | None, float | None]],
    seed: int = 0,
    images_per_prompt: int = 1,
    negative: str | None = None,
    fallbacks: dict[int, tuple[Generator, ...]] | None = None,
    costs: dict[str, Any] | None = None,
) -> list[PlanItem]:
    """Images to make from routed prompts: (prompt index, prompt, generator, predicted quality, predicted cost, λ).

    Image ``k`` of prompt ``i`` gets seed ``seed + i * images_per_prompt + k``. ``negative`` (the --negative option)
    overrides each generator's default negative prompt.
    """
    check_seed(seed)
    if images_per_prompt < 1:
        raise InputError(f"--images-per-prompt {images_per_prompt}: must be 1 or more")
    last = seed + (max((r[0] for r in routed), default=0) + 1) * images_per_prompt - 1
    if last > MAX_SEED:
        raise InputError(f"--seed {seed}: seeds for all images would pass {MAX_SEED}; use a smaller seed")
    items = []
    for index, prompt, gen, q, c, lam in routed:
        cost = (costs or {}).get(gen.name)
        for k in range(images_per_prompt):
            items.append(
                PlanItem(
                    index=index, prompt=prompt, generator=gen, seed=seed + index * images_per_prompt + k, image=k,
                    negative=gen.negative_prompt if negative is None else negative,
                    predicted_quality=q, predicted_seconds=c, lam=lam,
                    fallbacks=(fallbacks or {}).get(index, ()),
                    offload=bool(getattr(cost, "offload", False)),
                    peak_memory_gb=getattr(cost, "peak_memory_gb", None),
                )
            )
    return items


def plan_from_routing(
    result: RoutingResult,
    seed: int = 0,
    images_per_prompt: int = 1,
    negative: str | None = None,
    size: tuple[int | None, int | None] = (None, None),
) -> list[PlanItem]:
    """:func:`build_plan` from a RoutingResult; fallbacks are the cheaper routable generators, best value first."""
    width, height = size
    gens = {g.name: _resize(g, width, height) for g in result.generators}
    routed = []
    fallbacks: dict[int, tuple[Generator, ...]] = {}
    for r in result.routes:
        row = r.row(r.choice)
        routed.append((r.index, r.prompt, gens[r.choice], row.predicted_quality, row.cost_seconds,
                       result.lam))
        cheaper = [x for x in r.rows if x.name != r.choice and x.status in ("routable", "chosen")
                   and x.cost_seconds < row.cost_seconds and x.value is not None]
        cheaper.sort(key=lambda x: (-(x.value or 0.0), x.cost_seconds))
        fallbacks[r.index] = tuple(gens[x.name] for x in cheaper)
    return build_plan(routed, seed, images_per_prompt, negative, fallbacks, result.costs)


def run_settings(gen: Generator, width: int | None = None, height: int | None = None,
                 dtype: str | None = None) -> Generator:
    """``gen`` as a run will use it: the --width/--height/--dtype overrides applied (for costs and plans)."""
    out = _resize(gen, width, height)
    if dtype is not None and dtype != "auto" and dtype != out.dtype:
        out = replace(out, dtype=dtype)
    return out


def _resize(gen: Generator, width: int | None, height: int | None) -> Generator:
    if width is None and height is None:
        return gen
    return replace(gen, width=width or gen.width, height=height or gen.height)


def check_size(value: int | None, option: str) -> None:
    if value is None:
        return
    if value <= 0 or value % 8:
        raise InputError(f"{option} {value}: must be a positive multiple of 8 (e.g. 512, 768, 1024)")


@dataclass
class RunOptions:
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


def auto_batch_size(device: DeviceInfo, peak_memory_gb: float | None) -> int:
    """Prompts per pipeline call: 4 on the CPU; on a GPU as many as the memory left after the model allows (≤ 8)."""
    if device.kind == "cpu":
        return 4
    free = device.free_memory_gb if device.free_memory_gb is not None else device.total_memory_gb
    if free is None or peak_memory_gb is None:
        return 1
    per_image = max(0.5, 0.25 * peak_memory_gb)
    return max(1, min(8, int((free - peak_memory_gb) / per_image)))


def _is_oom(exc: BaseException) -> bool:
    name = type(exc).__name__
    return "OutOfMemory" in name or "out of memory" in str(exc).lower()


def _is_black(image: Any) -> bool:
    import numpy as np

    arr = np.asarray(image)
    return arr.size == 0 or not np.isfinite(arr).all() or int(arr.max()) == 0


class Executor:
    """Runs a plan; see the module docstring."""

    def __init__(self, options: RunOptions, on_event: Event | None = None) -> None:
        self.opt = options
        self.on_event = on_event or (lambda kind, data: None)
        self.cache = PipelineCache(options.device, options.dtype, options.allow_download, loader=options.loader)
        self._params: dict[int, set[str]] = {}

    # ------------------------------------------------------------------------------------------------ public
    def run(self, plan: list[PlanItem]) -> RunResult:
        t0 = time.perf_counter()
        res = RunResult()
        self.opt.out_dir = prepare_out_dir(self.opt.out_dir)
        todo = plan
        if self.opt.resume:
            positions, res.differences = resume_todo(plan, self.opt)
            todo = [plan[p] for p in positions]
            res.skipped = len(plan) - len(todo)
        self.on_event("start", {"images": len(todo), "skipped": res.skipped, "differences": res.differences})
        try:
            for gen, items in self._groups(todo):
                self._run_generator(gen, items, res)
        except KeyboardInterrupt:
            res.interrupted = True
        finally:
            res.loads = list(self.cache.loads)
            res.load_seconds = dict(self.cache.load_seconds)
            res.wall_seconds = time.perf_counter() - t0
            self.cache.release_all()
        self.on_event("end", {"interrupted": res.interrupted})
        return res

    # ----------------------------------------------------------------------------------------------- helpers
    @staticmethod
    def _groups(items: list[PlanItem]) -> list[tuple[Generator, list[PlanItem]]]:
        by_model: dict[str, dict[str, list[PlanItem]]] = {}
        gens: dict[str, Generator] = {}
        for it in items:
            by_model.setdefault(it.generator.model, {}).setdefault(it.generator.name, []).append(it)
            gens[it.generator.name] = it.generator
        return [(gens[name], its) for per_gen in by_model.values() for name, its in per_gen.items()]

    def _pipe(self, gen: Generator, item: PlanItem) -> Any:
        if gen.model not in {k[0] for k in self.cache.pipes}:
            self.on_event("load", {"model": gen.model, "source": gen.source})
        return self.cache.get(gen, offload=item.offload, peak_memory_gb=item.peak_memory_gb)

    def _run_generator(self, gen: Generator, items: list[PlanItem], res: RunResult) -> None:
        pipe = self._pipe(gen, items[0])
        bs = self.opt.batch_size or auto_batch_size(self.opt.device, items[0].peak_memory_gb)
        for start in range(0, len(items), bs):
            self._run_batch(pipe, gen, items[start:start + bs], res)

    def _run_batch(self, pipe: Any, gen: Generator, batch: list[PlanItem], res: RunResult) -> None:
        from catimg import interrupts

        interrupts.check()  # a Ctrl-C that something swallowed stops the run here, between images
        self.on_event("batch", {"generator": gen.name, "images": len(batch)})
        try:
            images, secs = self._call(pipe, gen, batch)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # a pipeline error or out of memory
            if len(batch) > 1:  # find the culprit: each image on its own (its batch-mates are not faults)
                for it in batch:
                    self._run_batch(pipe, gen, [it], res)
                return
            self._retry(batch[0], gen, first_line(exc, typed=True, limit=200), exc, res)
            return
        for it, im in zip(batch, images, strict=True):
            if _is_black(im):
                self._retry(it, gen, "black or NaN image", None, res)
            else:
                self._save(it, gen, im, secs / len(batch), "ok", 1, "", res)

    def _retry(self, it: PlanItem, gen: Generator, err: str, fault: BaseException | None, res: RunResult) -> None:
        self.on_event("retry", {"item": it, "generator": gen.name, "error": err})
        target, status, note, saving = gen, "retried", f"first try failed ({err})", False
        if fault is not None and _is_oom(fault):
            saving = True
            note += "; retried with batch 1 and attention/VAE slicing"
        elif it.fallbacks:
            target, status = it.fallbacks[0], "fallback"
            note += f"; retried with the cheaper generator {target.name}"
        else:
            note += "; retried once"
        try:
            pipe = self._pipe(target, it)
            if saving:
                _memory_saving(pipe, True)
            try:
                images, secs = self._call(pipe, target, [it])
            finally:
                if saving:
                    _memory_saving(pipe, False)
            if _is_black(images[0]):
                raise RuntimeError("black or NaN image")
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            rec = ImageRecord(item=it, status="failed", generator=target, attempts=2,
                              error=f"{err}; retry: {first_line(exc, typed=True, limit=200)}", note=note)
            res.records.append(rec)
            self._record(rec)
            self.on_event("image", {"record": rec})
            return
        self._save(it, target, images[0], secs, status, 2, note, res)

    def _call(self, pipe: Any, gen: Generator, batch: list[PlanItem]) -> tuple[list[Any], float]:
        import torch

        scheduler = apply_scheduler(pipe, gen)
        pipe._catimg_scheduler_name = scheduler
        params = self._params.get(id(pipe))
        if params is None:
            params = set(inspect.signature(pipe.__call__).parameters)
            self._params[id(pipe)] = params
        dev = self.opt.device
        gdev = "cpu" if dev.kind != "cuda" or getattr(pipe, "_catimg_offload", False) else dev.torch_device
        generators = [torch.Generator(device=gdev).manual_seed(it.seed) for it in batch]
        kw: dict[str, Any] = {
            "prompt": [it.prompt for it in batch],
            "num_inference_steps": gen.steps,
            "guidance_scale": gen.guidance,
            "width": gen.width,
            "height": gen.height,
            "generator": generators,
            "output_type": "pil",
        }
        if any(it.negative for it in batch) and "negative_prompt" in params:
            kw["negative_prompt"] = [it.negative for it in batch]
        if "clean_caption" in params:
            kw["clean_caption"] = False
        total = gen.steps
        names = [it.prompt for it in batch]

        def step(n: int) -> None:
            self.on_event("step", {"generator": gen.name, "step": n, "steps": total, "prompts": names})

        if "callback_on_step_end" in params:
            def on_step_end(p: Any, i: int, t: Any, cb_kwargs: dict[str, Any]) -> dict[str, Any]:
                step(i + 1)
                return cb_kwargs

            kw["callback_on_step_end"] = on_step_end
        elif "callback" in params:
            kw["callback"] = lambda i, t, latents: step(i + 1)
            kw["callback_steps"] = 1
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = pipe(**kw)
        if dev.kind == "cuda":
            torch.cuda.synchronize()
        secs = time.perf_counter() - t0
        images = list(out.images)
        nsfw = getattr(out, "nsfw_content_detected", None)
        if nsfw:
            for i, flagged in enumerate(nsfw):
                if flagged:
                    import numpy as np
                    from PIL import Image

                    images[i] = Image.fromarray(np.zeros((gen.height, gen.width, 3), dtype="uint8"))
        return images, secs

    def _meta(self, it: PlanItem, gen: Generator, secs: float, status: str, attempts: int, note: str) -> dict[str, Any]:
        pipe_dt = resolve_dtype(gen, self.opt.device, self.opt.dtype)
        scheduler = None
        for k, p in self.cache.pipes.items():
            if k[0] == gen.model:
                scheduler = getattr(p, "_catimg_scheduler_name", None)
        return {
            "index": it.index,
            "image": it.image,
            "prompt": it.prompt,
            "negative_prompt": it.negative,
            "seed": it.seed,
            "base_seed": self.opt.base_seed,
            "images_per_prompt": self.opt.images_per_prompt,
            "generator": gen.name,
            "routed_generator": it.generator.name,
            "settings_hash": it.generator.settings_hash(),  # the routed generator's, with --width/--height
            "model": gen.model,
            "source": gen.source,
            "family": gen.family,
            "steps": gen.steps,
            "guidance": gen.guidance,
            "width": gen.width,
            "height": gen.height,
            "scheduler": scheduler or gen.scheduler,
            "dtype": pipe_dt,
            "device": self.opt.device.torch_device,
            "device_name": self.opt.device.name,
            "predicted_quality": it.predicted_quality,
            "predicted_seconds": it.predicted_seconds,
            "measured_seconds": round(secs, 4),
            "budget": self.opt.budget,
            "lambda": it.lam,
            "catimg_version": __version__,
            "router_version": self.opt.router_version,
            "status": status,
            "attempts": attempts,
            "note": note,
        }

    def _save(self, it: PlanItem, gen: Generator, image: Any, secs: float, status: str, attempts: int, note: str,
              res: RunResult) -> None:
        meta = self._meta(it, gen, secs, status, attempts, note)
        name = image_filename(it.index, it.prompt, gen.name, it.seed)
        path = save_image(self.opt.out_dir, name, image, meta if self.opt.metadata else None)
        rec = ImageRecord(item=it, status=status, generator=gen, file=path, seconds=secs, attempts=attempts, note=note)
        res.records.append(rec)
        meta["file"] = path.name
        meta["time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        append_manifest(self.opt.out_dir, meta)
        self.on_event("image", {"record": rec})

    def _record(self, rec: ImageRecord) -> None:
        meta = self._meta(rec.item, rec.generator, rec.seconds, rec.status, rec.attempts, rec.note)
        meta.update({"file": None, "error": rec.error, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        append_manifest(self.opt.out_dir, meta)


def _memory_saving(pipe: Any, on: bool) -> None:
    for name in (("enable_attention_slicing", "enable_vae_slicing") if on else
                 ("disable_attention_slicing", "disable_vae_slicing")):
        fn = getattr(pipe, name, None)
        if fn is not None:
            try:
                fn()
            except Exception:
                pass


_DONE = ("ok", "retried", "fallback")


def resume_todo(plan: list[PlanItem], opt: RunOptions,
                records: list[dict[str, Any]] | None = None) -> tuple[list[int], list[str]]:
    """Positions in ``plan`` still to make, and how this run differs from the manifest (one phrase each).

    An image is done when the manifest records it as saved, its file is on disk, and it is the same image: same
    prompt, image number, base seed, negative prompt, size and routed generator settings (the settings hash; the
    generator's name for records written before catimg recorded the hash). Position in the prompt file does not
    matter, so inserting or reordering prompts redoes nothing; a prompt given twice needs two records.
    """
    from collections import Counter

    from catimg.output import read_manifest

    folder = Path(opt.out_dir)
    recs = read_manifest(folder) if records is None else records
    by_hash: Counter[tuple[Any, ...]] = Counter()
    by_name: Counter[tuple[Any, ...]] = Counter()
    done_recs = []
    for r in recs:
        if r.get("status") not in _DONE or not r.get("file") or not (folder / str(r["file"])).is_file():
            continue
        done_recs.append(r)
        base = (str(r.get("prompt", "")), int(r.get("image") or 0), r.get("base_seed"),
                str(r.get("negative_prompt") or ""), r.get("width"), r.get("height"))
        if r.get("settings_hash"):
            by_hash[(*base, r["settings_hash"])] += 1
        else:
            by_name[(*base, r.get("routed_generator") or r.get("generator"))] += 1
    todo = []
    for pos, it in enumerate(plan):
        g = it.generator
        base = (it.prompt, it.image, opt.base_seed, it.negative or "", g.width, g.height)
        kh, kn = (*base, g.settings_hash()), (*base, g.name)
        if by_hash[kh] > 0:
            by_hash[kh] -= 1
        elif by_name[kn] > 0:
            by_name[kn] -= 1
        else:
            todo.append(pos)
    return todo, _differences(plan, opt, done_recs)


def _differences(plan: list[PlanItem], opt: RunOptions, recs: list[dict[str, Any]]) -> list[str]:
    """What of this run differs from the images recorded in the manifest, as short phrases."""
    if not recs or not plan:
        return []
    out: list[str] = []

    def then(values: set[Any]) -> str:
        return ", ".join(sorted(str(v) for v in values))

    seeds = {r.get("base_seed") for r in recs if r.get("base_seed") is not None}
    if seeds and opt.base_seed not in seeds:
        out.append(f"--seed {opt.base_seed} (manifest: {then(seeds)})")
    ns = {r.get("images_per_prompt") for r in recs if r.get("images_per_prompt")}
    if not ns:  # written before the count was recorded: the most images of one prompt
        per_prompt: dict[str, int] = {}
        for r in recs:
            per_prompt[str(r.get("prompt"))] = max(per_prompt.get(str(r.get("prompt")), 0), int(r.get("image") or 0) + 1)
        ns = {max(per_prompt.values())}
    n_now = opt.images_per_prompt or (max(it.image for it in plan) + 1)
    if n_now not in ns:
        out.append(f"--images-per-prompt {n_now} (manifest: {then(ns)})")
    sizes_then = {f"{r.get('width')}x{r.get('height')}" for r in recs}
    sizes_now = {f"{it.generator.width}x{it.generator.height}" for it in plan}
    if not sizes_now & sizes_then:
        out.append(f"size {then(sizes_now)} (manifest: {then(sizes_then)})")
    budgets = {r.get("budget") for r in recs if r.get("budget")}
    if opt.budget and budgets and opt.budget not in budgets:
        out.append(f"budget {opt.budget} (manifest: {then(budgets)})")
    negs = {str(r.get("negative_prompt") or "") for r in recs}
    if not {it.negative or "" for it in plan} & negs:
        out.append("negative prompt")
    order_then: list[str] = [str(r.get("prompt")) for r in sorted(recs, key=lambda r: int(r.get("index") or 0))]
    order_then = list(dict.fromkeys(order_then))
    order_now = list(dict.fromkeys(it.prompt for it in plan))
    new = [p for p in order_now if p not in set(order_then)]
    gone = [p for p in order_then if p not in set(order_now)]
    if new:
        out.append(f"{len(new)} prompt(s) not in the manifest")
    if gone:
        out.append(f"{len(gone)} prompt(s) of the manifest not in this run")
    common_then = [p for p in order_then if p in set(order_now)]
    common_now = [p for p in order_now if p in set(order_then)]
    if common_then != common_now:
        out.append("prompts in another order")
    routed_then: dict[str, set[str]] = {}
    for r in recs:
        routed_then.setdefault(str(r.get("prompt")), set()).add(str(r.get("routed_generator") or r.get("generator")))
    moved = {it.prompt for it in plan if it.prompt in routed_then and it.generator.name not in routed_then[it.prompt]}
    if moved:
        out.append(f"{len(moved)} prompt(s) now routed to another generator")
    return out


def run_plan(plan: list[PlanItem], options: RunOptions, on_event: Event | None = None) -> RunResult:
    """Make every image of ``plan``; see :class:`Executor`."""
    options.out_dir = Path(options.out_dir)
    return Executor(options, on_event).run(plan)
