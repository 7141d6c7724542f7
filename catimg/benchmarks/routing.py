"""Routing quality on held-out public data: the paper's KNN, catimg's predictors, the oracle and random
routing.

    python -m catimg.benchmarks.routing [--data ../shared/data] [--sets pqpp,genai_bench,...] [--repeats 5]
                                        [--folds 5] [--bootstrap 200]

Protocols:

- ``pqpp`` has its own split: every predictor is fitted on the 6,000 ``train`` prompts and scored on the 2,000
  ``validation`` prompts it never saw (hyperparameters are chosen inside the training prompts by the
  predictors themselves: marginal likelihood for ridge, fixed k for KNN; lexical's n-gram λ and KNN share are
  fixed, chosen once by cross-validation inside the 6,000 train prompts).
- The small sets (``genai_bench``, ``agiqa3k``, ``tifa``, ``dsg``) use repeated K-fold cross-validation: in
  each repeat every prompt is predicted by a model fitted on the other folds (out-of-fold predictions); the
  numbers are means over repeats.

The quality-cost curve of the lambda sweep is measured with the *measured* scores. Definitions of AUC, quality
at the best single generator's cost, cost to match and APGR (the share of the oracle's gain over the straight
line from the cheapest to the best single generator that a policy recovers) are in
:mod:`catimg.training.evaluate`. Standard errors (``±``) come from a bootstrap over the evaluated prompts
(``--bootstrap`` resamples of the first repeat's predictions): they measure how much the number depends on
which prompts were sampled, the error that matters when comparing two predictors on the same prompts.
``Δ APGR`` is the difference to the paper's KNN (k = 100), ``Δ vs default`` the difference to the single-set
default predictor (``lexical``, what ``--predictor auto`` trains): the mean over repeats of the per-repeat
difference (so it equals the difference of the APGR columns), ± the s.e. of the *paired* difference over the
same bootstrap resamples of the first repeat (much smaller than either APGR's own s.e.).

``joint (all sets)`` is one default predictor trained on every selected set at once
(:mod:`catimg.training.joint`: each set mapped to the joint scale by its metric's range), scored on each set's
held-out prompts like the others: a held-out prompt is left out of every set (tifa and dsg rate the same
prompts), and pqpp's validation prompts are never trained on.

Costs are TFLOPs per image from catimg's cost model (``catimg.costs.model``, analytic counts from the pipeline
configs, including text encoders and the VAE decode) for the generator settings below. Data sets and assumed
settings:

- ``pqpp``: 8,000 MS-COCO captions, human score in [-1, 2], SDXL 1.0 base (50 steps, 1024 px, CFG 5) vs GLIDE
  (not a catimg generator: its cost is *assumed* to be one tenth of SDXL's). With two generators APGR, AUC
  ranks and the cost to match in percent do not depend on that ratio: every policy moves along the same line.
- ``genai_bench``: 527 prompts, human 1-5 alignment (mean of 3 ratings), for the generators of catimg's
  default catalog (sdxl-turbo 1 step 512 px; sd21 50 steps 768 px CFG 7.5; sdxl 50 steps 1024 px CFG 5).
- ``agiqa3k``: 300 prompts, MOS alignment, SD 1.5 at four settings (the only per-prompt data on fewer steps).
  Assumed settings (AGIQA-3K gives them only qualitatively): normal 50 steps CFG 7.5, lowstep 10 steps, lowcfg
  CFG 3, highcfg CFG 15; so lowcfg/highcfg cost the same as normal.
- ``tifa`` and ``dsg``: the same 160 prompts (TIFA-160), SD 1.1 and SD 1.5 (512 px) and SD 2.1 (768 px), 50
  steps CFG 7.5 (assumed: the papers do not state them per image); tifa is the mean of 2 human 1-5
  faithfulness ratings, dsg of 5 Likert consistency ratings of the same images.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from catimg.routing.predictor import Features, Inputs, Predictor
    from catimg.training.crossval import Fitter

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

TIFA_TOML = """
[defaults]
steps = 50
guidance = 7.5
width = 512
height = 512
[generators.sd11]
source = "CompVis/stable-diffusion-v1-1"
[generators.sd15]
source = "stable-diffusion-v1-5/stable-diffusion-v1-5"
[generators.sd21]
source = "stabilityai/stable-diffusion-2-1"
width = 768
height = 768
"""

PQPP_TOML = """
[generators.sdxl]
source = "stabilityai/stable-diffusion-xl-base-1.0"
steps = 50
guidance = 5.0
width = 1024
height = 1024
"""

#: GLIDE is not a catimg generator: its cost in the pqpp benchmark is this share of SDXL's (an assumption).
GLIDE_COST_SHARE = 0.1


@dataclass(frozen=True)
class BenchSet:
    """One public data set: how to load it, the settings that give its costs, and its protocol."""

    name: str
    toml: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: "cv" (repeated K-fold over all prompts) or "split" (fit on ``train``, score on ``validation``).
    protocol: str = "cv"
    #: Generators not in ``toml``, with their cost as a share of the most expensive catalog generator.
    assumed_share: dict[str, float] = field(default_factory=dict)


SETS: dict[str, BenchSet] = {
    "pqpp": BenchSet("pqpp", PQPP_TOML, protocol="split", assumed_share={"glide": GLIDE_COST_SHARE}),
    "genai_bench": BenchSet("genai_bench", GENAI_TOML),
    "agiqa3k": BenchSet("agiqa3k", AGIQA_TOML, {"metric": "mos_align"}),
    "tifa": BenchSet("tifa", TIFA_TOML),
    "dsg": BenchSet("dsg", TIFA_TOML),
}

PREDICTORS: list[tuple[str, str, dict[str, Any]]] = [
    ("knn (paper, k=100)", "knn", {"k": 100}),
    ("knn (k=min(100, n/5))", "knn", {}),
    ("ridge", "ridge", {}),
    ("blend", "blend", {}),
    ("lexical (default)", "lexical", {}),
]
REFERENCE = "knn (paper, k=100)"
#: The single-set predictor the joint router is compared with (paired, on the same resamples).
SINGLE = "lexical (default)"


@dataclass(frozen=True)
class Table:
    """Complete per-prompt scores of one set (prompts measured on every generator)."""

    prompts: list[str]
    Y: np.ndarray
    generators: list[str]
    costs: np.ndarray
    metric: str


def table_from_rows(rows: list[dict[str, Any]], names: list[str], costs: np.ndarray) -> Table:
    """Pivot long rows to prompts x generators (duplicates averaged), keeping prompts measured on every
    generator."""
    index: dict[str, int] = {}
    for r in rows:
        index.setdefault(r["prompt"], len(index))
    sums = np.zeros((len(index), len(names)))
    cnt = np.zeros((len(index), len(names)), dtype=np.int64)
    col = {g: j for j, g in enumerate(names)}
    for r in rows:
        j = col.get(r["generator"])
        if j is not None:
            sums[index[r["prompt"]], j] += r["score"]
            cnt[index[r["prompt"]], j] += 1
    keep = np.all(cnt > 0, axis=1)
    Y = sums[keep] / cnt[keep]
    prompts = [p for p, k in zip(index, keep, strict=True) if k]
    return Table(prompts, Y, names, costs, rows[0]["metric"])


def set_costs(spec: BenchSet) -> tuple[list[str], np.ndarray]:
    """Generator names and TFLOPs per image: catimg's cost model for the catalog, assumed shares for the
    others."""
    from catimg.config import parse_catalog
    from catimg.costs.model import generator_cost
    from catimg.device import cpu_device

    cat = parse_catalog(spec.toml, Path(f"<{spec.name} settings>"))
    dev = cpu_device()
    tflops = [generator_cost(g, dev, use_measured=False).tflops for g in cat.generators]
    top = max(tflops)
    names = [*cat.names, *spec.assumed_share]
    return names, np.array([*tflops, *(top * s for s in spec.assumed_share.values())])


def load_set(spec: BenchSet, data: Path, split: str | None = None) -> Table:
    from catimg.benchmarks import datasets

    names, costs = set_costs(spec)
    kwargs = {**spec.kwargs, **({"split": split} if split else {})}
    return table_from_rows(datasets.DATASETS[spec.name](data, **kwargs), names, costs)


@dataclass
class SetResult:
    """Per predictor: one Summary per repeat; bootstrap standard errors; timing."""

    name: str
    protocol: str
    table: Table
    scale: tuple[float, float]
    summaries: dict[str, list[Any]]
    se: dict[str, dict[str, float]]
    timing: dict[str, float]
    n_train: int
    shares: dict[str, list[float]] = field(default_factory=dict)  # KNN shares the fits chose, per label


def trained_fitter(
    name: str, params: dict[str, Any], joint: bool = False, chosen: list[float] | None = None
) -> Fitter:
    """Fits ``name`` as ``catimg train`` does (:func:`~catimg.training.crossval.fit_predictor`: a KNN share
    chosen inside the training rows), so that held-out numbers include that choice (nested
    cross-validation); ``joint``: inner folds over prompt keys (sets of a joint table share prompts);
    ``chosen`` collects the shares chosen."""
    from catimg.routing.predictor import texts_of
    from catimg.training.crossval import fit_predictor
    from catimg.training.train import prompt_keys

    def fit(X: Inputs, Y: np.ndarray) -> Predictor:
        keys = prompt_keys(texts_of(X)) if joint else None
        fitted = fit_predictor(name, X, Y, params, keys=keys, cross_validate=False)
        if chosen is not None and fitted.share is not None:
            chosen.append(fitted.share)
        return fitted.predictor

    return fit


def _predictions_cv(
    table: Table,
    X: Features,
    repeats: int,
    folds: int,
    predictors: list[tuple[str, str, dict[str, Any]]],
    timing: dict[str, float],
    shares: dict[str, list[float]],
) -> list[dict[str, np.ndarray]]:
    from catimg.training.crossval import cross_predict

    out: list[dict[str, np.ndarray]] = []
    for rep in range(repeats):
        preds = {}
        for label, pname, params in predictors:
            t0 = time.perf_counter()
            fit = trained_fitter(pname, params, chosen=shares.setdefault(label, []))
            preds[label] = cross_predict(fit, X, table.Y, folds=folds, seed=rep).at(None)
            timing[label] = timing.get(label, 0.0) + (time.perf_counter() - t0) / repeats
        out.append(preds)
    return out


def _predictions_split(
    train: Table,
    Xtr: Features,
    Xte: Features,
    predictors: list[tuple[str, str, dict[str, Any]]],
    timing: dict[str, float],
    shares: dict[str, list[float]],
) -> dict[str, np.ndarray]:
    preds = {}
    for label, pname, params in predictors:
        t0 = time.perf_counter()
        fit = trained_fitter(pname, params, chosen=shares.setdefault(label, []))
        preds[label] = fit(Xtr, train.Y).predict(Xte)[0]
        timing[label] = time.perf_counter() - t0
    return preds


def summaries_of(preds: dict[str, np.ndarray], table: Table, scale: tuple[float, float]) -> dict[str, Any]:
    """Summary per predictor label, plus ``oracle`` and ``random``, on the table's measured scores."""
    from catimg.training.evaluate import apgr, hull_curve, summarise, sweep

    c, single = np.asarray(table.costs, float), table.Y.mean(0)
    oracle = sweep(table.Y, table.Y, c, scale)
    curves = {label: sweep(pred, table.Y, c, scale) for label, pred in preds.items()}
    curves |= {"oracle": oracle, "random": hull_curve(c, single)}
    out: dict[str, Any] = {}
    for label, curve in curves.items():
        out[label] = summarise(label, curve, c, single)
        out[label].apgr = apgr(curve, oracle, c, single)
    return out


