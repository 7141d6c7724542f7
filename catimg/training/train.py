"""Train a router artifact from measurements: embeddings, predictor, costs, budget levels, data card.

Training never needs generator weights: prompts are embedded with the fixed encoder, costs come from the
measurements' ``seconds`` column (when every generator has it), else from every generator's explicit
``cost_seconds`` in the catalog, else from the catalog's cost model in TFLOPs (explicit ``cost_tflops`` or the
analytic estimate from the generator's family, steps and size); see :func:`generator_costs`.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from catimg import __version__
from catimg.config import Catalog
from catimg.errors import ConfigError, MeasurementsError, did_you_mean
from catimg.measurements import MeasurementTable
from catimg.routing.predictor import AUTO, PREDICTORS, BlendPredictor, Features, Inputs
from catimg.routing.router import (
    FORMAT,
    FORMAT_VERSION,
    LEVEL_DEFINITION,
    Router,
    load_router,
    neighbour_index,
    save_router,
)
from catimg.routing.rule import normalise, sweep_path
from catimg.training.crossval import (
    MAX_CV_PROMPTS,
    OOF_FOLDS,
    Fitted,
    Fitter,
    cross_predict,
    fit_predictor,
)
from catimg.training.evaluate import choose, evaluate_predictions, sparse_check

#: Where the named levels put the mean routed cost: this share of the way from the cheapest generator's cost
#: to the mean cost of the max level (lambda = 0, the best predicted quality per prompt).
LEVEL_TARGETS = {"low": 0.25, "medium": 0.5, "high": 0.75}
MIN_HOLDOUT = 20


def metric_scale(metric: str, Y: np.ndarray) -> tuple[float, float]:
    """The scale (lo, hi) of a metric: a known one, else the range of the measured scores."""
    from catimg.training.joint import known_scales

    known = known_scales()
    if metric in known:
        return known[metric]
    lo, hi = float(np.nanmin(Y)), float(np.nanmax(Y))
    if hi - lo < 1e-9:
        hi = lo + 1.0
    return lo, hi


def generator_costs(table: MeasurementTable, catalog: Catalog) -> tuple[str, dict[str, dict[str, Any]]]:
    """(cost unit, per generator {cost, cost_seconds, cost_tflops, cost_kind}).

    Seconds when the measurements give them for every generator, or else when ``models.toml`` gives every
    generator an explicit ``cost_seconds`` (what explain and gen will route by); otherwise TFLOPs from the
    catalog's cost model (device independent), so that training on one machine does not bake in its speed.
    A generator with neither a FLOP estimate nor a cost in seconds is a ConfigError: a cost of 0 would make
    it free.
    """
    from catimg.costs.model import generator_cost
    from catimg.device import cpu_device

    dev = cpu_device()
    measured = all(table.seconds.get(g) is not None for g in table.generators)
    explicit = all(catalog.get(g).cost_seconds is not None for g in table.generators)
    unit = "seconds" if measured or explicit else "tflops"
    info: dict[str, dict[str, Any]] = {}
    for g in table.generators:
        gen = catalog.get(g)
        try:
            # an explicit cost_tflops is the cost (a family without FLOP numbers needs nothing else)
            tflops: float | None = (
                float(gen.cost_tflops)
                if gen.cost_tflops is not None
                else float(generator_cost(gen, dev, use_measured=False).tflops) or None  # 0: no estimate
            )
        except ConfigError as exc:
            if unit == "tflops":
                raise ConfigError(f"{exc}; or give a seconds column in the measurements") from exc
            tflops = None  # seconds are enough
        tflops_kind = "explicit" if gen.cost_tflops is not None else "estimated"
        if unit == "seconds":
            seconds = table.seconds.get(g) if measured else gen.cost_seconds
            assert seconds is not None  # the unit is seconds only when every generator has them
            cost, kind = float(seconds), "measured seconds" if measured else "explicit seconds"
        elif tflops is None:
            raise ConfigError(
                f"{catalog.path}: [generators.{g}]: no FLOP estimate for source {gen.source!r} to train on; "
                "give it cost_tflops, or every generator cost_seconds, or the measurements a seconds column"
            )
        else:
            cost, kind = tflops, f"{tflops_kind} TFLOPs"
        info[g] = {
            "cost_seconds": table.seconds.get(g),
            "cost_tflops": tflops,
            "cost_tflops_kind": tflops_kind,
            "cost": cost,
            "cost_kind": kind,
        }
    return unit, info


def calibrate_levels(
    q_pred: np.ndarray, costs: np.ndarray, scale: tuple[float, float], targets: dict[str, float] | None = None
) -> tuple[dict[str, float], dict[str, float]]:
    """Lambdas for the named levels on reference predictions; returns (levels, mean routed cost per level)."""
    targets = targets or LEVEL_TARGETS
    costs = np.asarray(costs, float)
    path = sweep_path(*normalise(q_pred, costs, scale))
    lams = path.state_lambdas()
    mean_cost = path.mean_costs(costs)
    c_lo = float(costs.min())
    c_hi = float(mean_cost[0])  # the max level (lambda = 0, the path's first state)
    levels: dict[str, float] = {}
    for name, f in sorted(targets.items(), key=lambda kv: kv[1]):
        goal = c_lo + f * (c_hi - c_lo)
        gap = np.abs(mean_cost - goal)
        best = np.flatnonzero(gap <= gap.min() + 1e-12)
        levels[name] = float(lams[best].mean())
    # strictly decreasing from the cheapest level to max (lambda = 0)
    ordered = sorted(targets, key=lambda n: -targets[n])  # high, medium, low
    floor = 0.0
    for name in ordered:
        levels[name] = max(levels[name], floor + 1e-6)
        floor = levels[name]
    levels["max"] = 0.0
    out = {n: levels[n] for n in [*sorted(targets, key=lambda n: targets[n]), "max"]}
    achieved = {n: float(costs[choose(q_pred, costs, lam, scale)].mean()) for n, lam in out.items()}
    return out, achieved


def _data_card(table: MeasurementTable, extra: dict[str, Any] | None) -> dict[str, Any]:
    from catimg.training.sources import CARDS

    sources = []
    for s in table.sources or ([str(table.path)] if table.path else []):
        known = CARDS.get(s)
        sources.append({"id": s, **known} if known else {"id": s})
    licenses = sorted({s["license"] for s in sources if "license" in s})
    citations = [c for s in sources for c in s.get("citations", [])]
    card: dict[str, Any] = {
        "sources": sources,
        "licenses": licenses,
        "citations": citations,
        "measurements_file": table.path.name if table.path else None,
        "metric": table.metric,
        "n_prompts": table.n_prompts,
        "n_measured": table.n_measured(),
        "trained_at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "catimg_version": __version__,
    }
    if extra:
        card.update(extra)
    return card


def check_table(table: MeasurementTable, catalog: Catalog) -> list[str]:
    """MeasurementsError for a table no router can be trained on; returns warnings (one line each)
    otherwise."""
    where = table.path or "measurements"
    for g in table.generators:
        if g not in catalog:
            raise MeasurementsError(
                f'{where}: generator "{g}" is not in {catalog.path}{did_you_mean(g, catalog.names)}; '
                "add it to models.toml or fix the name"
            )
    warnings = []
    for j, g in enumerate(table.generators):
        col = table.Y[:, j]
        ok = col[~np.isnan(col)]
        if len(ok) == 0:
            raise MeasurementsError(
                f'{where}: generator "{g}" has no measurements; measure it or leave it out'
            )
        if not np.all(np.isfinite(ok)):
            raise MeasurementsError(f'{where}: generator "{g}" has non-finite scores; fix or drop those rows')
        if len(ok) == 1:
            warnings.append(
                f"{g}: measured on 1 prompt only; its prediction is that score everywhere, with a wide "
                "uncertainty (measure more prompts)"
            )
        elif float(np.ptp(ok)) == 0.0:
            warnings.append(
                f"{g}: every score is {ok[0]:g}; the router predicts that constant for it (is the "
                "metric right?)"
            )
    if table.n_prompts < 2:
        raise MeasurementsError(
            f"{where}: only {table.n_prompts} prompt measured; training needs at least 2 prompts"
        )
    return warnings


def _sparse_held_out(
    fitted: Fitted, ref: np.ndarray, Yc: np.ndarray, n_full: int
) -> tuple[dict[str, Any], list[str]]:
    """The data card's held-out section and warnings when too few prompts are scored by every generator for
    routing numbers: why, and the out-of-fold :func:`~catimg.training.evaluate.sparse_check` against the
    generators' mean scores."""
    share = (
        f"; the KNN share is {fitted.predictor.weight:.2f} (fitting it needs such prompts too)"
        if isinstance(fitted.predictor, BlendPredictor) and fitted.share is None
        else ""
    )
    check = sparse_check(ref, Yc)
    section = {
        "note": f"too few prompts measured on every generator ({n_full} < {MIN_HOLDOUT}) for held-out "
        "numbers: the router learns from the others too, but only a prompt scored by every generator shows "
        f"which one wins{share}",
        "sparse_check": asdict(check),
    }
    if not check.worse:
        return section, []
    if check.order is not None:
        why = (
            f"out of fold, the router orders {100 * check.order:.0f} % of {check.n_pairs} pairs of scores on "
            f"a prompt as measured, the generators' mean scores {100 * (check.order_means or 0.0):.0f} %: "
            "on these measurements it would route worse than ignoring the prompt; measure more prompts on "
            "several generators (catimg calibrate) before relying on it"
        )
    else:
        why = (
            f"out of fold, the router's predicted scores miss the {check.n_scores} measured ones by "
            f"{check.rmse:.3g} (RMS), the generators' mean scores by {check.rmse_means:.3g}: it has not "
            "learned from these prompts yet, and with no prompt scored twice nothing shows how it routes; "
            "measure more prompts on several generators (catimg calibrate)"
        )
    return section, [why]


