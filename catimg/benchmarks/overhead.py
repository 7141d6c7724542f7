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
from pathlib import Path

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


def _run(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="OMP/torch threads for both sides (default 1)")
    ap.add_argument("--budget", default="medium")
    args = ap.parse_args()

    tiny = tiny_module()
    root = Path(tempfile.mkdtemp(prefix="catimg-overhead-"))
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_HUB_CACHE=str(root / "hub"),
        CATIMG_CACHE_DIR=str(root / "cache"),
        CATIMG_DATA_DIR=str(root / "data"),
        OMP_NUM_THREADS=str(args.threads),
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
            for i in range(args.prompts)
        )
    )
    cat = [sys.executable, "-m", "catimg"]
    _run(
        cat
        + [
            "train",
            "--measurements",
            str(root / "m.csv"),
            "--models",
            str(models),
            "--out",
            str(root / "router"),
        ],
        env,
    )

    cat_times, plain_times = [], []
    jobs_file = root / "jobs.json"
    script = root / "plain.py"
    script.write_text(PLAIN)
    for r in range(args.repeat):
        out = root / f"cat-{r}"
        cat_times.append(
            _run(
                cat
                + [
                    "gen",
                    "-f",
                    str(prompts),
                    "--models",
                    str(models),
                    "--router",
                    str(root / "router"),
                    "--out",
                    str(out),
                    "--seed",
                    "0",
                    "--budget",
                    args.budget,
                    "--json",
                ],
                env,
            )
        )
        recs = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
        jobs = [
            {
                "index": x["index"],
                "prompt": x["prompt"],
                "seed": x["seed"],
                "steps": x["steps"],
                "guidance": x["guidance"],
                "width": x["width"],
                "height": x["height"],
                "source": str(snap) if x["source"] == "stabilityai/sdxl-turbo" else x["source"],
            }
            for x in recs
        ]
        jobs.sort(key=lambda j: (j["source"], j["index"]))
        jobs_file.write_text(json.dumps(jobs))
        plain_times.append(_run([sys.executable, str(script), str(jobs_file), str(root / f"plain-{r}")], env))
    shares: dict[str, int] = {}
    for x in recs:
        shares[x["generator"]] = shares.get(x["generator"], 0) + 1
    c, plain = statistics.median(cat_times), statistics.median(plain_times)
    print(f"prompts: {args.prompts}, images: {len(recs)}, generators used: {shares}, threads: {args.threads}")
    print(f"catimg gen -f (routing included): median {c:.2f} s  runs {[round(t, 2) for t in cat_times]}")
    print(
        f"plain diffusers script:           median {plain:.2f} s  runs {[round(t, 2) for t in plain_times]}"
    )
    print(f"ratio catimg / plain: {c / plain:.3f} (target <= 1.15)")


if __name__ == "__main__":
    main()
