"""Throughput of the Ray engine (N CPU workers) against the local engine on tiny real pipelines.

    python -m catimg.benchmarks.ray_throughput [--images 48] [--workers 2] [--steps 4] [--size 64] [--repeat 1]

Builds two tiny real diffusers pipelines (two models, random weights), plans ``--images`` images over them (2/3 to
one, 1/3 to the other, interleaved as routed prompts are), then makes them

* with the local engine (``catimg.generation.generate.run_plan``: this process, torch on all cores), and
* with the Ray engine (``catimg.generation.ray_engine.run_plan_ray``: a local Ray instance, ``--workers`` actors of one CPU;
  the scheduler is given the load times the local run measured),

and prints for each (medians over ``--repeat`` runs, and the best run): wall seconds (Ray: including starting Ray and its workers, and separately without),
images per second, the steady-state rate (first to last image), and model loads. The PNGs of both runs are compared pixel for pixel.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from catimg.benchmarks import tiny_module


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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    args = ap.parse_args(argv)

    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import ray
    from PIL import Image

    from catimg.device import cpu_device
    from catimg.generation.events import Event, ImageDone
    from catimg.generation.generate import RunOptions, run_plan
    from catimg.generation.ray_engine import RayRun, run_plan_ray

    with tempfile.TemporaryDirectory(prefix="catimg-ray-bench-") as tmp:
        root = Path(tmp)
        plan = _plan(root, args.images, args.steps, args.size)
        stamps: list[float] = []

        def on_event(event: Event) -> None:
            if isinstance(event, ImageDone):
                stamps.append(time.perf_counter())

        def steady() -> float:
            rate = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
            stamps.clear()
            return rate

        local_rate: list[float] = []
        ray_rate: list[float] = []
        local_t: list[float] = []
        ray_t: list[float] = []
        ray_run_t: list[float] = []
        loads: dict[str, int] = {}
        for rep in range(args.repeat):
            t0 = time.perf_counter()
            res = run_plan(plan, RunOptions(out_dir=root / f"local{rep}", device=cpu_device()), on_event)
            local_t.append(time.perf_counter() - t0)
            local_rate.append(steady())
            loads["local"] = len(res.loads)
            measured_loads = dict(res.load_seconds)  # what `catimg bench` would give the scheduler
            assert len(res.made) == len(plan)

            t0 = time.perf_counter()
            ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, logging_level=40)
            stats = RayRun()
            t1 = time.perf_counter()
            res = run_plan_ray(
                plan,
                RunOptions(out_dir=root / f"ray{rep}", device=cpu_device()),
                on_event,
                workers=args.workers,
                threads=args.threads,
                load_seconds=measured_loads,
                stats=stats,
            )
            t2 = time.perf_counter()
            ray.shutdown()
            ray_t.append(t2 - t0)
            ray_run_t.append(t2 - t1)
            ray_rate.append(steady())
            loads["ray"] = len(res.loads)
            assert len(res.made) == len(plan)

        same = 0
        for p in sorted((root / "local0").glob("*.png")):
            with Image.open(p) as x, Image.open(root / "ray0" / p.name) as y:
                same += int(np.array_equal(np.asarray(x), np.asarray(y)))
        n = len(plan)
        lt, rt, rr = statistics.median(local_t), statistics.median(ray_t), statistics.median(ray_run_t)
        import torch

        wt = args.threads if args.threads is not None else torch.get_num_threads()
        print(
            f"images: {n} ({args.size}x{args.size}, {args.steps} steps, 2 tiny models), cores: {os.cpu_count()}, "
            f"repeats: {args.repeat}, torch threads: local {torch.get_num_threads()}, each Ray worker {wt}"
        )
        print(f"local engine:           {lt:7.2f} s  {n / lt:6.2f} images/s  loads {loads['local']}")
        print(
            f"ray engine ({args.workers} workers):  {rt:7.2f} s  {n / rt:6.2f} images/s  loads {loads['ray']}  "
            "(starting Ray included)"
        )
        print(
            f"ray engine, Ray running: {rr:7.2f} s  {n / rr:6.2f} images/s  (workers' start and imports included)"
        )
        print(
            f"steady state (first to last image, loads and starts excluded): local "
            f"{statistics.median(local_rate):.2f} images/s, ray {statistics.median(ray_rate):.2f} images/s"
        )
        if args.repeat > 1:
            print(
                f"best of {args.repeat} (least disturbed by other load): local {min(local_t):.2f} s, "
                f"ray {min(ray_t):.2f} s with Ray start, {min(ray_run_t):.2f} s with Ray running"
            )
        print(f"ray / local wall time: {rt / lt:.2f} (with Ray start), {rr / lt:.2f} (Ray already running)")
        print(f"identical pixels: {same}/{n}")


if __name__ == "__main__":
    main()