def held_out_numbers(
    name: str,
    fitted: Fitted,
    X: Inputs,
    Y: np.ndarray,
    costs: np.ndarray,
    scale: tuple[float, float],
    table: MeasurementTable,
    metric: str,
    unit: str,
    seed: int,
) -> tuple[np.ndarray, dict[str, Any], list[str]]:
    """(reference predictions for the budget levels, the data card's held-out section, warnings), from the
    out-of-fold pass of :func:`~catimg.training.crossval.fit_predictor` (in-sample below 10 prompts)."""
    if fitted.oof is None:
        return (
            fitted.predictor.predict(X)[0],
            {"note": "too few prompts (< 10) for cross-validation; budget levels from in-sample predictions"},
            [],
        )
    rows, ref = fitted.oof.rows, fitted.held_out()
    Yc = Y[rows]
    folds = min(OOF_FOLDS, len(rows))
    full = np.flatnonzero(~np.any(np.isnan(Yc), axis=1))
    if len(full) < MIN_HOLDOUT or len(table.generators) < 2:
        return ref, *_sparse_held_out(fitted, ref, Yc, len(full))
    rep = evaluate_predictions(
        ref[full], Yc[full], costs, scale, table.generators, metric=metric, cost_unit=unit, name=name
    )
    sample = f" of a seeded sample of {len(rows)} prompts" if len(rows) < len(X) else ""
    heldout = {
        "split": (
            f"{folds}-fold cross-validation (seed {seed}){sample}: each of the {len(full)} prompts "
            "measured on every generator is predicted by a model fitted without it; the shipped predictor "
            f"is fitted on all prompts{fitted.share_note()}"
        ),
        "n_test": len(full),
        "single": rep.single,
        "best_single": rep.best_single,
        "summaries": [s.__dict__ for s in rep.summaries],
    }
    router_s, _, random_s = rep.summaries
    warnings = []
    if router_s.auc < random_s.auc - 1e-9:
        warnings.append(
            f"held-out routing AUC {router_s.auc:.4g} is below prompt-blind random routing "
            f"({random_s.auc:.4g}): the prompts do not predict which generator wins here; routing by "
            "budget still works, but `--budget` mixes generators no better than chance"
        )
    return ref, heldout, warnings


