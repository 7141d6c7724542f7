"""Predicted makespan and GPU utilisation of a large routed plan on K GPUs: catimg's policy vs round-robin.

    python -m catimg.benchmarks.cluster_plan [--prompts 1000000] [--gpus 8,64] [--gpu H100] [--budget medium]
                                             [--set parti-geneval-200] [--load-seconds S] [--chunk-size 16]

Routes a built-in prompt set with the bundled router and the default catalog at ``--budget``, costs every
generator on ``--gpu`` with the cost model (estimated unless models.toml or ``catimg bench`` says otherwise),
scales the routed shares to ``--prompts`` prompts, and simulates both policies of
:mod:`catimg.generation.schedule`. No GPU needed. ``--load-seconds`` replaces every model's predicted load
time (e.g. 60 for weights on network storage) to show how the policies react to dearer model switches.
"""

from __future__ import annotations

import argparse
from dataclasses import replace


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=1_000_000)
    ap.add_argument("--gpus", default="8,64")
    ap.add_argument("--gpu", default="H100")
    ap.add_argument("--budget", default="medium")
    ap.add_argument("--set", dest="prompt_set", default="parti-geneval-200")
    ap.add_argument("--load-seconds", type=float, default=None)
    ap.add_argument("--chunk-size", type=int, default=16)
    args = ap.parse_args(argv)

    from catimg.config import load_catalog
    from catimg.generation.schedule import cluster_plan, hypothetical_gpu
    from catimg.prompts import reference_set
    from catimg.routing.budget import parse_budget
    from catimg.routing.route import route_prompts
    from catimg.routing.router import load_router

    prompts = reference_set(args.prompt_set)
    catalog = load_catalog(None)
    dev = hypothetical_gpu(args.gpu)
    result = route_prompts(prompts, catalog, load_router(None), dev, budget=parse_budget(args.budget))
    costs = dict(result.costs)
    if args.load_seconds is not None:
        costs = {k: replace(c, load_seconds=args.load_seconds) for k, c in costs.items()}
    ks = [int(k) for k in args.gpus.split(",")]
    cp = cluster_plan(
        result.shares(),
        costs,
        {g.name: g.model for g in catalog.generators},
        ks,
        scale_to=args.prompts,
        chunk_size=args.chunk_size,
        device=dev.name,
    )
    print(
        f"{args.prompts:,} prompts with the shares of {len(prompts)} routed prompts ({args.prompt_set}, "
        f"--budget {args.budget}, λ {result.lam:.4g}); "
        f"costs for {dev.name} ({', '.join(sorted({c.kind for c in costs.values()}))}); "
        f"chunks of {args.chunk_size}"
    )
    for w in cp.work:
        print(
            f"  {w.generator:<12} {w.images:>9,} images  {w.seconds:8.4f} s/image  "
            f"load {w.load_seconds:6.1f} s  "
            f"{w.total_seconds / 3600:8.1f} GPU-h"
        )
    total = sum(w.total_seconds for w in cp.work) / 3600
    print(f"  total {total:.1f} GPU-hours of generation")
    print(f"{'GPUs':>5} {'policy':<30} {'makespan':>10} {'util':>7} {'loads':>8} {'ideal':>10}")
    for k, (c, r) in sorted(cp.predictions.items()):
        for p in (c, r):
            print(
                f"{k:>5} {p.policy:<30} {p.makespan / 3600:9.2f}h {p.utilisation:7.1%} {p.loads:>8,} "
                f"{p.ideal / 3600:9.2f}h"
            )
        print(f"{'':>5} round-robin / catimg makespan: {r.makespan / c.makespan:.3f}")


if __name__ == "__main__":
    main()
