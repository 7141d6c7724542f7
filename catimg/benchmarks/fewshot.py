"""Few-shot generators: how routing quality grows with the number of prompts a new generator is measured on.

    python -m catimg.benchmarks.fewshot [--data ../shared/data] [--set genai_bench] [--generator sdxl]
        [--repeats 20] [--predictor auto]

On GenAI-Bench (``--set genai_bench``, the default: 527 prompts, human 1-5 alignment ratings; the generators
of the packaged catalog that it covers: sdxl-turbo, sd21, sdxl) or on PQPP's 6,000 train prompts
(``--set pqpp``: human ratings in [-1, 2] of SDXL and GLIDE, GLIDE's cost assumed at a tenth of SDXL's as in
:mod:`catimg.benchmarks.routing`; the set where a generator can be measured on thousands of prompts), each
repeat holds out 30% of the prompts as a test set. On the training prompts every generator is fully measured
except the *few-shot* one, which keeps only n measured prompts (n = 0, 10, 25, 50, 100, 200, all on
GenAI-Bench; 0, 10, 50, 200, 1000, all on PQPP; the rest are NaN, as for a generator calibrated on a subset).
The predictor is fitted on that partial table as ``catimg train`` fits it (``blend`` and ``lexical`` take
the KNN share that cross-validation inside the training prompts chooses) and the router is evaluated on the
fully measured test prompts.
n = 0 means the generator is not routed at all (what a user gets before calibrating it).

Printed per n, averaged over the repeats (± standard error): the router's AUC (mean quality over the cost
range), the quality it reaches at the best single generator's cost, the cost at which it first matches the
best single generator (% of that cost; "-" when it never does), the share of test prompts routed to the
few-shot generator by the policy of the λ sweep whose mean cost is closest to that generator's own (λ = 0 when
it is the dearest: how far the router trusts it), the mean predicted uncertainty (std) of that
generator's expected quality on the test prompts, and (ridge) its *own* part: the std of its deviation from
the per-prompt anchor, the uncertainty that decides how it compares with the others (the anchor's is shared by
every generator), which shrinks as it is measured on more prompts. "own err" holds that std against an error:
the RMS of its deviation mean against the one fitted with all training prompts in the same repeat (a stand-in
for the expected deviation; an honest own std is not much below it). Costs are the catalog's
analytic TFLOPs per image.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from catimg.benchmarks.routing import Table

#: measured prompts of the few-shot generator per set (-1: all training prompts)
DEFAULT_SIZES = {"genai_bench": (0, 10, 25, 50, 100, 200, -1), "pqpp": (0, 10, 50, 200, 1000, -1)}


def load_genai_bench(data: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(prompts, generators, Y) for the packaged catalog's generators that GenAI-Bench covers."""
    from catimg.benchmarks.datasets import genai_bench
    from catimg.config import load_catalog

    catalog = load_catalog(Path(__file__).resolve().parents[1] / "data" / "models.toml")
    rows = genai_bench(data)
    gens = [g for g in catalog.names if any(r["generator"] == g for r in rows)]
    prompts = list(dict.fromkeys(r["prompt"] for r in rows))
    pi = {p: i for i, p in enumerate(prompts)}
    gi = {g: j for j, g in enumerate(gens)}
    S = np.zeros((len(prompts), len(gens)))
    C = np.zeros_like(S)
    for r in rows:
        if r["generator"] in gi:
            S[pi[r["prompt"]], gi[r["generator"]]] += r["score"]
            C[pi[r["prompt"]], gi[r["generator"]]] += 1
    with np.errstate(invalid="ignore"):
        Y = np.where(C > 0, S / np.maximum(C, 1), np.nan)
    keep = ~np.isnan(Y).any(axis=1)
    return [prompts[i] for i in np.flatnonzero(keep)], gens, Y[keep]


def catalog_tflops(gens: list[str]) -> np.ndarray:
    from catimg.config import load_catalog
    from catimg.costs.model import generator_cost
    from catimg.device import cpu_device

    catalog = load_catalog(Path(__file__).resolve().parents[1] / "data" / "models.toml")
    dev = cpu_device()
    return np.array([generator_cost(catalog.get(g), dev, use_measured=False).tflops for g in gens])