METRICS = ("auc", "quality_at_best_cost", "cost_to_match_pct", "apgr")


def bootstrap_se(
    preds: dict[str, np.ndarray], table: Table, scale: tuple[float, float], b: int, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Bootstrap standard error over prompts of each metric, and of APGR minus the reference's
    (``d_apgr``)."""
    rng = np.random.default_rng(seed)
    draws: dict[str, dict[str, list[float]]] = {}
    for _ in range(b):
        idx = rng.integers(0, len(table.Y), len(table.Y))
        sub = Table([], table.Y[idx], table.generators, table.costs, table.metric)
        sums = summaries_of({k: v[idx] for k, v in preds.items()}, sub, scale)
        ref = sums[REFERENCE].apgr if REFERENCE in sums else None
        single = sums[SINGLE].apgr if SINGLE in sums else None
        for label, s in sums.items():
            d = draws.setdefault(label, {})
            for m in METRICS:
                v = getattr(s, m)
                if v is not None:
                    d.setdefault(m, []).append(float(v))
            if ref is not None and s.apgr is not None:
                d.setdefault("d_apgr", []).append(float(s.apgr - ref))
            if single is not None and s.apgr is not None:
                d.setdefault("d_single", []).append(float(s.apgr - single))
    return {
        label: {m: float(np.std(v, ddof=1)) for m, v in d.items() if len(v) > 1} for label, d in draws.items()
    }


@dataclass(frozen=True)
class Loaded:
    """A set's tables: ``train`` is what a model may learn from, ``test`` what it is scored on (the same for
    CV)."""

    spec: BenchSet
    train: Table
    test: Table


def load(spec: BenchSet, data: Path) -> Loaded:
    if spec.protocol == "split":
        return Loaded(spec, load_set(spec, data, "train"), load_set(spec, data, "validation"))
    t = load_set(spec, data)
    return Loaded(spec, t, t)


JOINT_LABEL = "joint (all sets)"


def joint_predictions(
    sets: list[Loaded],
    encode: Callable[[list[str]], Features],
    repeats: int,
    folds: int,
    timing: dict[str, float],
    shares: dict[str, list[float]],
) -> dict[str, list[np.ndarray]]:
    """Per set, per repeat: predictions (in the set's units, its own generators) of one default predictor
    trained on every set at once (:mod:`catimg.training.joint`): CV sets out of fold (the held-out prompts
    left out of every set), the split set's validation prompts by a model fitted on all training rows.
    ``timing`` and ``shares`` (the KNN shares chosen) are filled per set."""
    from catimg.measurements import MeasurementTable
    from catimg.routing.predictor import AUTO
    from catimg.training.joint import join
    from catimg.training.train import joint_set_out_of_fold

    tables = [
        MeasurementTable(
            prompts=s.train.prompts,
            generators=s.train.generators,
            Y=s.train.Y,
            counts=np.ones(s.train.Y.shape, np.int64),
            seconds=dict.fromkeys(s.train.generators),
            metric=s.train.metric,
            sources=[s.spec.name],
        )
        for s in sets
    ]
    joint = join(tables)
    X = encode(joint.table.prompts)
    out: dict[str, list[np.ndarray]] = {}
    for k, s in enumerate(sets):
        fit = trained_fitter(AUTO, {}, joint=True, chosen=shares.setdefault(s.spec.name, []))
        cal = joint.sets[k]
        cols = [joint.table.generators.index(g) for g in s.test.generators]
        t0 = time.perf_counter()
        if s.spec.protocol == "split":
            model = fit(X, joint.table.Y)
            out[s.spec.name] = [cal.from_joint(model.predict(encode(s.test.prompts))[0][:, cols])]
        else:
            runs = []
            for rep in range(repeats):
                rows, pred = joint_set_out_of_fold(fit, X, joint, k, folds=folds, seed=rep)
                assert np.array_equal(rows, joint.rows_of(cal.name))  # complete tables: every row is scored
                runs.append(cal.from_joint(pred[:, cols]))
            out[s.spec.name] = runs
        timing[s.spec.name] = (time.perf_counter() - t0) / (1 if s.spec.protocol == "split" else repeats)
    return out


def run_set(
    loaded: Loaded,
    repeats: int,
    folds: int,
    b: int,
    predictors: list[tuple[str, str, dict[str, Any]]],
    encode: Callable[[list[str]], Features],
    extra: dict[str, list[np.ndarray]] | None = None,
    extra_timing: dict[str, float] | None = None,
    extra_shares: dict[str, list[float]] | None = None,
) -> SetResult:
    """Every predictor on one set; ``extra`` adds ready predictions per label (one array per repeat), with
    their timing and chosen KNN shares."""
    from catimg.training.train import metric_scale

    timing: dict[str, float] = dict(extra_timing or {})
    shares: dict[str, list[float]] = dict(extra_shares or {})
    spec, table = loaded.spec, loaded.test
    if spec.protocol == "split":
        runs = [
            _predictions_split(
                loaded.train, encode(loaded.train.prompts), encode(table.prompts), predictors, timing, shares
            )
        ]
        n_train = len(loaded.train.Y)
    else:
        runs = _predictions_cv(table, encode(table.prompts), repeats, folds, predictors, timing, shares)
        n_train = len(table.Y) - len(table.Y) // folds
    for label, arrays in (extra or {}).items():
        for preds, arr in zip(runs, arrays, strict=False):
            preds[label] = arr
    scale = metric_scale(table.metric, table.Y)
    summaries: dict[str, list[Any]] = {}
    for preds in runs:
        for label, s in summaries_of(preds, table, scale).items():
            summaries.setdefault(label, []).append(s)
    se = bootstrap_se(runs[0], table, scale, b) if b > 1 else {}
    chosen = {label: v for label, v in shares.items() if v}
    return SetResult(spec.name, spec.protocol, table, scale, summaries, se, timing, n_train, chosen)


def _cell(vals: list[float | None], se: float | None, pct: bool = False, share: bool = False) -> str:
    """Mean over repeats ± bootstrap s.e.; ``share``: a fraction shown in percent; ``pct``: already in
    percent."""
    v = [x for x in vals if x is not None]
    if not v:
        return "never"
    k = 100 if share else 1
    m = float(np.mean(v)) * k
    s = f"{m:.1f}" if pct or share or abs(m) >= 10 else f"{m:.3f}"
    if se is not None and np.isfinite(se):
        e = se * k
        s += f" ± {e:.1f}" if pct or share or abs(m) >= 10 else f" ± {e:.3f}"
    if len(v) < len(vals):
        s += f" (never in {len(vals) - len(v)}/{len(vals)})"
    return s


def _paired(res: SetResult, label: str, ref: str, se: float | None) -> str:
    """APGR of ``label`` minus ``ref``'s: the mean over repeats of the per-repeat difference (so it is the
    difference of the two APGR columns), ± the bootstrap s.e. of that difference on the first repeat."""
    if ref not in res.summaries:
        return ""
    diffs = [
        None if a.apgr is None or b.apgr is None else a.apgr - b.apgr
        for a, b in zip(res.summaries[label], res.summaries[ref], strict=True)
    ]
    return _cell(diffs, se, share=True)


def render(res: SetResult, repeats: int, folds: int) -> str:
    t = res.table
    proto = (
        f"fitted on {res.n_train} train prompts, scored on {len(t.Y)} validation prompts"
        if res.protocol == "split"
        else f"{repeats}x{folds}-fold cross-validation over {len(t.Y)} prompts"
    )
    lines = [f"== {res.name}: metric {t.metric} (scale {res.scale[0]:g} to {res.scale[1]:g}), {proto}"]
    single = t.Y.mean(0)
    best = int(np.argmax(single))
    for j, g in enumerate(t.generators):
        mark = "  <- best single" if j == best else ""
        lines.append(f"   {g:<14} {t.costs[j]:9.2f} TFLOPs   mean quality {single[j]:.3f}{mark}")
    head = (
        f"   {'policy':<24} {'AUC':>15} {'quality at best cost':>21} {'cost to match %':>18} {'APGR %':>12} "
        f"{'Δ APGR vs knn %':>16} {'Δ vs default %':>14} {'fit+predict s':>13}"
    )
    lines += [head, "   " + "-" * (len(head) - 3)]
    for label, sums in res.summaries.items():
        se = res.se.get(label, {})
        d = (
            ""
            if label in (REFERENCE, "oracle", "random")
            else _paired(res, label, REFERENCE, se.get("d_apgr"))
        )
        ds = "" if label in (SINGLE, "oracle", "random") else _paired(res, label, SINGLE, se.get("d_single"))
        tm = res.timing.get(label)
        lines.append(
            f"   {label:<24} {_cell([s.auc for s in sums], se.get('auc')):>15} "
            f"{_cell([s.quality_at_best_cost for s in sums], se.get('quality_at_best_cost')):>21} "
            f"{_cell([s.cost_to_match_pct for s in sums], se.get('cost_to_match_pct'), pct=True):>18} "
            f"{_cell([s.apgr for s in sums], se.get('apgr'), share=True):>12} {d:>16} {ds:>13} "
            f"{f'{tm:.1f}' if tm else '-':>13}"
        )
    if res.shares:
        chosen = "; ".join(
            f"{label} {np.median(v):.2f} (median of {len(v)}, {min(v):.2f}-{max(v):.2f})"
            for label, v in res.shares.items()
        )
        lines.append(f"   KNN share each fit chose inside its training prompts: {chosen}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from catimg.benchmarks.datasets import default_data_dir
    from catimg.routing.encoder import PromptEncoder
    from catimg.routing.predictor import Features

    ap = argparse.ArgumentParser(
        prog="python -m catimg.benchmarks.routing",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--data",
        type=Path,
        default=None,
        help="shared data folder (default $CATIMG_SHARED_DATA or ../shared/data)",
    )
    ap.add_argument("--repeats", type=int, default=5, help="cross-validation repeats for the small sets")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument(
        "--bootstrap", type=int, default=200, help="bootstrap resamples for the standard errors (0: none)"
    )
    ap.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, from {', '.join(SETS)}")
    ap.add_argument(
        "--no-joint",
        action="store_true",
        help="skip the joint router (one default predictor over all the sets)",
    )
    args = ap.parse_args(argv)
    data = args.data or default_data_dir()
    if not data.is_dir():
        print(f"error: {data}: shared data folder not found; pass --data", file=sys.stderr)
        return 2
    names = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in names if s not in SETS]
    if unknown:
        print(f"error: --sets: unknown set {unknown[0]!r}; use some of {', '.join(SETS)}", file=sys.stderr)
        return 2
    encoder = PromptEncoder()

    def encode(prompts: list[str]) -> Features:
        return Features.of(np.asarray(encoder.encode(prompts), dtype=np.float64), prompts)

    loaded = [load(SETS[n], data) for n in names]
    joint_timing: dict[str, float] = {}
    joint_shares: dict[str, list[float]] = {}
    joint = (
        {}
        if args.no_joint or len(loaded) < 2
        else joint_predictions(loaded, encode, args.repeats, args.folds, joint_timing, joint_shares)
    )
    for s in loaded:
        extra = {JOINT_LABEL: joint[s.spec.name]} if s.spec.name in joint else None
        res = run_set(
            s,
            args.repeats,
            args.folds,
            args.bootstrap,
            PREDICTORS,
            encode,
            extra,
            {JOINT_LABEL: joint_timing[s.spec.name]} if extra else None,
            {JOINT_LABEL: joint_shares.get(s.spec.name, [])} if extra else None,
        )
        print(render(res, args.repeats, args.folds), flush=True)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
