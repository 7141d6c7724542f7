"""Overhead of `catimg gen -f` against a plain diffusers script making the same images.

    python -m catimg.benchmarks.overhead [--prompts 24] [--repeat 3] [--threads 1]

Builds two tiny real diffusers pipelines (an SD-1.x-like folder with two step variants and an SDXL-like
pipeline served from a fake Hub cache), trains a router on synthetic measurements, then times (wall clock,
whole processes, imports included):

* ``catimg gen -f prompts.txt`` (routing included), and
* a plain script that loads each pipeline once with ``DiffusionPipeline.from_pretrained`` and makes the same
  images (same prompts, generators, seeds, steps, guidance, size), one call per image, saving PNGs.

Prints the medians over ``--repeat`` runs and the ratio (target: catimg ≤ 1.15 × the plain script).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catimg.benchmarks import tiny_module

PLAIN = r"""
import json, sys, torch
from pathlib import Path
from diffusers import DiffusionPipeline
jobs = json.loads(Path(sys.argv[1]).read_text())
out = Path(sys.argv[2]); out.mkdir(parents=True, exist_ok=True)
pipes = {}
for j in jobs:
    if j["source"] not in pipes:
        pipes[j["source"]] = DiffusionPipeline.from_pretrained(j["source"], dtype=torch.float32)
        pipes[j["source"]].set_progress_bar_config(disable=True)
    pipe = pipes[j["source"]]
    img = pipe(prompt=j["prompt"], num_inference_steps=j["steps"], guidance_scale=j["guidance"],
               width=j["width"], height=j["height"],
               generator=torch.Generator().manual_seed(j["seed"])).images[0]
    img.save(out / f"{j['index']:04d}.png")
"""

_CAT = [sys.executable, "-m", "catimg"]


def _run(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return dt


@dataclass(frozen=True)
class _Bench:
    """The temporary benchmark folder and what both sides run against."""

    root: Path
    env: dict[str, str]
    models: Path  # models.toml naming the two tiny generators
    prompts: Path  # prompts.txt, one prompt a line
    snap: Path  # the SDXL-like pipeline's snapshot folder in the fake Hub cache


@dataclass(frozen=True)
class _Timings:
    """Wall seconds of each repeat for both sides, and the manifest records of the last catimg run."""

    cat: list[float]
    plain: list[float]
    recs: list[dict[str, Any]]


def _parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="OMP/torch threads for both sides (default 1)")
    ap.add_argument("--budget", default="medium")
    args = ap.parse_args()
    for name in ("prompts", "repeat", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be 1 or more")
    return args


def _prepare(n_prompts: int, threads: int) -> _Bench:
    """Build the tiny pipelines, the fake Hub cache, models.toml, synthetic measurements and the prompts."""
    tiny = tiny_module()
    root = Path(tempfile.mkdtemp(prefix="catimg-overhead-"))
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_HUB_CACHE=str(root / "hub"),
        CATIMG_CACHE_DIR=str(root / "cache"),
        CATIMG_DATA_DIR=str(root / "data"),
        OMP_NUM_THREADS=str(threads),
        NO_COLOR="1",
        TOKENIZERS_PARALLELISM="false",
    )
    os.environ.update({k: env[k] for k in ("HF_HUB_OFFLINE", "OMP_NUM_THREADS")})
    sd = tiny.build_tiny_sd(root / "tiny-sd")
    xl = tiny.build_tiny_sdxl(root / "tiny-sdxl")
    snap = tiny.install_fake_hub(root / "hub", "stabilityai/sdxl-turbo", xl)
    models = root / "models.toml"
    models.write_text(
        f'[generators.sd]\nsource = "{sd}"\nsteps = [2, 4]\nguidance = 2.0\nwidth = 64\nheight = 64\n'
        '[generators.turbo]\nsource = "stabilityai/sdxl-turbo"\nsteps = 2\nguidance = 0.0\n'
        "width = 64\nheight = 64\n"
    )
    tiny.write_measurements(
        root / "m.csv",
        {"sd@2": (0.6, 0.3, 0.05), "sd@4": (0.62, 0.5, 0.1), "turbo": (0.63, 0.8, 0.2)},
        n=60,
        hard_words=("crowd", "city", "park"),
    )
    prompts = root / "prompts.txt"
    prompts.write_text(
        "".join(
            f"a {tiny.WORDS[i % 12]} in the {tiny.WORDS[(i * 7 + 3) % 12]}, view {i}\n"
            for i in range(n_prompts)
        )
    )
    return _Bench(root=root, env=env, models=models, prompts=prompts, snap=Path(snap))


def _train_router(b: _Bench) -> None:
    cmd = [*_CAT, "train", "--measurements", str(b.root / "m.csv"), "--models", str(b.models)]
    _run([*cmd, "--out", str(b.root / "router")], b.env)


def _plain_jobs(recs: list[dict[str, Any]], snap: Path) -> list[dict[str, Any]]:
    """The plain script's jobs for catimg's manifest records: same settings, Hub id -> snapshot."""
    keys = ("index", "prompt", "seed", "steps", "guidance", "width", "height")
    jobs = [
        {
            **{k: x[k] for k in keys},
            "source": str(snap) if x["source"] == "stabilityai/sdxl-turbo" else x["source"],
        }
        for x in recs
    ]
    jobs.sort(key=lambda j: (j["source"], j["index"]))
    return jobs


def _time_both(b: _Bench, repeat: int, budget: str) -> _Timings:
    """Alternate ``catimg gen -f`` and the plain script over the images catimg made, ``repeat`` times."""
    cat_times, plain_times = [], []
    recs: list[dict[str, Any]] = []
    jobs_file = b.root / "jobs.json"
    script = b.root / "plain.py"
    script.write_text(PLAIN)
    gen = [*_CAT, "gen", "-f", str(b.prompts), "--models", str(b.models), "--router", str(b.root / "router")]
    for r in range(repeat):
        out = b.root / f"cat-{r}"
        cat_times.append(_run([*gen, "--out", str(out), "--seed", "0", "--budget", budget, "--json"], b.env))
        recs = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
        jobs_file.write_text(json.dumps(_plain_jobs(recs, b.snap)))
        plain_times.append(
            _run([sys.executable, str(script), str(jobs_file), str(b.root / f"plain-{r}")], b.env)
        )
    return _Timings(cat=cat_times, plain=plain_times, recs=recs)


def _report(t: _Timings, n_prompts: int, threads: int) -> None:
    shares: dict[str, int] = {}
    for x in t.recs:
        shares[x["generator"]] = shares.get(x["generator"], 0) + 1
    c, plain = statistics.median(t.cat), statistics.median(t.plain)
    print(f"prompts: {n_prompts}, images: {len(t.recs)}, generators used: {shares}, threads: {threads}")
    print(f"catimg gen -f (routing included): median {c:.2f} s  runs {[round(x, 2) for x in t.cat]}")
    print(f"plain diffusers script:           median {plain:.2f} s  runs {[round(x, 2) for x in t.plain]}")
    print(f"ratio catimg / plain: {c / plain:.3f} (target <= 1.15)")


def main() -> None:
    args = _parse_args()
    bench = _prepare(args.prompts, args.threads)
    _train_router(bench)
    _report(_time_both(bench, args.repeat, args.budget), args.prompts, args.threads)


if __name__ == "__main__":
    main()