def load_table(name: str, data: Path) -> Table:
    """The complete per-prompt table of ``name`` (``genai_bench``, or ``pqpp``'s train split), with costs."""
    from catimg.benchmarks.routing import SETS, Table, load_set

    if name == "pqpp":
        return load_set(SETS["pqpp"], data, split="train")
    prompts, gens, Y = load_genai_bench(data)
    return Table(prompts, Y, gens, catalog_tflops(gens), "genai_bench_alignment")


def run(
    table: Table,
    target: str,
    sizes: tuple[int, ...],
    repeats: int,
    predictor: str,
    test_share: float,
    seed: int,
) -> dict[str, Any]:
    """The benchmark on ``table`` (see the module docstring): per size in ``sizes``, one result dict per
    repeat (AUC, quality at the best single generator's cost, cost to match, share routed to ``target``, its
    predicted and own std, prompts measured)."""
    from catimg.routing.encoder import default_encoder
    from catimg.routing.predictor import Features
    from catimg.training.train import metric_scale

    prompts, gens, Y = table.prompts, table.generators, table.Y
    if target not in gens:
        raise SystemExit(f"--generator {target}: not in {gens}")
    j = gens.index(target)
    X = Features.of(default_encoder().encode(prompts).astype(np.float64), prompts)
    scale = metric_scale(table.metric, Y)
    rng = np.random.default_rng(seed)
    n = len(prompts)
    n_test = int(round(n * test_share))
    results: dict[int, list[dict[str, float]]] = {s: [] for s in sizes}
    for _ in range(repeats):
        perm = rng.permutation(n)
        test, train = perm[:n_test], perm[n_test:]
        order = rng.permutation(len(train))  # which training prompts the few-shot generator is measured on
        own_means = {}
        for size in sizes:
            k = len(train) if size < 0 else min(size, len(train))
            row, rep, own_means[size] = _one(
                table, X, j, train, test, order[k:] if k else None, predictor, scale, seed
            )
            results[size].append(row)
        _own_errors({s: r[-1] for s, r in results.items()}, own_means)
    oracle = rep.summaries[1]
    return {
        "gens": gens,
        "target": target,
        "results": results,
        "n_train": n - n_test,
        "n_test": n_test,
        "costs": dict(zip(gens, np.asarray(table.costs, float).tolist(), strict=True)),
        "oracle_auc_last": oracle.auc,
        "single_last": {d["name"]: d["quality"] for d in rep.single},
    }


def _own_errors(rows: dict[int, dict[str, float]], own_means: dict[int, np.ndarray | None]) -> None:
    """Per size, ``rows[size]["own_err"]``: the RMS over the test prompts of the few-shot generator's own
    deviation mean against the one fitted with all training prompts (-1 in the sizes), a stand-in for its
    expected deviation to hold the "own std" against (NaN without that fit or without an own part)."""
    ref = own_means.get(-1)
    for size, row in rows.items():
        mean = own_means[size]
        if ref is None or mean is None or size == -1:
            row["own_err"] = np.nan
        else:
            row["own_err"] = float(np.sqrt(np.mean((mean - ref) ** 2)))


def _one(
    table: Table,
    X: Any,
    j: int,
    train: np.ndarray,
    test: np.ndarray,
    hidden: np.ndarray | None,
    predictor: str,
    scale: tuple[float, float],
    seed: int,
) -> tuple[dict[str, float], Any, np.ndarray | None]:
    """One repeat at one size: generator ``j`` keeps its scores on the training prompts but ``hidden`` (None:
    it is not measured at all, so not routed); the fitted router evaluated on the test prompts, and the
    generator's own deviation means there (None without them)."""
    from catimg.routing.rule import normalise, sweep_path
    from catimg.training.crossval import fit_predictor
    from catimg.training.evaluate import evaluate_predictions

    Y, gens, costs = table.Y, table.generators, np.asarray(table.costs, float)
    Ytr = Y[train].copy()
    if hidden is None:
        Ytr = np.delete(Ytr, j, axis=1)
    else:
        Ytr[hidden, j] = np.nan
    # as `catimg train` fits it: blend and lexical get their KNN share from cross-validation
    model = fit_predictor(predictor, X[train], Ytr, seed=seed, cross_validate=False).predictor
    mean, std = model.predict(X[test])
    # the few-shot generator's own epistemic uncertainty: ridge's deviation part (the anchor part is shared by
    # every generator and cancels when generators are compared); blend and lexical report their ridge's
    ridge = getattr(model, "ridge", model)
    own = own_mean = None
    if hidden is not None and hasattr(ridge, "predict_parts"):
        parts = ridge.predict_parts(X[test])
        own, own_mean = np.sqrt(parts[3][:, j]), parts[2][:, j]
    if hidden is None:
        mean = np.insert(mean, j, -1e9, axis=1)
        std = np.insert(std, j, np.nan, axis=1)
    rep = evaluate_predictions(mean, Y[test], costs.tolist(), scale, gens, name=predictor)
    s = rep.summaries[0]
    # share routed to the target by the sweep's policy whose mean cost is closest to the target's own
    # cost (for the dearest generator: λ = 0, the router's unpriced choice)
    path = sweep_path(*normalise(mean, costs, scale))
    at = path.choice(int(np.argmin(np.abs(path.mean_costs(costs) - costs[j]))))
    row = {
        "auc": s.auc,
        "q_at_best": s.quality_at_best_cost,
        "ctm_pct": s.cost_to_match_pct if s.cost_to_match_pct is not None else np.nan,
        "share": float(np.mean(at == j)),
        "std": float(np.nanmean(std[:, j])) if hidden is not None else np.nan,
        "own": float(np.mean(own)) if own is not None else np.nan,
        "measured": float(len(train) - (len(train) if hidden is None else len(hidden))),
    }
    return row, rep, own_mean


