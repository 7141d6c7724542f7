"""Spreading a routed plan over K workers (GPUs): who loads which model, who takes which chunk, and how long.

A plan is summarised per generator as :class:`Work` (images, predicted seconds per image, load seconds, and
the model whose weights it uses: step variants of one model share a loaded pipeline). Each generator's images
are cut into chunks of at most ``chunk_size`` images; a worker holds one model at a time and loading another
costs that model's load seconds.

Policy (:class:`CostScheduler`, used by the Ray engine and by the predictor alike):

1. **Cost-proportional assignment.** Workers are given to models in proportion to each model's predicted work
   (images × seconds per image, summed over its generators) by largest remainders, at least one per model
   while workers last, and never more than a model has chunks.
2. **Own queue first.** A worker takes the next chunk of its model (the generators of a model one after
   another).
3. **Work stealing.** When its model's queue is empty it switches to the model whose queue would take longest
   to drain with the workers serving it now (queued work / (serving + 1)); it switches only when that time is
   longer than the model's load time (or when nobody serves that model), otherwise it retires. So loads stay
   few.

Baseline (:func:`simulate_round_robin`): chunks in plan order (each generator's chunks placed where their
first prompt falls in the prompt file, so generators interleave as routed prompts do), dealt to workers in
turn whatever model they hold; a worker loads the chunk's model whenever it differs from the one it holds.

:func:`simulate` plays a policy with the predicted costs and returns a :class:`Prediction`: makespan, GPU
utilisation (generation seconds / (K × makespan)), loads, and the ideal bound total work / K.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from catimg.errors import InputError

if TYPE_CHECKING:
    from catimg.costs.model import Cost


@dataclass(frozen=True)
class Work:
    """One generator's share of a plan."""

    generator: str
    model: str
    images: int
    seconds: float  # predicted seconds per image once loaded
    load_seconds: float  # one-off time to load the model's pipeline

    @property
    def total_seconds(self) -> float:
        return self.images * self.seconds


@dataclass(frozen=True)
class Chunk:
    """Up to ``chunk_size`` images of one generator; ``items`` are positions in the caller's plan."""

    id: int
    generator: str
    model: str
    items: tuple[int, ...]
    seconds: float  # predicted seconds for the whole chunk
    position: float = 0.0  # where the chunk's first image falls in the plan (0..1), for round-robin order

    @property
    def size(self) -> int:
        return len(self.items)


def make_chunks(
    work: Sequence[Work],
    chunk_size: int,
    items: dict[str, Sequence[int]] | None = None,
    total: int | None = None,
) -> list[Chunk]:
    """Cut each generator's images into chunks of at most ``chunk_size``.

    ``items`` maps a generator to the plan positions of its images (default ``0 .. images-1``); ``total`` is
    the plan length used to place chunks in plan order (default: chunks of a generator spread evenly over the
    plan).
    """
    if chunk_size < 1:
        raise InputError(f"--chunk-size {chunk_size}: must be 1 or more")
    chunks: list[Chunk] = []
    for w in work:
        its = list(items[w.generator]) if items is not None else list(range(w.images))
        for start in range(0, len(its), chunk_size):
            part = tuple(its[start : start + chunk_size])
            if items is not None and total:
                pos = part[0] / total
            else:
                pos = start / max(1, len(its))
            chunks.append(Chunk(len(chunks), w.generator, w.model, part, len(part) * w.seconds, pos))
    return chunks


def models_of(work: Iterable[Work]) -> dict[str, list[Work]]:
    out: dict[str, list[Work]] = {}
    for w in work:
        out.setdefault(w.model, []).append(w)
    return out