def prompt_keys(prompts: list[str]) -> np.ndarray:
    """:func:`~catimg.measurements.prompt_key` of every prompt: what cross-validation folds are drawn over."""
    from catimg.measurements import prompt_key

    return np.array([prompt_key(p) for p in prompts])


def joint_set_out_of_fold(
    fit: Fitter, X: Inputs, joint: Any, set_index: int, folds: int = OOF_FOLDS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The routing benchmark's protocol for one set of a joint table: (the rows of that set measured on all
    of its generators, their out-of-fold predictions on the joint scale), each fold predicted by ``fit`` on
    every row of every set except that fold's prompts (TIFA and DSG share prompts)."""
    t = joint.table
    own = np.flatnonzero(joint.row_set == set_index)
    cols = [t.generators.index(g) for g, n in joint.sets[set_index].n_measured.items() if n]
    rows = own[~np.any(np.isnan(t.Y[np.ix_(own, cols)]), axis=1)]
    oof = cross_predict(fit, X, t.Y, rows, prompt_keys(t.prompts), folds, seed, fit_on_all=True)
    return rows, oof.at(None)


def held_out_by_set(
    name: str,
    joint: Any,
    costs: np.ndarray,
    unit: str,
    seed: int,
    fitted: Fitted,
) -> dict[str, Any]:
    """Per set of a joint table: routing numbers of the joint predictor on that set's held-out prompts, in the
    set's own units, among the set's own generators, from the one out-of-fold pass over the joint table
    that :func:`~catimg.training.crossval.fit_predictor` made."""
    out: dict[str, Any] = {}
    t = joint.table
    assert fitted.oof is not None
    rows, pred = fitted.oof.rows, fitted.held_out()
    sample = f" of a seeded sample of {len(rows)} rows" if len(rows) < t.n_prompts else ""
    for k, cal in enumerate(joint.sets):
        gens = [g for g, n in cal.n_measured.items() if n]
        cols = [t.generators.index(g) for g in gens]
        mine = (joint.row_set[rows] == k) & ~np.any(np.isnan(t.Y[np.ix_(rows, cols)]), axis=1)
        if mine.sum() < MIN_HOLDOUT:
            own = joint.row_set[rows] == k
            check = sparse_check(
                cal.from_joint(pred[np.ix_(own, cols)]), cal.from_joint(t.Y[np.ix_(rows[own], cols)])
            )
            out[cal.name] = {
                "note": f"too few prompts measured on all of its generators (< {MIN_HOLDOUT})",
                "sparse_check": asdict(check),
            }
            continue
        rep = evaluate_predictions(
            cal.from_joint(pred[np.ix_(mine, cols)]),
            cal.from_joint(t.Y[np.ix_(rows[mine], cols)]),
            costs[cols],
            (cal.lo, cal.hi),
            gens,
            metric=cal.metric,
            cost_unit=unit,
            name=name,
        )
        out[cal.name] = {
            "metric": cal.metric,
            "scale": [cal.lo, cal.hi],
            "n_test": int(mine.sum()),
            "single": rep.single,
            "best_single": rep.best_single,
            "summaries": [sm.__dict__ for sm in rep.summaries],
            "split": (
                f"{OOF_FOLDS}-fold cross-validation over the prompts of every set (seed {seed}){sample}; "
                "each fold predicted by the joint predictor fitted on every row of every set except that "
                f"fold's prompts{fitted.share_note()}"
            ),
        }
    return out