def _fmt(vals: list[float], digits: int = 3) -> str:
    a = np.asarray(vals, float)
    ok = a[~np.isnan(a)]
    if len(ok) == 0:
        return "-"
    se = ok.std(ddof=1) / np.sqrt(len(ok)) if len(ok) > 1 else 0.0
    miss = "" if len(ok) == len(a) else f" ({len(a) - len(ok)} never)"
    return f"{ok.mean():.{digits}f} ± {se:.{digits}f}{miss}"


def main(argv: list[str] | None = None) -> int:
    from catimg.benchmarks.datasets import default_data_dir

    ap = argparse.ArgumentParser(
        prog="python -m catimg.benchmarks.fewshot", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--data", type=Path, default=None, help="the shared data folder (holding genai_bench/)")
    ap.add_argument("--set", default="genai_bench", choices=sorted(DEFAULT_SIZES), help="the data set")
    ap.add_argument("--generator", default="sdxl", help="the few-shot generator (default sdxl)")
    ap.add_argument("--sizes", default=None, help="measured prompts, comma-separated; -1 = all")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument(
        "--predictor", default="auto", help="auto (the default of catimg train), lexical, ridge, blend or knn"
    )
    ap.add_argument("--test-share", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    data = a.data or default_data_dir()
    sizes = tuple(int(s) for s in a.sizes.split(",")) if a.sizes else DEFAULT_SIZES[a.set]
    t0 = time.perf_counter()
    out = run(load_table(a.set, data), a.generator, sizes, a.repeats, a.predictor, a.test_share, a.seed)
    print(
        f"few-shot routing on {a.set}: generators {', '.join(out['gens'])}; "
        f"few-shot generator {out['target']}"
    )
    print("costs (TFLOPs/image): " + ", ".join(f"{g} {c:.1f}" for g, c in out["costs"].items()))
    print(
        f"{a.repeats} repeats x ({out['n_train']} train / {out['n_test']} test prompts), "
        f"predictor {a.predictor}, seed {a.seed}"
    )
    print(
        "last split: single-generator quality "
        + ", ".join(f"{g} {q:.3f}" for g, q in out["single_last"].items())
        + f"; oracle AUC {out['oracle_auc_last']:.3f}"
    )
    print()
    head = (
        f"{'measured':>9}  {'AUC':>16}  {'quality@best cost':>18}  {'cost to match %':>22}  "
        f"{'share':>15}  {'pred. std':>15}  {'own std':>15}  {'own err':>15}"
    )
    print(head)
    for size, rows in out["results"].items():
        label = "all" if size < 0 else str(size)
        print(
            f"{label:>9}  {_fmt([r['auc'] for r in rows]):>16}  {_fmt([r['q_at_best'] for r in rows]):>18}  "
            f"{_fmt([r['ctm_pct'] for r in rows], 1):>22}  {_fmt([r['share'] for r in rows], 2):>15}  "
            f"{_fmt([r['std'] for r in rows]):>15}  {_fmt([r['own'] for r in rows]):>15}  "
            f"{_fmt([r['own_err'] for r in rows]):>15}"
        )
    print(f"\n({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