def assign_workers(
    work: Sequence[Work], workers: int, chunks: Sequence[Chunk] | None = None
) -> dict[str, int]:
    """Workers per model, proportional to predicted work (largest remainders), ≥ 1 each while workers last.

    Never more workers on a model than it has chunks (when ``chunks`` is given). Models with no work get none.
    Ties go to the model with more work, then the name.
    """
    if workers < 1:
        raise InputError(f"--gpus {workers}: must be 1 or more")
    per_model: dict[str, float] = {}
    for w in work:
        if w.images > 0:
            per_model[w.model] = per_model.get(w.model, 0.0) + w.total_seconds
    cap: dict[str, int] = {m: 10**9 for m in per_model}
    if chunks is not None:
        cap = {m: sum(1 for c in chunks if c.model == m) for m in per_model}
    order = sorted(per_model, key=lambda m: (-per_model[m], m))
    out = {m: 0 for m in order}
    if not order:
        return out
    # one each, biggest first, while workers last
    left = workers
    for m in order:
        if left == 0:
            break
        out[m] = 1
        left -= 1
    total = sum(per_model.values())
    if left > 0:
        if total <= 0:
            quotas = {m: workers / len(order) for m in order}
        else:
            quotas = {m: workers * per_model[m] / total for m in order}
        # raise each model toward its quota (floor first, then largest remainders)
        for m in order:
            want = min(cap[m], max(out[m], math.floor(quotas[m])))
            add = min(left, want - out[m])
            out[m] += add
            left -= add
        while left > 0:
            room = [m for m in order if out[m] < cap[m]]
            if not room:
                break
            m = max(room, key=lambda k: (quotas[k] - out[k], per_model[k], k))
            out[m] += 1
            left -= 1
    return out


@dataclass
class CostScheduler:
    """The live policy (see module docstring): hand out chunks to workers, re-queue chunks of dead workers."""

    work: Sequence[Work]
    workers: int
    chunks: Sequence[Chunk]
    load_seconds: dict[str, float] = field(default_factory=dict)
    queues: dict[str, deque[Chunk]] = field(default_factory=dict)
    assignment: dict[int, str] = field(default_factory=dict)  # initial model per worker
    serving: dict[int, str | None] = field(default_factory=dict)  # model each live worker holds / is assigned
    retired: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        by_model = models_of(self.work)
        for m, ws in by_model.items():
            self.load_seconds[m] = max(w.load_seconds for w in ws)
        gen_order = {w.generator: i for i, w in enumerate(self.work)}
        for m in by_model:
            self.queues[m] = deque(
                sorted(
                    (c for c in self.chunks if c.model == m),
                    key=lambda c: (gen_order.get(c.generator, 0), c.id),
                )
            )
        counts = assign_workers(self.work, self.workers, self.chunks)
        w = 0
        for m, n in counts.items():
            for _ in range(n):
                self.assignment[w] = m
                w += 1
        for i in range(self.workers):
            self.serving[i] = self.assignment.get(i)

    # ------------------------------------------------------------------------------------------------ queries
    def queued_seconds(self, model: str) -> float:
        return sum(c.seconds for c in self.queues.get(model, ()))

    @property
    def pending(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def _serving_count(self, model: str, exclude: int | None = None) -> int:
        return sum(
            1 for w, m in self.serving.items() if m == model and w != exclude and w not in self.retired
        )

    # ------------------------------------------------------------------------------------------------ actions
    def next(self, worker: int, held: str | None) -> Chunk | None:
        """The next chunk for ``worker`` holding ``held`` (None: nothing worth doing, the worker may
        retire)."""
        own = held if held is not None else self.serving.get(worker)
        if own is not None and self.queues.get(own):
            self.serving[worker] = own
            return self.queues[own].popleft()
        best: tuple[float, str] | None = None
        for m, q in self.queues.items():
            if not q:
                continue
            n = self._serving_count(m, exclude=worker)
            drain = self.queued_seconds(m) / (n + 1)
            worth = n == 0 or drain > self.load_seconds.get(m, 0.0)
            if worth and (best is None or (drain, m) > best):
                best = (drain, m)
        if best is None:
            self.serving[worker] = None
            return None
        m = best[1]
        self.serving[worker] = m
        return self.queues[m].popleft()

    def requeue(self, chunk: Chunk | Iterable[Chunk]) -> None:
        """Put chunks (of a worker that died) back at the front of their model's queue."""
        chunks = [chunk] if isinstance(chunk, Chunk) else list(chunk)
        for c in reversed(chunks):
            self.queues.setdefault(c.model, deque()).appendleft(c)

    def retire(self, worker: int) -> None:
        """A worker is gone (died or was shut down): it serves nothing any more."""
        self.retired.add(worker)
        self.serving[worker] = None

    def drop_model(self, model: str) -> list[Chunk]:
        """Remove a model's queued chunks (it cannot load anywhere); returns them for re-planning."""
        q = self.queues.pop(model, deque())
        for w, m in list(self.serving.items()):
            if m == model:
                self.serving[w] = None
        return list(q)


# ------------------------------------------------------------------------------------------------ prediction


@dataclass(frozen=True)
class Prediction:
    policy: str
    workers: int
    makespan: float  # seconds until the last image is made
    busy_seconds: float  # seconds spent generating, all workers
    load_seconds: float  # seconds spent loading, all workers
    loads: int
    chunks: int
    ideal: float  # total predicted work / workers (no loads, perfect balance)
    per_worker: tuple[float, ...]  # finish time of each worker

    @property
    def utilisation(self) -> float:
        """Share of K × makespan GPU-seconds spent generating images."""
        return self.busy_seconds / (self.workers * self.makespan) if self.makespan > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "workers": self.workers,
            "makespan_seconds": self.makespan,
            "utilisation": self.utilisation,
            "generation_seconds": self.busy_seconds,
            "load_seconds": self.load_seconds,
            "loads": self.loads,
            "chunks": self.chunks,
            "ideal_seconds": self.ideal,
        }