def joint_scale() -> tuple[float, float]:
    from catimg.training.joint import JOINT_SCALE

    return JOINT_SCALE


def _joint_card(
    card: dict[str, Any],
    name: str,
    X: Inputs,
    joint: Any,
    costs: np.ndarray,
    unit: str,
    seed: int,
    fitted: Fitted,
) -> list[str]:
    """Fill the data card's joint sections (sets, per-set held-out numbers, comparisons); return warnings."""
    from catimg.training.joint import JOINT_DESCRIPTION, compare_sets

    card["metric_description"] = JOINT_DESCRIPTION
    rows = [joint.rows_of(c.name) for c in joint.sets]  # contiguous: the joint table stacks the sets
    card["sets"] = [
        {
            "name": c.name,
            "metric": c.metric,
            "range": [c.lo, c.hi],
            "n_prompts": c.n_prompts,
            "n_measured": {g: n for g, n in c.n_measured.items() if n},
            "rows": [int(r[0]), int(r[-1]) + 1] if len(r) else [0, 0],
        }
        for c, r in zip(joint.sets, rows, strict=True)
    ]
    card["held_out_by_set"] = by_set = held_out_by_set(name, joint, costs, unit, seed, fitted)
    pairs = compare_sets(joint)
    card["set_comparisons"] = [p.to_json() for p in pairs]
    return [
        f"on {set_name}, out of fold, the router is worse than the generators' mean scores "
        "(see its sparse_check in the data card); measure more of its prompts on several generators"
        for set_name, section in by_set.items()
        if section.get("sparse_check", {}).get("worse")
    ] + [f"the sets disagree on how two generators compare: {p.line()}" for p in pairs if p.disagree]


def _generator_entries(
    table: MeasurementTable, catalog: Catalog, cinfo: dict[str, dict[str, Any]], joint: Any = None
) -> list[dict[str, Any]]:
    counts = table.n_measured()
    by_set = joint.n_measured_by_set() if joint is not None else {}
    gens = []
    for g in table.generators:
        gen = catalog.get(g)
        gens.append(
            {
                "name": g,
                "settings_hash": gen.settings_hash(),
                "settings": gen.settings(),
                "source": gen.source,
                "cost": cinfo[g]["cost"],
                "cost_kind": cinfo[g]["cost_kind"],
                "cost_seconds": cinfo[g]["cost_seconds"],
                "cost_tflops": cinfo[g]["cost_tflops"],
                "n_measured": counts[g],
                **({"n_measured_by_set": by_set.get(g, {})} if joint is not None else {}),
            }
        )
    return gens


