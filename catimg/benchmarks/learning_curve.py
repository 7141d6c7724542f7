"""Learning curve: how held-out routing quality grows with the number of measured training prompts.

    python -m catimg.benchmarks.learning_curve [--data ../shared/data] [--sizes 750,1500,3000,4500,-1]
        [--repeats 3] [--predictors knn,auto] [--one-score 0] [--seed 0]

Where :mod:`catimg.benchmarks.fewshot` takes measurements away from one generator, this takes whole prompts
away: on PQPP (the one set here large enough for a curve), each repeat fits every predictor on a random
subset of n of the 6,000 train prompts and scores it on the 2,000 validation prompts, the same in every
repeat, that no fit sees. The predictors are fitted as ``catimg train`` fits them (``blend`` and ``lexical``
choose their KNN share by cross-validation inside the n prompts; ``auto`` is ``catimg train``'s default).
Costs as in :mod:`catimg.benchmarks.routing` (GLIDE assumed at a tenth of SDXL's: with two generators APGR
does not depend on that ratio).

``--one-score S`` makes the training design sparse: a share S of the n prompts keep one of their two scores
(the generator drawn at random), as measurements collected in use are (``gen --score`` scores the one image it
made) and as some public sets are; the validation prompts keep both.

Printed per n: each predictor's APGR (the share of the oracle's gain over random mixing that it recovers, see
:mod:`catimg.training.evaluate`), mean ± standard error over the repeats, and each one's paired difference to
the first predictor (by default the paper's KNN, k = 100). With all the training prompts every repeat makes
the same fit, so that row has no ± (the sampling error of the validation prompts themselves is
:mod:`catimg.benchmarks.routing`'s bootstrap). The question it answers: is a predictor's advantage
a matter of data (it grows with n) or of what it can read from a prompt (it stays)?
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from catimg.benchmarks.routing import Table
    from catimg.routing.predictor import Features

DEFAULT_SIZES = (750, 1500, 3000, 4500, -1)


@dataclass(frozen=True)
class Curve:
    """APGR (a share, 0-1) per training size and predictor: ``apgr[n][name]`` holds one value per repeat."""

    sizes: list[int]
    predictors: list[str]
    apgr: dict[int, dict[str, list[float]]]
    n_train: int  # training prompts the subsets are drawn from (a size of -1 means all of them)
    n_test: int
    one_score: float = 0.0  # share of the training prompts keeping one score (a new draw every repeat)


def _split(table: Table, idx: np.ndarray) -> Table:
    from catimg.benchmarks.routing import Table

    return Table([table.prompts[i] for i in idx], table.Y[idx], table.generators, table.costs, table.metric)


def run(
    train: Table,
    test: Table,
    sizes: tuple[int, ...],
    repeats: int,
    predictors: list[str],
    seed: int = 0,
    one_score: float = 0.0,
) -> Curve:
    """The curve (see the module docstring): subsets of ``train`` (a share ``one_score`` of their prompts
    keeping one score), scored on ``test``."""
    from catimg.routing.encoder import default_encoder
    from catimg.routing.predictor import Features
    from catimg.training.train import metric_scale

    enc = default_encoder()
    E = enc.encode(train.prompts).astype(np.float64)
    Xte = Features.of(enc.encode(test.prompts).astype(np.float64), test.prompts)
    scale = metric_scale(train.metric, np.vstack([train.Y, test.Y]))
    rng = np.random.default_rng(seed)
    out: dict[int, dict[str, list[float]]] = {s: {p: [] for p in predictors} for s in sizes}
    for _ in range(repeats):
        perm = rng.permutation(len(train.prompts))
        drawn = _one_score(train, one_score, rng) if one_score > 0 else train
        for size in sizes:
            done = out[size]
            if size < 0 and not one_score and done[predictors[0]]:  # all prompts: the same fit every repeat
                for name in predictors:
                    done[name].append(done[name][0])
                continue
            rows = perm if size < 0 else perm[: min(size, len(perm))]
            for name, value in _scores(drawn, E, rows, test, Xte, predictors, scale, seed).items():
                done[name].append(value)
    return Curve(list(sizes), list(predictors), out, len(train.prompts), len(test.prompts), one_score)


def _one_score(table: Table, share: float, rng: np.random.Generator) -> Table:
    """``table`` with a random share of its prompts keeping the score of one random measured generator."""
    from catimg.benchmarks.routing import Table

    Y = table.Y.copy()
    for i in np.flatnonzero(rng.random(len(Y)) < share):
        measured = np.flatnonzero(~np.isnan(Y[i]))
        Y[i, np.setdiff1d(measured, [rng.choice(measured)])] = np.nan
    return Table(table.prompts, Y, table.generators, table.costs, table.metric)


def _scores(
    train: Table,
    E: np.ndarray,
    rows: np.ndarray,
    test: Table,
    Xte: Features,
    predictors: list[str],
    scale: tuple[float, float],
    seed: int,
) -> dict[str, float]:
    """Each predictor fitted on the training prompts ``rows`` and its APGR on ``test`` (NaN where the oracle
    gains nothing there)."""
    from catimg.benchmarks.routing import summaries_of
    from catimg.routing.predictor import Features
    from catimg.training.crossval import fit_predictor

    rows = np.sort(rows)
    sub = _split(train, rows)
    X = Features.of(E[rows], sub.prompts)
    preds = {
        name: fit_predictor(name, X, sub.Y, seed=seed, cross_validate=False).predictor.predict(Xte)[0]
        for name in predictors
    }
    summary = summaries_of(preds, test, scale)
    return {name: np.nan if summary[name].apgr is None else float(summary[name].apgr) for name in preds}


def _mean_se(vals: list[float], se: bool = True) -> str:
    a = 100 * np.asarray(vals, float)
    a = a[~np.isnan(a)]
    if not len(a):
        return "-"
    if not se or len(a) < 2:
        return f"{a.mean():5.1f}      "
    return f"{a.mean():5.1f} ± {a.std(ddof=1) / np.sqrt(len(a)):.1f}"


def render(curve: Curve, title: str) -> str:
    ref = curve.predictors[0]
    head = f"{'prompts':>8}" + "".join(f"  {p + ' APGR %':>16}" for p in curve.predictors)
    head += "".join(f"  {p + ' - ' + ref:>18}" for p in curve.predictors[1:])
    lines = [title, head]
    for size in curve.sizes:
        res = curve.apgr[size]
        n = curve.n_train if size < 0 else min(size, curve.n_train)
        spread = size >= 0 or curve.one_score > 0  # all prompts, all scores: one fit, no spread
        cells = [f"{_mean_se(res[p], spread):>16}" for p in curve.predictors]
        cells += [
            f"{_mean_se(list(np.subtract(res[p], res[ref])), spread):>18}" for p in curve.predictors[1:]
        ]
        lines.append(f"{n:>8}  " + "  ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from catimg.benchmarks.datasets import default_data_dir
    from catimg.benchmarks.routing import SETS, load_set
    from catimg.routing.predictor import PREDICTORS

    ap = argparse.ArgumentParser(
        prog="python -m catimg.benchmarks.learning_curve",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--data", type=Path, default=None, help="the shared data folder")
    ap.add_argument("--sizes", default=None, help="training prompts, comma-separated; -1 = all")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--predictors", default="knn,auto", help="comma-separated; the first is the reference")
    ap.add_argument(
        "--one-score", type=float, default=0.0, help="share of training prompts keeping one score (0-1)"
    )
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    data = a.data or default_data_dir()
    if not data.is_dir():
        print(f"error: {data}: shared data folder not found; pass --data", file=sys.stderr)
        return 2
    if a.repeats < 1 or not 0.0 <= a.one_score <= 1.0:
        print("error: --repeats must be at least 1 and --one-score between 0 and 1", file=sys.stderr)
        return 2
    try:
        sizes = tuple(int(s) for s in a.sizes.split(",")) if a.sizes else DEFAULT_SIZES
    except ValueError:
        print(f"error: --sizes {a.sizes!r}: give whole numbers, comma-separated (-1 = all)", file=sys.stderr)
        return 2
    if any(s == 0 or s < -1 for s in sizes):
        print("error: --sizes: every size must be positive (or -1 for all prompts)", file=sys.stderr)
        return 2
    predictors = [p.strip() for p in a.predictors.split(",") if p.strip()]
    unknown = [p for p in predictors if p != "auto" and p not in PREDICTORS]
    if not predictors or unknown:
        known = ", ".join(["auto", *PREDICTORS])
        print(
            f"error: --predictors: unknown {unknown[0]!r}; use some of {known}"
            if unknown
            else f"error: --predictors: name at least one of {known}",
            file=sys.stderr,
        )
        return 2
    t0 = time.perf_counter()
    train, test = (
        load_set(SETS["pqpp"], data, split="train"),
        load_set(SETS["pqpp"], data, split="validation"),
    )
    curve = run(train, test, sizes, a.repeats, predictors, a.seed, a.one_score)
    title = (
        f"learning curve on pqpp: {a.repeats} repeats, subsets of {curve.n_train} training prompts, "
        f"{curve.n_test} test prompts, generators {', '.join(train.generators)}, seed {a.seed}"
        + (f", {a.one_score:.0%} of the training prompts keeping one score" if a.one_score else "")
    )
    print(render(curve, title))
    print(f"\n({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
