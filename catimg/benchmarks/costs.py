"""Estimated against measured seconds per image for tiny generators on this machine.

Builds real tiny diffusers pipelines (random weights, tests/tiny.py layout re-created here from configs), asks
the cost model for its estimate (analytic FLOPs + the CPU/GPU throughput table + per-op overhead), then
measures each generator with ``catimg.costs.bench.measure`` and prints both side by side, with the rank of
each.

    python -m catimg.benchmarks.costs [--device cpu] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from catimg.benchmarks import tiny_module


def _tiny_pipelines(root: Path) -> dict[str, Path]:
    tiny = tiny_module()
    return {"sd": tiny.build_tiny_sd(root / "sd"), "sdxl": tiny.build_tiny_sdxl(root / "sdxl")}


CATALOG = """
[generators.sd-2-nocfg]
source = "{sd}"
steps = 2
guidance = 0
width = 64
height = 64
[generators.sd-64]
source = "{sd}"
steps = [4, 8, 16]
width = 64
height = 64
[generators.sdxl-64]
source = "{sdxl}"
steps = [4, 12]
width = 64
height = 64
[generators.sd-128]
source = "{sd}"
steps = [4, 8]
width = 128
height = 128
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args(argv)
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from catimg.config import parse_catalog
    from catimg.costs.bench import measure
    from catimg.costs.model import device_throughput, generator_cost
    from catimg.device import detect_device

    dev = detect_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CATIMG_CACHE_DIR"] = str(Path(tmp) / "cache")  # never touch the user's cache
        folders = _tiny_pipelines(Path(tmp))
        cat = parse_catalog(CATALOG.format(**folders), Path(tmp) / "models.toml")
        rows = []
        for g in cat.generators:
            est = generator_cost(g, dev, use_measured=False)
            t0 = time.perf_counter()
            r = measure(g, dev, repeats=args.repeats, warmup=1)
            rows.append(
                (
                    g.name,
                    g.steps,
                    g.width,
                    est.tflops * 1e3,
                    est.seconds,
                    r.seconds_per_image(g.steps),
                    r.step_seconds,
                    r.fixed_seconds,
                    time.perf_counter() - t0,
                )
            )
    tp = device_throughput(dev)
    print(
        f"device: {dev.describe()}; torch threads: {torch.get_num_threads()}; throughput row: {tp.label} "
        f"({tp.effective_tflops * 1000:.0f} GFLOP/s effective, {tp.launch_ms * 1000:.0f} µs/op)"
    )
    est_rank = {
        n: i
        for i, n in enumerate(
            sorted((r[0] for r in rows), key=lambda n: next(x[4] for x in rows if x[0] == n))
        )
    }
    mea_rank = {
        n: i
        for i, n in enumerate(
            sorted((r[0] for r in rows), key=lambda n: next(x[5] for x in rows if x[0] == n))
        )
    }
    print(
        f"{'generator':<14}{'steps':>6}{'px':>5}{'GFLOPs':>9}{'est s':>9}{'meas s':>9}{'ratio':>7}"
        f"{'s/step':>9}{'fixed s':>9}{'rank e/m':>10}"
    )
    for name, steps, px, gf, es, ms, st, fx, _ in rows:
        print(
            f"{name:<14}{steps:>6}{px:>5}{gf:>9.3f}{es:>9.3f}{ms:>9.3f}{ms / es:>7.2f}{st:>9.4f}{fx:>9.4f}"
            f"{est_rank[name] + 1:>6}/{mea_rank[name] + 1}"
        )
    from statistics import correlation

    def ranks(key: int) -> list[float]:
        order = sorted(range(len(rows)), key=lambda i: rows[i][key])
        out = [0.0] * len(rows)
        for pos, i in enumerate(order):
            out[i] = float(pos)
        return out

    print(f"Spearman rank correlation (estimated vs measured): {correlation(ranks(4), ranks(5)):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