def _predictor_name(predictor: str) -> str:
    """The predictor ``--predictor`` names (``auto``: the default); MeasurementsError for an unknown one."""
    name = AUTO if predictor == "auto" else predictor
    if name not in PREDICTORS:
        raise MeasurementsError(
            f'--predictor "{predictor}" is unknown{did_you_mean(predictor, [*PREDICTORS, "auto"])}; '
            f"use one of auto, {', '.join(PREDICTORS)}"
        )
    return name


def _budget_section(levels: dict[str, float], achieved: dict[str, float], n: int) -> dict[str, Any]:
    """The artifact's ``budget`` section: the calibrated levels and what they were calibrated on."""
    return {
        "levels": levels,
        "definition": LEVEL_DEFINITION,
        "targets": LEVEL_TARGETS,
        "reference": (
            f"out-of-fold predictions on {min(n, MAX_CV_PROMPTS)} training prompts"
            if n >= 10
            else "in-sample predictions on the training prompts"
        ),
        "mean_cost_at_level": achieved,
    }


def train_router(
    table: MeasurementTable,
    catalog: Catalog,
    out_dir: str | Path,
    predictor: str = "auto",
    metric: str | None = None,
    encoder: Any = None,
    seed: int = 0,
    data_card: dict[str, Any] | None = None,
    predictor_params: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
    joint: Any = None,
) -> Router:
    """Fit a predictor on ``table`` and write a router artifact to ``out_dir``; return it loaded.

    Held-out numbers in the data card and the budget levels come from 5-fold cross-validation (out-of-fold
    predictions) on at most MAX_CV_PROMPTS prompts; the shipped predictor is fitted on all prompts.
    ``progress`` gets one short line per stage. Warnings (one line each) are in
    ``router.data_card["warnings"]``.

    ``joint`` (a :class:`catimg.training.joint.JointTable`, whose ``table`` is then ``table``) trains on
    several sets at once: quality is on the joint scale, and the data card gets each set's calibration,
    held-out numbers per set and the sets' comparisons of shared generator pairs.
    """
    from catimg.routing.encoder import default_encoder

    say = progress or (lambda _msg: None)
    name = _predictor_name(predictor)
    warnings = check_table(table, catalog)
    metric = table.metric if joint is not None else (metric or table.metric)
    unit, cinfo = generator_costs(table, catalog)  # a cost error before minutes of embedding, not after
    enc = encoder or default_encoder()
    t0 = time.perf_counter()
    say(f"embedding {table.n_prompts} prompts")
    X = Features.of(enc.encode(table.prompts).astype(np.float64), table.prompts)
    t_embed = time.perf_counter() - t0
    Y = table.Y
    scale = metric_scale(metric, Y) if joint is None else joint_scale()
    costs = np.array([cinfo[g]["cost"] for g in table.generators])

    say(f"fitting {name} on {table.n_prompts} prompts x {len(table.generators)} generators")
    fitted = fit_predictor(
        name,
        X,
        Y,
        predictor_params,
        seed,
        keys=prompt_keys(table.prompts) if joint is not None else None,
        fit_on_all=joint is not None,  # one pass over every set's prompts serves each set's numbers
        progress=say,
    )
    final = fitted.predictor
    ref, heldout, more = held_out_numbers(name, fitted, X, Y, costs, scale, table, metric, unit, seed)
    warnings += more
    levels, achieved = calibrate_levels(ref, costs, scale)

    card = _data_card(table, data_card)
    card["held_out"] = heldout
    if joint is not None and fitted.oof is not None:
        warnings += _joint_card(card, name, X, joint, costs, unit, seed, fitted)
    card["warnings"] = warnings
    card["training_seconds"] = {
        "encoder_precision": getattr(enc, "precision", None),  # of the vectors, embedded or cached
        "embed": round(t_embed, 2),
        "fit": round(fitted.fit_seconds, 2),
        "total": round(time.perf_counter() - t0, 2),
    }
    budget = _budget_section(levels, achieved, len(X))
    config: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "encoder": {"id": enc.encoder_id, "dim": int(X.shape[1])},
        "generators": _generator_entries(table, catalog, cinfo, joint),
        "cost_unit": unit,
        "metric": {"name": metric, "scale": [scale[0], scale[1]], "higher_is_better": True},
        "budget": budget,
        "predictor": {"name": name, "params": final.params()},
        "data_card": card,
    }
    say(f"writing {out_dir}")
    save_router(out_dir, config, final, table.prompts, neighbour_index(X.emb, seed))
    return load_router(out_dir)
