"""Routing quality on held-out public data: the paper's KNN, catimg's predictors, the oracle and random routing.

    python -m catimg.benchmarks.routing [--data ../shared/data] [--repeats 5] [--folds 5]

Protocol: repeated K-fold cross-validation. In each repeat every prompt is predicted by a model fitted on the other
folds (out-of-fold predictions); the quality-cost curve of the lambda sweep is then measured on all prompts with
their *measured* scores. Numbers are the mean (and standard deviation) over repeats. Definitions of AUC, quality
at the best single generator's cost and cost to match are in :mod:`catimg.evaluate`.

Costs are TFLOPs per image from catimg's cost model (``catimg.cost``, analytic counts from the pipeline configs,
including text encoders and the VAE decode) for the generator settings below; for scale, CATImage counts SDXL at
11.97 TFLOPs per denoising step at 1024x1024 with guidance.

Data sets:

- ``genai_bench``: 527 prompts, human 1-5 alignment (mean of 3 ratings), for the generators of catimg's default
  catalog (sdxl-turbo 1 step 512 px; sd21 50 steps 768 px CFG 7.5; sdxl 50 steps 1024 px CFG 5).
- ``agiqa3k``: 300 prompts, MOS alignment, SD 1.5 at four settings (the only per-prompt data on fewer steps).
  Assumed settings (AGIQA-3K Sec. III gives them only qualitatively here): normal 50 steps CFG 7.5, lowstep 10
  steps, lowcfg CFG 3, highcfg CFG 15; so lowcfg/highcfg cost the same as normal.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

GENAI_TOML = """
[generators.sdxl-turbo]
source = "stabilityai/sdxl-turbo"
steps = 1
guidance = 0.0
width = 512
height = 512
[generators.sd21]
source = "stabilityai/stable-diffusion-2-1"
steps = 50
guidance = 7.5
width = 768
height = 768
[generators.sdxl]
source = "stabilityai/stable-diffusion-xl-base-1.0"
steps = 50
guidance = 5.0
width = 1024
height = 1024
"""

AGIQA_TOML = """
[defaults]
source = "stable-diffusion-v1-5/stable-diffusion-v1-5"
width = 512
height = 512
[generators.sd15]
steps = 50
guidance = 7.5
[generators.sd15-lowstep]
steps = 10
guidance = 7.5
[generators.sd15-lowcfg]
steps = 50
guidance = 3.0
[generators.sd15-highcfg]
steps = 50
guidance = 15.0
"""

SETS: dict[str, dict[str, Any]] = {
    "genai_bench": {"toml": GENAI_TOML, "kwargs": {}},
    "agiqa3k": {"toml": AGIQA_TOML, "kwargs": {"metric": "mos_align"}},
}


def load_set(name: str, data: Path) -> tuple[Any, np.ndarray, list[str]]:
    """(MeasurementTable restricted to the set's generators, TFLOPs per generator, generator names)."""
    from catimg import datasets
    from catimg.config import parse_catalog
    from catimg.cost import generator_cost
    from catimg.device import cpu_device
    from catimg.measurements import MeasurementTable

    spec = SETS[name]
    cat = parse_catalog(spec["toml"], Path(f"<{name} settings>"))
    rows = datasets.DATASETS[name](data, **spec["kwargs"])
    names = cat.names
    prompts: dict[str, int] = {}
    for r in rows:
        prompts.setdefault(r["prompt"], len(prompts))
    sums = np.zeros((len(prompts), len(names)))
    cnt = np.zeros((len(prompts), len(names)), dtype=np.int64)
    for r in rows:
        if r["generator"] in names:
            i, j = prompts[r["prompt"]], names.index(r["generator"])
            sums[i, j] += r["score"]
            cnt[i, j] += 1
    with np.errstate(invalid="ignore"):
        Y = np.where(cnt > 0, sums / np.maximum(cnt, 1), np.nan)
    keep = ~np.any(np.isnan(Y), axis=1)
    table = MeasurementTable(prompts=[p for p, k in zip(prompts, keep, strict=True) if k], generators=names,
                             Y=Y[keep], counts=cnt[keep], seconds={g: None for g in names}, metric=rows[0]["metric"],
                             sources=[name])
    dev = cpu_device()
    costs = np.array([generator_cost(g, dev, use_measured=False).tflops for g in cat.generators])
    return table, costs, names


def run_set(name: str, data: Path, repeats: int, folds: int, predictors: list[tuple[str, str, dict[str, Any]]]) -> dict[str, Any]:
    from catimg.encoder import PromptEncoder
    from catimg.evaluate import evaluate_predictions
    from catimg.training import metric_scale, out_of_fold

    table, costs, names = load_set(name, data)
    X = PromptEncoder().encode(table.prompts).astype(np.float64)
    Y = table.Y
    scale = metric_scale(table.metric, Y)
    results: dict[str, list[Any]] = {}
    timing: dict[str, float] = {}
    single = Y.mean(0)
    for rep in range(repeats):
        for label, pname, params in predictors:
            t0 = time.perf_counter()
            pred = out_of_fold(pname, X, Y, folds=folds, seed=rep, params=params)
            timing[label] = timing.get(label, 0.0) + time.perf_counter() - t0
            r = evaluate_predictions(pred, Y, costs, scale, names, name=label)
            results.setdefault(label, []).append(r.summaries[0])
            if rep == 0 and label == predictors[0][0]:
                extra = {"oracle": [r.summaries[1]], "random": [r.summaries[2]]}
    results.update(extra)
    best = int(np.argmax(single))
    return {"name": name, "metric": table.metric, "n_prompts": len(Y), "generators": names, "costs": costs,
            "single": single, "best": names[best], "results": results, "timing": timing, "scale": scale}


def _agg(vals: list[float | None]) -> str:
    v = [x for x in vals if x is not None]
    never = len(vals) - len(v)
    if not v:
        return "never"
    s = f"{np.mean(v):.3f}" if abs(np.mean(v)) < 10 else f"{np.mean(v):.1f}"
    if len(v) > 1:
        sd = np.std(v)
        s += f" ± {sd:.3f}" if abs(np.mean(v)) < 10 else f" ± {sd:.1f}"
    if never:
        s += f" (never in {never}/{len(vals)})"
    return s


def render(res: dict[str, Any], repeats: int, folds: int) -> str:
    lines = [f"== {res['name']}: {res['n_prompts']} prompts, metric {res['metric']} (scale {res['scale'][0]:g}-{res['scale'][1]:g}), "
             f"{repeats}x{folds}-fold cross-validation"]
    for g, c, q in zip(res["generators"], res["costs"], res["single"], strict=True):
        mark = "  <- best single" if g == res["best"] else ""
        lines.append(f"   {g:<14} {c:9.2f} TFLOPs   mean quality {q:.3f}{mark}")
    head = f"   {'policy':<22} {'AUC':>16} {'quality at best cost':>22} {'cost to match (% of best)':>30} {'fit+predict s':>14}"
    lines += [head, "   " + "-" * (len(head) - 3)]
    for label, summaries in res["results"].items():
        t = res["timing"].get(label)
        lines.append(
            f"   {label:<22} {_agg([s.auc for s in summaries]):>16} {_agg([s.quality_at_best_cost for s in summaries]):>22} "
            f"{_agg([s.cost_to_match_pct for s in summaries]):>30} {('%.1f' % (t / repeats)) if t else '-':>14}"
        )
    return "\n".join(lines)


PREDICTORS: list[tuple[str, str, dict[str, Any]]] = [
    ("knn (paper, k=100)", "knn", {"k": 100}),
    ("knn (k=n/5)", "knn", {}),
    ("ridge (default)", "ridge", {}),
    ("blend", "blend", {}),
]


def main(argv: list[str] | None = None) -> int:
    from catimg.datasets import default_data_dir

    ap = argparse.ArgumentParser(prog="python -m catimg.benchmarks.routing", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="shared data folder (default $CATIMG_SHARED_DATA or ../shared/data)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--sets", default="genai_bench,agiqa3k")
    args = ap.parse_args(argv)
    data = args.data or default_data_dir()
    if not data.is_dir():
        print(f"error: {data}: shared data folder not found; pass --data", file=sys.stderr)
        return 2
    for name in args.sets.split(","):
        res = run_set(name.strip(), data, args.repeats, args.folds, PREDICTORS)
        print(render(res, args.repeats, args.folds), flush=True)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
