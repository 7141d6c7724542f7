"""`catimg train` and `catimg eval`: fit a router artifact from measurements and evaluate it on held-out
ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from catimg.cli import app
from catimg.cli.common import DEVICE_OPT, JSON_OPT, MODELS_OPT
from catimg.errors import InputError, MeasurementsError


def _load_tables(
    measurements: list[Path] | None,
    db: Path | None,
    catalog: Any,
    metric: str | None,
    generators: list[str] | None = None,
) -> list[Any]:
    """One MeasurementTable per --measurements file, then the --db store's; at least one source is required.
    With several sets, --metric applies to a set only where that set has rows of it."""
    files = list(measurements or [])
    if not files and db is None:
        raise InputError(
            "give --measurements FILE (CSV or JSONL, repeatable) and/or --db PATH (a calibration database)"
        )
    if len(files) + (db is not None) == 1:
        return [_load_table(files[0] if files else None, db, catalog, metric, generators)]
    return [_load_table(f, None, catalog, metric, generators, metric_if_present=True) for f in files] + (
        [_load_table(None, db, catalog, metric, generators)] if db is not None else []
    )


def _load_table(
    measurements: Path | None,
    db: Path | None,
    catalog: Any,
    metric: str | None,
    generators: list[str] | None = None,
    metric_if_present: bool = False,
) -> Any:
    if (measurements is None) == (db is None):
        raise InputError(
            "give exactly one of --measurements FILE (CSV or JSONL) or --db PATH (a calibration database)"
        )
    if measurements is not None:
        from catimg.measurements import read_measurements

        return read_measurements(
            measurements,
            known_generators=None if catalog is None else catalog.names,
            metric=metric,
            catalog_path=None if catalog is None else catalog.path,
            metric_if_present=metric_if_present,
        )
    from catimg.calibration.store import Store

    store = Store.open(db, create=False)
    try:
        if metric is None:
            have = store.metrics()
            if len(have) != 1:
                listing = ", ".join(have) or "none"
                raise MeasurementsError(
                    f"{store.path}: choose a metric with --metric (stored metrics: {listing})"
                )
            metric = next(iter(have))
        if catalog is not None:
            # the catalog's current settings only: a generator changed since it was measured is not trained on
            # its old measurements (those stay in the store under the old settings hash)
            for name in generators or []:
                catalog.get(name)
            chosen = [g for g in catalog.generators if not generators or g.name in generators]
            table = store.to_table(metric, chosen)
            measured = table.n_measured()
            table = table.select([g for g in table.generators if measured[g] > 0])
        else:
            table = store.to_table(metric, generators)
    finally:
        store.close()
    unknown = [g for g in table.generators if catalog is not None and g not in catalog]
    if unknown:
        table = table.select([g for g in table.generators if g in catalog])
    return table


# the options of train and eval (declared here so that each command's signature is one line per option)
_TRAIN_MEASUREMENTS = typer.Option(
    None,
    "--measurements",
    "-M",
    help=(
        "Long-format CSV or JSONL: prompt,generator,score[,metric,seconds,seed,source]. Repeat it to "
        "train on several sets at once (each keeps its metric; see --scale)."
    ),
    show_default=False,
)

_TRAIN_DB = typer.Option(
    None,
    "--db",
    help=(
        "Train from a calibration database (see `catimg calibrate`), alone or as one more set next to "
        "--measurements."
    ),
    show_default=False,
)

_TRAIN_OUT = typer.Option(
    ..., "--out", "-o", help="Folder to write the router artifact to.", show_default=False
)

_TRAIN_SCALE = typer.Option(
    None,
    "--scale",
    help=(
        "With several sets: the range METRIC=LO:HI of a metric catimg does not know (its worst and best "
        "possible scores)."
    ),
    show_default=False,
)

_TRAIN_PREDICTOR = typer.Option(
    "auto",
    "--predictor",
    "-p",
    help="auto (the best on held-out data: lexical), lexical, ridge, blend or knn (the paper's reference).",
)

_TRAIN_METRIC = typer.Option(
    None,
    "--metric",
    help="Use only rows of this metric (required when the file mixes metrics).",
    show_default=False,
)

_TRAIN_HOLDOUT = typer.Option(
    None,
    "--holdout",
    help=(
        "Keep this share of prompts out (a stable split by prompt text; `catimg eval --holdout` uses the "
        "same)."
    ),
    show_default=False,
)

_TRAIN_GENERATORS = typer.Option(
    None,
    "--generators",
    "-g",
    help=(
        "With --db: comma-separated generators to train on (default: every catalog generator with "
        "measurements)."
    ),
    show_default=False,
)

_TRAIN_FORCE = typer.Option(False, "--force", help="Overwrite a router already in --out.")

_TRAIN_KNN_SHARE = typer.Option(
    None,
    "--knn-share",
    help=(
        "blend and lexical: fix the share of the nearest-neighbour part in [0, 1] (0: the linear part alone, "
        "1: the neighbours alone) instead of fitting it by cross-validation."
    ),
    show_default=False,
)

_TRAIN_SEED = typer.Option(
    0,
    "--seed",
    help=(
        "Seed of the cross-validation folds (held-out numbers, budget levels, the KNN share) and, beyond "
        "8,192 prompts, of the neighbour clusters' sample: the same data and seed give the same router."
    ),
)

_EVAL_ROUTER = typer.Option(
    None,
    "--router",
    "-r",
    help="Router artifact folder (default: the bundled router).",
    show_default=False,
)

_EVAL_MEASUREMENTS = typer.Option(
    None,
    "--measurements",
    "-M",
    help="Held-out long-format CSV or JSONL measured on the router's generators.",
    show_default=False,
)

_EVAL_DB = typer.Option(
    None,
    "--db",
    help="Evaluate on a calibration database instead (with --holdout: its held-out part).",
    show_default=False,
)

_EVAL_HOLDOUT = typer.Option(
    None,
    "--holdout",
    help="Evaluate only on this held-out share (the same stable split as `train --holdout`).",
    show_default=False,
)

_EVAL_METRIC = typer.Option(
    None,
    "--metric",
    help="Use only rows of this metric (default: the router's metric when the file has it).",
    show_default=False,
)

_EVAL_PLOT = typer.Option(
    None,
    "--plot",
    help=("Also draw the quality-cost curves to this PNG (needs matplotlib: pip install 'catimg\\[plot]')."),
    show_default=False,
)


@app.command()
def train(
    measurements: list[Path] = _TRAIN_MEASUREMENTS,
    db: Path = _TRAIN_DB,
    models: Path = MODELS_OPT,
    out: Path = _TRAIN_OUT,
    scale: list[str] = _TRAIN_SCALE,
    predictor: str = _TRAIN_PREDICTOR,
    metric: str = _TRAIN_METRIC,
    holdout: float = _TRAIN_HOLDOUT,
    generators: str = _TRAIN_GENERATORS,
    force: bool = _TRAIN_FORCE,
    knn_share: float = _TRAIN_KNN_SHARE,
    seed: int = _TRAIN_SEED,
    json_out: bool = JSON_OPT,
) -> None:
    """Train a router from measured quality (no generator weights needed).

    Examples:

      catimg train --measurements m.csv --models models.toml --out my-router

      python -m catimg.benchmarks.datasets genai_bench --out genai.csv
      catimg train -M genai.csv --out my-router

      catimg train -M genai.csv -M tifa.csv --db ~/.cache/catimg/measurements.db --out joint-router

    With several sets, each set's scores are mapped by its metric's range to one joint scale (0-1) and the
    data card reports held-out numbers per set.
    """
    from catimg.cli.render import print_json
    from catimg.config import load_catalog
    from catimg.training.train import train_router

    _check_out(out, force)
    params = _predictor_params(predictor, knn_share)
    catalog = load_catalog(models)
    names = [n.strip() for n in generators.split(",") if n.strip()] if generators else None
    tables = _load_tables(measurements, db, catalog, metric, names)
    if holdout is not None:
        from catimg.measurements import split_holdout

        tables = [split_holdout(t, holdout)[0] for t in tables]
    joint = _join(tables, db, scale) if len(tables) > 1 else None
    table = joint.table if joint is not None else tables[0]
    extra = None if db is None else {"store": _store_card(db, tables[-1], catalog)}  # the user's own rows
    from catimg.cli.progress import embedding_progress

    with embedding_progress():  # the embedding stage of thousands of prompts takes minutes
        router = train_router(
            table,
            catalog,
            out,
            predictor=predictor,
            metric=metric,
            seed=seed,
            joint=joint,
            data_card=extra,
            predictor_params=params,
            progress=_progress_line(table.n_prompts < PROGRESS_FROM),
        )
    _print_warnings(router.data_card.get("warnings", []))
    if json_out:
        cfg = router.config
        keys = ("generators", "cost_unit", "metric", "budget", "predictor", "data_card")
        print_json({"router": str(router.path), **{k: cfg[k] for k in keys}})
        return
    _render_train(router)


def _predictor_params(predictor: str, knn_share: float | None) -> dict[str, float] | None:
    """``--knn-share`` as the predictor's fixed ``weight``; InputError for a share outside [0, 1] or a
    predictor without a KNN part."""
    if knn_share is None:
        return None
    if not 0.0 <= knn_share <= 1.0:
        raise InputError(
            f"--knn-share {knn_share}: must be a share between 0 and 1 (0: the linear part alone, 1: the "
            "neighbours alone)"
        )
    from catimg.routing.predictor import AUTO, PREDICTORS, BlendPredictor

    cls = PREDICTORS.get(AUTO if predictor == "auto" else predictor)
    if cls is not None and not issubclass(cls, BlendPredictor):
        raise InputError(
            f"--knn-share: --predictor {predictor} has no nearest-neighbour part to share with; use it with "
            "blend or lexical, or leave it out"
        )
    return {"weight": knn_share}


def _join(tables: list[Any], db: Path | None, scale: list[str] | None) -> Any:
    """Several sets on one joint scale, each named after its source (the store's after its file)."""
    from catimg.training.joint import join, parse_scales, set_name

    names = [set_name(t, f"set{i + 1}") for i, t in enumerate(tables)]
    if db is not None:  # the store's rows come from several sources (calibrate, gen): name the set after it
        names[-1] = f"store:{db.expanduser().name}"
    return join(tables, names=names, scales=parse_scales(scale))


def _print_warnings(warnings: list[str]) -> None:
    from catimg.cli.render import error_console, label

    for w in warnings:
        error_console().print(label("warning:", "yellow", w), highlight=False, soft_wrap=True)


def _render_train(router: Any) -> None:
    """train's text output: the router written, its generators, its budget levels, the held-out numbers."""
    from rich.table import Table

    from catimg.cli.render import console

    cfg = router.config
    con = console()
    card = router.data_card
    con.print(
        f"Trained a {router.predictor_name} router on {card['n_prompts']} prompts "
        f"(metric {router.metric}, scale {router.scale[0]:g}-{router.scale[1]:g}) -> {router.path}"
    )
    t = Table(title="Generators", title_justify="left")
    for col in ("generator", "measured prompts", f"cost ({router.cost_unit})", "cost source"):
        t.add_column(col, justify="right" if col != "generator" else "left")
    for g in cfg["generators"]:
        t.add_row(g["name"], str(g["n_measured"]), f"{g['cost']:.4g}", g["cost_kind"])
    con.print(t)
    lv = Table(title="Budget levels (calibrated on the training prompts)", title_justify="left")
    for col in ("level", "lambda", f"mean cost ({router.cost_unit})"):
        lv.add_column(col, justify="right" if col != "level" else "left")
    for name, lam in router.levels.items():
        lv.add_row(name, f"{lam:.4f}", f"{cfg['budget']['mean_cost_at_level'][name]:.4g}")
    con.print(lv)
    ho = card.get("held_out", {})
    if "summaries" in ho:
        con.print(
            _summary_table(
                ho["summaries"],
                ho["single"],
                ho["best_single"],
                router.cost_unit,
                f"Held-out ({ho['n_test']} prompts)",
            )
        )
    elif "held_out_by_set" not in card:
        con.print(f"held-out: {ho.get('note', 'not computed')}")
        if "sparse_check" in ho:
            con.print(_sparse_line(ho["sparse_check"]))
    for set_name, sh in card.get("held_out_by_set", {}).items():
        if "summaries" not in sh:
            con.print(f"held-out on {set_name}: {sh['note']}")
            if "sparse_check" in sh:
                con.print(f"  {_sparse_line(sh['sparse_check'])}")
            continue
        con.print(
            _summary_table(
                sh["summaries"],
                sh["single"],
                sh["best_single"],
                router.cost_unit,
                f"Held-out on {set_name} ({sh['n_test']} prompts, {sh['metric']})",
            )
        )


#: Training on this many prompts or more prints one line per stage on stderr (smaller runs take seconds).
PROGRESS_FROM = 1000


def _store_card(db: Path, table: Any, catalog: Any) -> dict[str, Any]:
    """The data card's ``store`` entry: the store rows the router is trained on, by source
    (catimg.calibration.calibrate)."""
    from catimg.calibration.calibrate import store_card
    from catimg.calibration.store import Store

    with Store.open(db, create=False) as store:
        return store_card(store, table.metric, [catalog.get(g) for g in table.generators], table.prompts)


def _check_out(out: Path, force: bool) -> None:
    """--out must be a folder to create, an empty folder, or (with --force) a router to replace."""
    out = out.expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file; pass a folder path for the router")
    if out.is_dir() and any(out.iterdir()) and not force:
        what = "holds a router" if (out / "config.json").is_file() else "is a folder that is not empty"
        raise InputError(f"--out {out}: {what}; pass --force to overwrite it or choose another folder")


def _progress_line(quiet: bool) -> Any:
    """One line per training stage on stderr, never stdout (off when ``quiet``: a small table takes
    seconds)."""
    from catimg.cli.progress import stage_lines

    return stage_lines(quiet)


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def _sparse_line(c: dict[str, Any]) -> str:
    """One line: the data card's out-of-fold check where routing numbers are missing (SparseCheck)."""
    line = (
        f"out of fold on {c['n_scores']} scores: RMS error {c['rmse']:.3g} "
        f"(the generators' mean scores: {c['rmse_means']:.3g})"
    )
    if c["order"] is not None:
        line += (
            f"; {100 * c['order']:.0f} % of {c['n_pairs']} pairs of generators on a prompt ordered as "
            f"measured (mean scores: {100 * c['order_means']:.0f} %)"
        )
    return line


def _summary_table(
    summaries: list[dict[str, Any]], single: list[dict[str, Any]], best: str, unit: str, title: str
) -> Any:
    from rich.table import Table

    best_cost = next(s["cost"] for s in single if s["name"] == best)
    best_q = next(s["quality"] for s in single if s["name"] == best)
    t = Table(
        title=f"{title}: best single generator {best} (quality {best_q:.3f} at {best_cost:.4g} {unit})",
        title_justify="left",
    )
    for col in (
        "policy",
        "AUC",
        "quality at best single's cost",
        f"cost to match ({unit})",
        "cost to match (% of best single)",
        "APGR (share of the oracle's gain)",
    ):
        t.add_column(col, justify="right" if col != "policy" else "left")
    for s in summaries:
        t.add_row(
            s["name"],
            _fmt(s["auc"]),
            _fmt(s["quality_at_best_cost"]),
            _fmt(s["cost_to_match"], ".4g"),
            "never" if s["cost_to_match_pct"] is None else f"{s['cost_to_match_pct']:.1f}%",
            "-" if s.get("apgr") is None else f"{100 * s['apgr']:.1f}%",
        )
    return t


def _eval_costs(rt: Any, models: Path | None, device: str | None) -> tuple[Any, str]:
    """(costs by generator, note): the costs explain and gen would route by here (catimg.costs.model's one
    rule), or None (with why) when the catalog does not hold every router generator with its trained
    settings."""
    from catimg.config import load_catalog
    from catimg.costs.model import router_generator_costs
    from catimg.device import detect_device
    from catimg.errors import ConfigError

    try:
        catalog = load_catalog(models)
    except ConfigError as exc:
        if models is not None:
            raise
        return (
            None,
            f"costs are the router's training costs ({rt.cost_unit}): no usable catalog ({exc.message})",
        )
    return router_generator_costs(rt, catalog, detect_device(device))


@app.command(name="eval")
def eval_(
    router: Path = _EVAL_ROUTER,
    measurements: Path = _EVAL_MEASUREMENTS,
    db: Path = _EVAL_DB,
    holdout: float = _EVAL_HOLDOUT,
    metric: str = _EVAL_METRIC,
    plot: Path = _EVAL_PLOT,
    models: Path | None = MODELS_OPT,
    device: str | None = DEVICE_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Evaluate a router on held-out measurements: quality-cost curve against single generators, oracle,
    random.

    AUC is the mean measured quality over the cost range of the single generators; "cost to match" is the
    least mean cost at which the router reaches the best single generator's quality.

    Example:

      catimg eval --router my-router --measurements heldout.csv --plot curve.png
    """
    from catimg.cli.render import print_json
    from catimg.routing.router import load_router
    from catimg.training.evaluate import evaluate_router

    rt = load_router(router)
    source = _eval_source(rt, measurements, db, holdout, metric)
    costs, costs_note = _eval_costs(rt, models, device)  # the one cost rule, as explain and gen route
    from catimg.cli.progress import embedding_progress

    with embedding_progress():  # embedding thousands of prompts takes minutes: progress on stderr
        report = evaluate_router(
            rt,
            source,
            metric=metric,
            costs=None if costs is None else {n: c.seconds for n, c in costs.items()},
            cost_unit=None if costs is None else "seconds",
        )
    _eval_warnings(report, rt, measurements or db)
    if plot is not None:
        from catimg.training.evaluate import plot_report

        plot_report(report, plot)
    if json_out:
        print_json(
            {
                **report.to_json(),
                "costs_note": costs_note,
                "cost_sources": {n: c.source for n, c in costs.items()} if costs else None,
            }
        )
        return
    _render_eval(rt, report, measurements or db, costs, costs_note, plot)


def _eval_source(
    rt: Any, measurements: Path | None, db: Path | None, holdout: float | None, metric: str | None
) -> Any:
    """What eval scores: the measurements file as it is, or a table (from --db, or its --holdout part)."""
    if db is None and holdout is None:
        return measurements
    table = _load_table(measurements, db, None, metric or (rt.metric if db is not None else None))
    if holdout is None:
        return table
    from catimg.measurements import split_holdout

    return split_holdout(table, holdout)[1]


def _eval_warnings(report: Any, rt: Any, where: Path | None) -> None:
    """Warn about generators the router does not know and about prompts it was trained on."""
    from catimg.errors import did_you_mean

    warnings = []
    if report.ignored:
        names = ", ".join(g + did_you_mean(g, rt.generators) for g in report.ignored)
        warnings.append(f"{where}: generators not in the router, ignored: {names}")
    if report.seen_in_training:
        warnings.append(
            f"{report.seen_in_training} of the {report.n_prompts} prompts are in the router's training "
            "data, so these numbers are not held-out; evaluate on prompts it was not trained on "
            "(train --holdout / eval --holdout)"
        )
    _print_warnings(warnings)


def _render_eval(rt: Any, report: Any, source: Any, costs: Any, costs_note: str, plot: Path | None) -> None:
    """eval's text output: what was evaluated, the single generators, the routing summary, the budget
    levels."""
    from rich.table import Table

    from catimg.cli.render import console

    con = console()
    seen = (
        f" ({report.seen_in_training} of them in its training data: not held out)"
        if report.seen_in_training
        else ""
    )
    con.print(
        f"Router {rt.path} ({rt.predictor_name}) on {report.n_prompts} "
        f"{'' if report.seen_in_training else 'held-out '}prompts of {source}{seen}"
        + (f" ({report.n_dropped} dropped: not measured on every generator)" if report.n_dropped else "")
    )
    con.print(costs_note)
    st = Table(title=f"Single generators ({report.metric})", title_justify="left")
    for col in ("generator", f"cost ({report.cost_unit})", "cost from", "mean quality"):
        st.add_column(col, justify="right" if col not in ("generator", "cost from") else "left")
    for s in report.single:
        st.add_row(
            s["name"] + (" (best)" if s["name"] == report.best_single else ""),
            f"{s['cost']:.4g}",
            costs[s["name"]].source if costs else "router training",
            f"{s['quality']:.3f}",
        )
    con.print(st)
    con.print(
        _summary_table(
            [s.__dict__ for s in report.summaries],
            report.single,
            report.best_single,
            report.cost_unit,
            "Routing",
        )
    )
    lv = Table(title="Budget levels on these prompts", title_justify="left")
    lv.add_column("level")
    lv.add_column("lambda", justify="right")
    lv.add_column(f"mean cost ({report.cost_unit})", justify="right")
    lv.add_column("mean quality", justify="right")
    for g in report.generators:
        lv.add_column(g, justify="right")
    for row in report.levels:
        lv.add_row(
            row["name"],
            f"{row['lambda']:.4f}",
            f"{row['cost']:.4g}",
            f"{row['quality']:.3f}",
            *[f"{100 * row['shares'][g]:.0f}%" for g in report.generators],
        )
    con.print(lv)
    if plot is not None:
        con.print(f"plot written to {plot}")
