"""Throughput of the Ray engine (N CPU workers) against the local engine on tiny real pipelines.

    python -m catimg.benchmarks.ray_throughput [--images 48] [--workers 2] [--steps 4] [--size 64]
        [--repeat 1]

Builds two tiny real diffusers pipelines (two models, random weights), plans ``--images`` images over them
(2/3 to one, 1/3 to the other, interleaved as routed prompts are), then makes them

* with the local engine (``catimg.generation.generate.run_plan``: this process, torch on all cores), and
* with the Ray engine (``catimg.generation.ray_engine.run_plan_ray``: a local Ray instance, ``--workers``
  actors of one CPU; the scheduler is given the load times the local run measured),

and prints for each (medians over ``--repeat`` runs, and the best run): wall seconds (Ray: including starting
Ray and its workers, and separately without), images per second, the steady-state rate (first to last image),
and model loads. The PNGs of both runs are compared pixel for pixel.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catimg.benchmarks import tiny_module

if TYPE_CHECKING:
    from catimg.generation.events import Event


def _plan(root: Path, images: int, steps: int, size: int) -> list[Any]:
    from catimg.config import Generator
    from catimg.generation.generate import build_plan

    tiny = tiny_module()
    a = tiny.build_tiny_sd(root / "tiny-a", seed=0)
    b = tiny.build_tiny_sd(root / "tiny-b", seed=1)
    ga = Generator(
        name="tiny-a",
        model="tiny-a",
        source=str(a),
        family="sd1",
        steps=steps,
        guidance=2.0,
        width=size,
        height=size,
    )
    gb = Generator(
        name="tiny-b",
        model="tiny-b",
        source=str(b),
        family="sd1",
        steps=steps,
        guidance=2.0,
        width=size,
        height=size,
    )
    routed = [
        (i, f"a tiny test image number {i}", ga if i % 3 else gb, None, 1.0, None) for i in range(images)
    ]
    return build_plan(routed, seed=11)


@dataclass
class _Timings:
    """What the repeats measured, per engine: wall seconds, steady-state images per second, model loads."""

    local: list[float] = field(default_factory=list)
    ray: list[float] = field(default_factory=list)  # with starting Ray
    ray_running: list[float] = field(default_factory=list)  # Ray already started
    local_rate: list[float] = field(default_factory=list)
    ray_rate: list[float] = field(default_factory=list)
    loads: dict[str, int] = field(default_factory=dict)


class _Stamps:
    """Clock readings at every finished image, for the steady-state rate (first to last image)."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_event(self, event: Event) -> None:
        from catimg.generation.events import ImageDone

        if isinstance(event, ImageDone):
            self.stamps.append(time.perf_counter())

    def steady(self) -> float:
        """Images per second between the first and the last image since the previous call."""
        st = self.stamps
        rate = (len(st) - 1) / (st[-1] - st[0]) if len(st) > 1 else 0.0
        st.clear()
        return rate


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per Ray worker (default: the local engine's count, for identical pixels)",
    )
    return ap.parse_args(argv)


def _repeat(args: argparse.Namespace, root: Path, plan: list[Any], rep: int, t: _Timings) -> None:
    """One local run, then one Ray run (starting and stopping Ray) of ``plan``, timed into ``t``."""
    import ray

    from catimg.device import cpu_device
    from catimg.generation.generate import RunOptions, run_plan
    from catimg.generation.ray_engine import RayRun, run_plan_ray

    stamps = _Stamps()
    t0 = time.perf_counter()
    res = run_plan(plan, RunOptions(out_dir=root / f"local{rep}", device=cpu_device()), stamps.on_event)
    t.local.append(time.perf_counter() - t0)
    t.local_rate.append(stamps.steady())
    t.loads["local"] = len(res.loads)
    measured_loads = dict(res.load_seconds)  # what `catimg bench` would give the scheduler
    assert len(res.made) == len(plan)

    t0 = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, logging_level=40)
    t1 = time.perf_counter()
    res = run_plan_ray(
        plan,
        RunOptions(out_dir=root / f"ray{rep}", device=cpu_device()),
        stamps.on_event,
        workers=args.workers,
        threads=args.threads,
        load_seconds=measured_loads,
        stats=RayRun(),
    )
    t2 = time.perf_counter()
    ray.shutdown()
    t.ray.append(t2 - t0)
    t.ray_running.append(t2 - t1)
    t.ray_rate.append(stamps.steady())
    t.loads["ray"] = len(res.loads)
    assert len(res.made) == len(plan)


def _same_pixels(a: Path, b: Path) -> int:
    """How many PNGs of folder ``a`` have identical pixels in the file of the same name in ``b``."""
    import numpy as np
    from PIL import Image

    same = 0
    for p in sorted(a.glob("*.png")):
        with Image.open(p) as x, Image.open(b / p.name) as y:
            same += int(np.array_equal(np.asarray(x), np.asarray(y)))
    return same


def _report(args: argparse.Namespace, n: int, t: _Timings, same: int) -> None:
    import os

    import torch

    lt, rt, rr = statistics.median(t.local), statistics.median(t.ray), statistics.median(t.ray_running)
    wt = args.threads if args.threads is not None else torch.get_num_threads()
    print(
        f"images: {n} ({args.size}x{args.size}, {args.steps} steps, 2 tiny models), "
        f"cores: {os.cpu_count()}, repeats: {args.repeat}, "
        f"torch threads: local {torch.get_num_threads()}, each Ray worker {wt}"
    )
    print(f"local engine:           {lt:7.2f} s  {n / lt:6.2f} images/s  loads {t.loads['local']}")
    print(
        f"ray engine ({args.workers} workers):  {rt:7.2f} s  {n / rt:6.2f} images/s  "
        f"loads {t.loads['ray']}  (starting Ray included)"
    )
    print(
        f"ray engine, Ray running: {rr:7.2f} s  {n / rr:6.2f} images/s  (workers' start and imports included)"
    )
    print(
        f"steady state (first to last image, loads and starts excluded): local "
        f"{statistics.median(t.local_rate):.2f} images/s, ray {statistics.median(t.ray_rate):.2f} images/s"
    )
    if args.repeat > 1:
        print(
            f"best of {args.repeat} (least disturbed by other load): local {min(t.local):.2f} s, "
            f"ray {min(t.ray):.2f} s with Ray start, {min(t.ray_running):.2f} s with Ray running"
        )
    print(f"ray / local wall time: {rt / lt:.2f} (with Ray start), {rr / lt:.2f} (Ray already running)")
    print(f"identical pixels: {same}/{n}")


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="catimg-ray-bench-") as tmp:
        root = Path(tmp)
        plan = _plan(root, args.images, args.steps, args.size)
        timings = _Timings()
        for rep in range(args.repeat):
            _repeat(args, root, plan, rep, timings)
        _report(args, len(plan), timings, _same_pixels(root / "local0", root / "ray0"))


if __name__ == "__main__":
    main()