def _prediction(
    policy: str,
    workers: int,
    finish: list[float],
    busy: float,
    loading: float,
    loads: int,
    chunks: int,
    work: Sequence[Work],
) -> Prediction:
    total = sum(w.total_seconds for w in work)
    return Prediction(
        policy,
        workers,
        max(finish, default=0.0),
        busy,
        loading,
        loads,
        chunks,
        total / workers,
        tuple(finish),
    )


def simulate_cost(
    work: Sequence[Work], workers: int, chunk_size: int = 16, chunks: Sequence[Chunk] | None = None
) -> Prediction:
    """Play :class:`CostScheduler` with the predicted costs (event order: earliest free worker, then lowest
    id)."""
    chunks = list(chunks) if chunks is not None else make_chunks(work, chunk_size)
    sched = CostScheduler(work, workers, chunks)
    held: dict[int, str | None] = {w: None for w in range(workers)}
    finish = [0.0] * workers
    busy = loading = 0.0
    loads = 0
    heap = [(0.0, w) for w in range(workers)]
    heapq.heapify(heap)
    while heap:
        t, w = heapq.heappop(heap)
        c = sched.next(w, held[w] if held[w] is not None else sched.assignment.get(w))
        if c is None:
            finish[w] = t if held[w] is not None else 0.0
            sched.retire(w)
            continue
        if held[w] != c.model:
            t += sched.load_seconds[c.model]
            loading += sched.load_seconds[c.model]
            loads += 1
            held[w] = c.model
        t += c.seconds
        busy += c.seconds
        finish[w] = t
        heapq.heappush(heap, (t, w))
    return _prediction(
        "cost-proportional + stealing", workers, finish, busy, loading, loads, len(chunks), work
    )


def simulate_round_robin(
    work: Sequence[Work], workers: int, chunk_size: int = 16, chunks: Sequence[Chunk] | None = None
) -> Prediction:
    """Naive baseline: chunks in plan order dealt to workers in turn, loading whenever the model differs."""
    if workers < 1:
        raise InputError(f"--gpus {workers}: must be 1 or more")
    chunks = list(chunks) if chunks is not None else make_chunks(work, chunk_size)
    load_s = {m: max(w.load_seconds for w in ws) for m, ws in models_of(work).items()}
    ordered = sorted(chunks, key=lambda c: (c.position, c.id))
    held: list[str | None] = [None] * workers
    finish = [0.0] * workers
    busy = loading = 0.0
    loads = 0
    for i, c in enumerate(ordered):
        w = i % workers
        if held[w] != c.model:
            finish[w] += load_s[c.model]
            loading += load_s[c.model]
            loads += 1
            held[w] = c.model
        finish[w] += c.seconds
        busy += c.seconds
    return _prediction("round-robin", workers, finish, busy, loading, loads, len(chunks), work)


def simulate(work: Sequence[Work], workers: int, policy: str = "cost", chunk_size: int = 16) -> Prediction:
    if policy == "cost":
        return simulate_cost(work, workers, chunk_size)
    if policy in ("round-robin", "rr"):
        return simulate_round_robin(work, workers, chunk_size)
    raise InputError(f'policy "{policy}": use "cost" or "round-robin"')


# --------------------------------------------------------------------------------------------- from a routing


