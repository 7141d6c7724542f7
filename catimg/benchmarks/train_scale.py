"""How training scales: ``catimg train`` on a synthetic measurement file of many prompts x 10 generators.

    python -m catimg.benchmarks.train_scale [--prompts 100000] [--generators 10] [--missing 0.2]
        [--predictor auto]

Writes a long-format CSV of ``--prompts`` distinct prompts (composed from subject, scene, style and detail
word lists) x ``--generators`` generators, with a share ``--missing`` of the cells left out at random, scores
that depend on the prompt's words (so there is something to learn) plus noise, and measured seconds. Then it
runs the real CLI, ``catimg train --measurements FILE --models models.toml --out DIR``, in a subprocess twice:
*cold* (an empty embedding cache: the prompts are embedded) and *warm* (the same cache: embeddings are read
back). Printed per run: wall time, the peak resident memory of the subprocess, the artifact's size on disk,
and the stage lines catimg prints while training. Finally it times ``explain -f`` of 10,000 of the prompts
with that router, cold (fresh cache) and warm, and the router's prediction of those prompts once embedded
(the predictor alone, best of 3).

Everything is written under ``--work`` (a temporary folder by default) and removed afterwards unless
``--keep``.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SUBJECTS = (
    "cat",
    "dog",
    "horse",
    "bicycle",
    "lighthouse",
    "teapot",
    "robot",
    "violin",
    "castle",
    "forest",
    "child",
    "crowd of people",
    "old man",
    "sailboat",
    "train",
    "bowl of fruit",
    "mountain",
    "city street",
    "owl",
    "car",
)
SCENES = (
    "on a beach",
    "in a kitchen",
    "at night",
    "in the rain",
    "on a table",
    "in a busy market",
    "under a bridge",
    "in the snow",
    "next to a window",
    "in a field of flowers",
    "on a rooftop",
    "inside a museum",
)
STYLES = (
    "photo",
    "oil painting",
    "watercolour",
    "pencil sketch",
    "3d render",
    "pixel art",
    "anime still",
    "studio portrait",
    "vintage postcard",
    "blueprint",
)
DETAILS = (
    "",
    "with three red balloons",
    "holding a sign that says hello",
    "reflected in a mirror",
    "surrounded by tiny robots",
    "in soft morning light",
    "with a long shadow",
    "made of glass",
    "next to two blue cups",
    "seen from above",
)


def synthetic_prompts(n: int, seed: int = 0) -> list[str]:
    """n distinct prompts built from the word lists (a numbered variant where the combinations run out)."""
    rng = np.random.default_rng(seed)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        s, c, st, d = (rng.integers(len(x)) for x in (SUBJECTS, SCENES, STYLES, DETAILS))
        text = f"a {STYLES[st]} of a {SUBJECTS[s]} {SCENES[c]} {DETAILS[d]}".strip()
        if text in seen:
            text = f"{text}, variant {len(out)}"
        seen.add(text)
        out.append(text)
    return out


def write_measurements(path: Path, n: int, g: int, missing: float, seed: int = 0) -> int:
    """Write the synthetic long-format CSV; return the number of rows."""
    rng = np.random.default_rng(seed)
    prompts = synthetic_prompts(n, seed)
    hard = np.array(
        [("crowd" in p) + ("sign" in p) + ("three" in p or "two" in p) + ("glass" in p) for p in prompts]
    )
    skill = np.linspace(0.0, 1.0, g)  # generator j: better at hard prompts the larger j is
    seconds = np.geomspace(0.3, 20.0, g)
    rows = 0
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["prompt", "generator", "score", "seconds"])
        for i, p in enumerate(prompts):
            keep = rng.random(g) >= missing
            keep[rng.integers(g)] = True  # every prompt has at least one score
            score = 4.0 - hard[i] * (1.0 - skill) + 0.3 * skill + rng.normal(0, 0.5, g)
            for j in np.flatnonzero(keep):
                w.writerow([p, f"gen{j}", f"{score[j]:.3f}", f"{seconds[j] * rng.uniform(0.9, 1.1):.3f}"])
                rows += 1
    return rows


def write_models(path: Path, g: int) -> None:
    lines = []
    for j in range(g):
        lines += [
            f"[generators.gen{j}]",
            'source = "stable-diffusion-v1-5/stable-diffusion-v1-5"',
            f"steps = {5 * (j + 1)}",
            "",
        ]
    path.write_text("\n".join(lines), encoding="utf-8")


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in GB of the child, stderr) of one catimg subprocess; exits on failure."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux; the largest child so far
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:3])} failed with exit {proc.returncode}: {proc.stderr.strip()[-800:]}")
    return wall, max(peak, before) / 1024 / 1024, proc.stderr


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m catimg.benchmarks.train_scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--prompts", type=int, default=100_000)
    ap.add_argument("--generators", type=int, default=10)
    ap.add_argument(
        "--missing", type=float, default=0.2, help="share of (prompt, generator) cells left unmeasured"
    )
    ap.add_argument("--predictor", default="auto")
    ap.add_argument("--explain", type=int, default=10_000, help="prompts for the explain -f timing (0: skip)")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    return ap.parse_args(argv)


def _write_inputs(m: Path, models: Path, args: argparse.Namespace) -> None:
    """Write the synthetic measurements and models.toml, and say how large and how long."""
    t0 = time.perf_counter()
    rows = write_measurements(m, args.prompts, args.generators, args.missing)
    write_models(models, args.generators)
    print(
        f"synthetic measurements: {args.prompts} prompts x {args.generators} generators, {rows} rows "
        f"({m.stat().st_size / 1e6:.0f} MB), written in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )


def _time_train(work: Path, m: Path, models: Path, predictor: str, env: dict[str, str]) -> None:
    """``catimg train`` cold then warm into ``work/router``: wall, peak memory, artifact size, stage lines."""
    train = [sys.executable, "-m", "catimg", "train", "--measurements", str(m), "--models", str(models)]
    train += ["--out", str(work / "router"), "--predictor", predictor, "--force"]
    for label in ("cold (empty embedding cache)", "warm (embeddings cached)"):
        shutil.rmtree(work / "router", ignore_errors=True)
        wall, peak, err = run(train, env)
        print(
            f"train {label}: {wall:.1f} s wall, peak memory {peak:.2f} GB, "
            f"artifact {folder_mb(work / 'router'):.1f} MB"
        )
        for line in err.splitlines():
            if line.startswith("["):
                print(f"    {line}")
        sys.stdout.flush()


def _time_explain(work: Path, models: Path, n: int, env: dict[str, str]) -> None:
    """``catimg explain -f`` of n fresh prompts with the trained router, cold then warm embedding cache."""
    pf = work / "prompts.txt"
    pf.write_text("\n".join(synthetic_prompts(n, seed=1)) + "\n", encoding="utf-8")
    explain = [sys.executable, "-m", "catimg", "explain", "-f", str(pf), "--router", str(work / "router")]
    explain += ["--models", str(models), "--budget", "medium", "--json"]
    for label, c in (("cold", work / "cache-explain"), ("warm", work / "cache-explain")):
        wall, peak, _ = run(explain, {**env, "CATIMG_CACHE_DIR": str(c)})
        print(
            f"explain -f {n} prompts --json, {label}: {wall:.1f} s wall, peak memory {peak:.2f} GB",
            flush=True,
        )


#: Run in a subprocess after explain has cached the prompts' embeddings: the predictor alone, best of 3.
PREDICT_TIMER = """
import sys, time
from catimg.routing.encoder import PromptEncoder
from catimg.routing.router import load_router
prompts = open(sys.argv[1], encoding="utf-8").read().splitlines()
router = load_router(sys.argv[2])
emb = PromptEncoder().encode(prompts)
best = float("inf")
for _ in range(3):
    t0 = time.perf_counter()
    router.predict(emb, prompts)
    best = min(best, time.perf_counter() - t0)
print(f"{best:.3f}")
"""


def _time_predict(work: Path, env: dict[str, str]) -> None:
    """The router's prediction of explain's prompts once they are embedded (their embeddings cached)."""
    cmd = [sys.executable, "-c", PREDICT_TIMER, str(work / "prompts.txt"), str(work / "router")]
    env = {**env, "CATIMG_CACHE_DIR": str(work / "cache-explain")}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"timing the predictor failed: {proc.stderr.strip()[-800:]}")
    n = len((work / "prompts.txt").read_text(encoding="utf-8").splitlines())
    print(
        f"predict {n} embedded prompts (the predictor alone, best of 3): {proc.stdout.strip()} s", flush=True
    )


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="catimg-train-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        m, models = work / "m.csv", work / "models.toml"
        _write_inputs(m, models, args)
        env = {**os.environ, "CATIMG_CACHE_DIR": str(work / "cache"), "HF_HUB_OFFLINE": "1"}
        _time_train(work, m, models, args.predictor, env)
        if args.explain:
            _time_explain(work, models, args.explain, env)
            _time_predict(work, env)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
