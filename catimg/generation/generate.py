"""Planning a run and the local engine: the images to make, then made in this process.

Planning: :func:`build_plan` / :func:`plan_from_routing` turn routed prompts into one :class:`PlanItem` per
image (prompt, generator, seed, predictions, cheaper fallbacks); image ``k`` of prompt ``i`` gets seed
``seed + i * images_per_prompt + k``. :func:`run_settings` applies the --width/--height/--dtype overrides.

The local engine (:func:`run_plan`, :class:`Executor`; :class:`LocalEngine` is it as an
:class:`~catimg.generation.execution.Engine`, the Protocol the Ray engine satisfies too) makes a plan's images
in this process with the execution core it shares with the Ray engine (:mod:`catimg.generation.execution`,
which also defines :class:`RunOptions`, :class:`RunResult` and :class:`ImageRecord`, re-exported here): models
in order of first use, the generators (step variants) of a model one after another, prompts that share a
generator in batches (``batch_size`` or by device memory), each pipeline loaded once. Each image gets its own
``torch.Generator`` seeded with its seed, so an image does not depend on its batch-mates: same prompt, seed,
generator and device give the same image.

Faults: a batch that raises is retried image by image; an image that fails (an exception, out of memory, a NaN
or black image) is retried once, with a memory-saving setting (batch of one, attention and VAE slicing) when
memory ran out, else with the next cheaper generator the plan allows (``PlanItem.fallbacks``), else as a batch
of one. What happened is recorded in the manifest (``status``: ok, retried, fallback, failed). Ctrl-C stops
after the image in flight, keeps everything written, and returns with ``interrupted = True``. Disk errors stop
the run (GenerationError) with everything saved so far recorded. Nothing here prints: progress goes to an
``on_event(event)`` callback (the typed events of :mod:`catimg.generation.events`) that the CLI renders;
``on_image`` is called with each :class:`ImageRecord` once it is recorded (per-image work such as scoring).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from catimg.errors import InputError
from catimg.generation.events import OnEvent, OnImage, RunEnded, RunStarted, no_events
from catimg.generation.execution import (
    BatchRunner,
    ImageRecord,
    Job,
    Pipelines,
    Recorder,
    RunOptions,
    RunResult,
    auto_batch_size,
    batch_size,
    batches,
    group_plan,
    start_run,
)

if TYPE_CHECKING:
    from catimg.config import Generator
    from catimg.costs.model import Cost
    from catimg.routing.route import RoutingResult

__all__ = [
    "MAX_SEED",
    "Executor",
    "ImageRecord",
    "LocalEngine",
    "PlanItem",
    "RunOptions",
    "RunResult",
    "auto_batch_size",
    "build_plan",
    "check_seed",
    "check_size",
    "plan_from_routing",
    "run_plan",
    "run_settings",
]

MAX_SEED = 2**32 - 1


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
    costs: Mapping[str, Cost] | None = None,
) -> list[PlanItem]:
    """Images to make from routed prompts: (prompt index, prompt, generator, predicted quality, predicted
    cost, λ).

    Image ``k`` of prompt ``i`` gets seed ``seed + i * images_per_prompt + k``. ``negative`` (the --negative
    option) overrides each generator's default negative prompt. ``costs``: each generator's
    :class:`~catimg.costs.model.Cost` (whether it runs offloaded, its peak memory), by name.
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
                    index=index,
                    prompt=prompt,
                    generator=gen,
                    seed=seed + index * images_per_prompt + k,
                    image=k,
                    negative=gen.negative_prompt if negative is None else negative,
                    predicted_quality=q,
                    predicted_seconds=c,
                    lam=lam,
                    fallbacks=(fallbacks or {}).get(index, ()),
                    offload=cost is not None and cost.offload,
                    peak_memory_gb=cost.peak_memory_gb if cost is not None else None,
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
    """:func:`build_plan` from a RoutingResult; fallbacks are the cheaper routable generators, best value
    first."""
    width, height = size
    gens = {g.name: _resize(g, width, height) for g in result.generators}
    routed = []
    fallbacks: dict[int, tuple[Generator, ...]] = {}
    for r in result.routes:
        row = r.row(r.choice)
        routed.append(
            (r.index, r.prompt, gens[r.choice], row.predicted_quality, row.cost_seconds, result.lam)
        )
        cheaper = [
            x
            for x in r.rows
            if x.name != r.choice
            and x.status in ("routable", "chosen")
            and x.cost_seconds < row.cost_seconds
            and x.value is not None
        ]
        cheaper.sort(key=lambda x: (-(x.value or 0.0), x.cost_seconds))
        fallbacks[r.index] = tuple(gens[x.name] for x in cheaper)
    return build_plan(routed, seed, images_per_prompt, negative, fallbacks, result.costs)


def run_settings(
    gen: Generator, width: int | None = None, height: int | None = None, dtype: str | None = None
) -> Generator:
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


class Executor:
    """The local engine: a plan made in this process by the shared execution core; see the module
    docstring."""

    def __init__(
        self, options: RunOptions, on_event: OnEvent | None = None, on_image: OnImage | None = None
    ) -> None:
        self.opt = options
        self.on_event = on_event or no_events
        self.on_image = on_image
        self.pipes = Pipelines(options, self.on_event)

    def run(self, plan: Sequence[PlanItem]) -> RunResult:
        t0 = time.perf_counter()
        opt, todo, res = start_run(plan, self.opt)
        self.on_event(RunStarted(images=len(todo), skipped=res.skipped, differences=tuple(res.differences)))
        runner = BatchRunner(
            opt, self.pipes, Recorder(opt, self.on_event, res, self.on_image).save, self.on_event
        )
        cache = self.pipes.cache
        try:
            for gen, positions in group_plan(plan, todo):
                first = plan[positions[0]]
                loaded = self.pipes.get(gen, first)
                for batch in batches(positions, batch_size(opt, opt.device, first)):
                    runner.run_batch(loaded, gen, [Job(p, plan[p]) for p in batch])
        except KeyboardInterrupt:
            res.interrupted = True
        finally:
            res.loads = list(cache.loads)
            res.load_seconds = dict(cache.load_seconds)
            res.wall_seconds = time.perf_counter() - t0
            cache.release_all()
        self.on_event(RunEnded(interrupted=res.interrupted))
        return res


def run_plan(
    plan: Sequence[PlanItem],
    options: RunOptions,
    on_event: OnEvent | None = None,
    on_image: OnImage | None = None,
) -> RunResult:
    """Make every image of ``plan`` in this process; see :class:`Executor`."""
    return Executor(options, on_event, on_image).run(plan)


@dataclass(frozen=True)
class LocalEngine:
    """The local engine as an :class:`~catimg.generation.execution.Engine` (``--engine local``):
    :func:`run_plan`."""

    def run(
        self,
        plan: Sequence[PlanItem],
        options: RunOptions,
        on_event: OnEvent | None = None,
        on_image: OnImage | None = None,
    ) -> RunResult:
        return run_plan(plan, options, on_event, on_image)