def work_from_shares(
    shares: dict[str, int], costs: Mapping[str, Cost], models: dict[str, str], scale_to: int | None = None
) -> list[Work]:
    """Per-generator :class:`Work` from image counts (optionally rescaled to ``scale_to`` images in all).

    ``costs`` maps a generator to a :class:`catimg.costs.model.Cost` (``seconds``, ``load_seconds``);
    ``models`` maps it to its model name. Rescaled counts use largest remainders so they add up to
    ``scale_to`` exactly.
    """
    names = [g for g in shares if shares[g] > 0]
    counts = {g: shares[g] for g in names}
    if scale_to is not None:
        total = sum(counts.values())
        if total <= 0:
            raise InputError("the plan has no images to scale")
        exact = {g: scale_to * counts[g] / total for g in names}
        counts = {g: math.floor(exact[g]) for g in names}
        left = scale_to - sum(counts.values())
        for g in sorted(names, key=lambda k: (-(exact[k] - counts[k]), k))[:left]:
            counts[g] += 1
    return [
        Work(g, models[g], counts[g], float(costs[g].seconds), float(costs[g].load_seconds)) for g in names
    ]


# ----------------------------------------------------------------------------------------------- cluster plan

#: GPU memory (GB) of the cards a user may size a cluster with (``catimg plan --gpu NAME``).
GPU_MEMORY_GB: dict[str, float] = {
    "h200": 141.0,
    "h100": 80.0,
    "gh200": 96.0,
    "a100": 80.0,
    "l40s": 48.0,
    "l40": 48.0,
    "l4": 24.0,
    "a10g": 24.0,
    "a10": 24.0,
    "a6000": 48.0,
    "4090": 24.0,
    "4080": 16.0,
    "3090": 24.0,
    "v100": 32.0,
    "t4": 16.0,
}


def hypothetical_gpu(name: str) -> Any:
    """A :class:`catimg.device.DeviceInfo` for a GPU the user does not have here (costs are estimated for
    it)."""
    import re

    from catimg.device import DeviceInfo
    from catimg.errors import did_you_mean

    key = name.strip().lower().replace("nvidia", "").strip()
    match = next(
        (k for k in sorted(GPU_MEMORY_GB, key=len, reverse=True) if re.search(rf"(^|\W){k}(\W|$)", key)), None
    )
    if match is None:
        raise InputError(
            f'--gpu "{name}" is not a GPU catimg knows{did_you_mean(key, list(GPU_MEMORY_GB))}; '
            f"use one of {', '.join(sorted(GPU_MEMORY_GB))}"
        )
    mem = GPU_MEMORY_GB[match]
    return DeviceInfo(
        kind="cuda",
        index=0,
        name=f"NVIDIA {name.strip().upper()}",
        total_memory_gb=mem,
        free_memory_gb=mem,
        capability=None,
        bf16=True,
        torch_device="cuda:0",
    )


@dataclass(frozen=True)
class ClusterPlan:
    """A routed plan sized for clusters: per-generator work and predictions for each K under both policies."""

    work: tuple[Work, ...]
    prompts: int  # prompts the prediction is for
    routed_prompts: int  # prompts actually routed (the shares come from these)
    device: str
    chunk_size: int
    predictions: dict[int, tuple[Prediction, Prediction]]  # K -> (cost policy, round-robin)

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompts": self.prompts,
            "routed_prompts": self.routed_prompts,
            "device": self.device,
            "chunk_size": self.chunk_size,
            "generators": [
                {
                    "generator": w.generator,
                    "model": w.model,
                    "images": w.images,
                    "seconds_per_image": w.seconds,
                    "load_seconds": w.load_seconds,
                    "gpu_hours": w.total_seconds / 3600.0,
                }
                for w in self.work
            ],
            "predictions": [
                {
                    "gpus": k,
                    "cost": c.to_dict(),
                    "round_robin": r.to_dict(),
                    "speedup": (r.makespan / c.makespan) if c.makespan else None,
                }
                for k, (c, r) in sorted(self.predictions.items())
            ],
        }


def cluster_plan(
    shares: dict[str, int],
    costs: Mapping[str, Cost],
    models: dict[str, str],
    gpus: Sequence[int],
    scale_to: int | None = None,
    chunk_size: int = 16,
    device: str = "",
    images_per_prompt: int = 1,
) -> ClusterPlan:
    """Predict makespan and utilisation on each K in ``gpus`` for the routed ``shares`` (prompts per
    generator)."""
    routed = sum(shares.values())
    target = scale_to if scale_to is not None else routed
    imgs = {g: n * images_per_prompt for g, n in shares.items()}
    work = work_from_shares(imgs, costs, models, scale_to=target * images_per_prompt)
    preds = {}
    for k in gpus:
        preds[int(k)] = (
            simulate_cost(work, int(k), chunk_size),
            simulate_round_robin(work, int(k), chunk_size),
        )
    return ClusterPlan(tuple(work), target, routed, device, chunk_size, preds)
