"""`catimg explain`, `catimg models`, `catimg doctor`: what the router would do and why, and what is
installed.

Each command parses, calls the core (:func:`catimg.routing.route.route_prompts`, the one cost rule of
:mod:`catimg.costs.model`, :func:`catimg.routing.diagnose.diagnose`) and renders text or one JSON document.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from catimg.cli import app
from catimg.cli.common import (
    BUDGET_OPT,
    DEVICE_OPT,
    FILE_OPT,
    GENERATOR_OPT,
    JSON_OPT,
    MODELS_OPT,
    PROMPTS_ARG,
    REFRESH_DEVICE_OPT,
    REFRESH_HINT,
    ROUTER_OPT,
    TOTAL_BUDGET_OPT,
    collect_prompts,
    describe_setup,
    parse_budgets,
    renamed_note,
)
from catimg.cli.render import (
    console,
    fmt_fixed,
    fmt_number,
    fmt_seconds,
    fmt_tflops,
    label,
    print_fields,
    print_json,
    print_table,
)
from catimg.errors import ExitStatus

if TYPE_CHECKING:
    from rich.console import Console

    from catimg.config import Catalog, Generator
    from catimg.costs.model import Cost
    from catimg.device import DeviceLookup
    from catimg.routing.diagnose import Diagnosis, GeneratorCheck
    from catimg.routing.route import PromptRoute, RoutingResult
    from catimg.routing.router import Router

DETAIL_LIMIT = 10  # per-prompt tables up to this many prompts unless --detail
COMPACT_LIMIT = 200  # rows of the one-line-per-prompt table; the plan summary always covers every prompt


@app.command()
def explain(
    prompts: list[str] | None = PROMPTS_ARG,
    file: Path | None = FILE_OPT,
    budget: str | None = BUDGET_OPT,
    total_budget: str | None = TOTAL_BUDGET_OPT,
    models: Path | None = MODELS_OPT,
    router: Path | None = ROUTER_OPT,
    generator: str | None = GENERATOR_OPT,
    device: str | None = DEVICE_OPT,
    neighbours: int = typer.Option(
        3, "--neighbours", "-k", min=0, max=20, help="Similar training prompts to show per prompt."
    ),
    detail: bool | None = typer.Option(
        None,
        "--detail/--no-detail",
        help=f"Per-prompt tables (default: on for up to {DETAIL_LIMIT} prompts).",
        show_default=False,
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Show, per prompt, what every generator would give and cost, which one is picked, and why.

    Nothing is generated and no generator weights are needed.

    Examples:

      catimg explain "a colourful park with a crowd"

      catimg explain -f prompts.txt --total-budget 10m

      catimg explain "a red cube" --budget 2.5s --json
    """
    from catimg.routing.route import route_prompts

    texts = collect_prompts(prompts, file)
    bud, total = parse_budgets(budget, total_budget)
    # no torch where the device is known without it
    catalog, rt, found = describe_setup(models, router, device)
    from catimg.cli.progress import embedding_progress
    from catimg.prompts import fit_for_run

    # prompts longer than the text encoder: routed as the generator sees them
    fit = fit_for_run(texts, catalog, generator)
    with embedding_progress():  # 10,000 new prompts take minutes to embed: progress on stderr, never stdout
        result = route_prompts(
            texts,
            catalog,
            rt,
            found.info,
            budget=bud,
            total_budget=total,
            forced=generator,
            neighbours=neighbours,
            explain=True,
            router_texts=fit.texts,
        )
    print_warnings(result, notice=not as_json)
    renamed = {g.name: old for g in catalog.generators if g.enabled and (old := rt.known_as(g))}
    if fit.note() and not as_json:
        from catimg.cli.render import error_console

        error_console().print(label("note:", "yellow", str(fit.note())), highlight=False)
    if as_json:
        print_json(_explain_doc(result, catalog, rt, renamed, fit.note()))
        return
    render_explain(result, catalog, rt, found, renamed, detail)


def _explain_doc(
    result: RoutingResult, catalog: Catalog, rt: Router, renamed: dict[str, str], fit_note: str | None
) -> dict[str, Any]:
    """explain's --json document: the routing, its notes, the catalog and router used, where predictions
    come from."""
    from catimg.cli.scoring import own_measurements

    doc = result.to_dict()
    doc["notes"] = [n for n in [cost_notice(result), fit_note] if n]  # stdout holds only the JSON document
    doc["catalog"] = str(catalog.path)
    doc["router"] = str(rt.path)
    # {catalog name: the router's name} for generators renamed with the same settings
    doc["renamed"] = renamed
    doc["own_measurements"] = own_measurements(rt.data_card)  # gen --score / calibrate rows it was trained on
    doc["learned_from"] = {g: rt.sources(g) for g in rt.generators}  # sets and prompts behind each prediction
    return doc


def render_explain(
    result: RoutingResult, catalog: Any, rt: Any, found: Any, renamed: dict[str, str], detail: bool | None
) -> None:
    """explain's text output: header lines, notes, a table per prompt (or one compact table), the plan
    summary."""
    con = console()
    render_header(con, result, str(catalog.path), str(rt.path), found.note(REFRESH_HINT))
    from catimg.cli.scoring import own_measurements_line

    if (own := own_measurements_line(rt.data_card)) is not None:  # a router trained with --db
        con.print(own, highlight=False, soft_wrap=True)
    con.print(learned_from_line(rt, result), highlight=False)
    render_cost_notes(con, result)
    for name, old in renamed.items():
        con.print(label("note:", "yellow", renamed_note(name, old, str(catalog.path))), highlight=False)
    show_detail = detail if detail is not None else len(result.routes) <= DETAIL_LIMIT
    if show_detail:
        for route in result.routes:
            render_route(con, result, route)
    else:
        render_compact(con, result)
    if len(result.routes) > 1:
        render_summary(con, result)


def learned_from_line(rt: Any, result: RoutingResult) -> str:
    """One line: which sets, and how many measured prompts of each, stand behind each routed generator's
    predictions."""
    from catimg.routing.route import FORCED, ROUTABLE

    parts = []
    for g in result.generators:
        if g.name in rt.generators and result.statuses.get(g.name) in (ROUTABLE, FORCED):
            parts.append(f"{g.name} ({', '.join(f'{s} {n:,}' for s, n in rt.sources(g.name).items())})")
    return "predictions learned from: " + (
        "; ".join(parts) if parts else "no measurements (forced generator)"
    )


def render_header(
    con: Console, result: RoutingResult, catalog: str, router: str, device_note: str = ""
) -> None:
    lam = "-" if result.lam is None else f"{fmt_number(result.lam, 4)} ({result.level_for(result.lam)})"
    print_fields(
        con,
        [
            " ".join(filter(None, [f"device: {result.device.describe()}", device_note])),
            f"budget: {result.budget}",
            f"λ: {lam}",
        ],
    )
    print_fields(
        con,
        [
            f"catalog: {catalog}",
            f"router: {router}",
            f"metric: {result.metric} [{result.scale[0]:g}..{result.scale[1]:g}]",
        ],
    )


def print_warnings(result: RoutingResult | None = None, notice: bool = True) -> None:
    """Warnings the core queued (a corrupt bench cache that was discarded): one yellow line each, on stderr;
    with ``result`` and ``notice``, also the one note that estimates drive its routing
    (:func:`cost_notice`)."""
    from catimg.cli.render import error_console
    from catimg.costs.bench import pop_warnings

    for w in pop_warnings():
        error_console().print(label("warning:", "yellow", w), highlight=False)
    line = cost_notice(result) if result is not None and notice else None
    if line:
        error_console().print(label("note:", "yellow", line), highlight=False)


def cost_notice(result: RoutingResult) -> str | None:
    """The one line saying that estimates, not measurements, drive this routing, and what `catimg bench` costs
    (None when nothing is routed: a forced --generator)."""
    from catimg.costs.model import estimate_notice

    if result.lam is None:
        return None
    return estimate_notice(
        result.costs,
        [n for n, st in result.statuses.items() if st == "routable"],
        models={g.name: g.model for g in result.generators},
    )


def render_cost_notes(con: Console, result: RoutingResult) -> None:
    """Say which generators run with CPU offload or cannot run on this device, and why."""
    for name, cost in result.costs.items():
        if cost.offload or not cost.feasible:
            con.print(f"  {name}: {cost.note}", highlight=False)


def _q(v: float | None, u: float | None = None) -> str:
    if v is None:
        return "-"
    return f"{fmt_fixed(v, 2)} ± {fmt_fixed(u, 2)}" if u is not None else fmt_fixed(v, 2)


def render_route(con: Console, result: RoutingResult, route: PromptRoute) -> None:
    from catimg.costs.model import COST_SOURCES

    t = Table(
        title=f"[{route.index + 1}] {route.prompt}", title_justify="left", show_edge=False, pad_edge=False
    )
    t.add_column("generator")
    t.add_column("predicted quality", justify="right")
    t.add_column("seconds", justify="right")
    t.add_column(
        "cost from"
    )  # the one cost rule: explicit, measured, router data or estimated (catimg.costs.model)
    t.add_column("TFLOPs", justify="right")
    t.add_column("value", justify="right")
    t.add_column("status")
    for r in route.rows:
        mark = "➜ " if r.name == route.choice else "  "
        t.add_row(
            mark + r.name,
            _q(r.predicted_quality, r.uncertainty),
            fmt_seconds(r.cost_seconds),
            COST_SOURCES.get(r.cost_kind, r.cost_kind),
            fmt_tflops(r.cost_tflops),
            fmt_fixed(r.value, 3, signed=True),
            r.status,
        )
    print_table(con, t, drop=("TFLOPs", "value", "cost from"), wrap=("status",))
    lines = []
    if route.runner_up is not None and route.margin is not None:
        lines.append(
            f"pick {route.choice}; runner-up {route.runner_up}, behind by {fmt_fixed(route.margin, 3)} "
            "in value"
        )
    if route.switch_up:
        g, lam = route.switch_up
        lines.append(f"would switch to {g} at λ < {fmt_number(lam, 4)} ({result.level_for(lam)})")
    if route.switch_down:
        g, lam = route.switch_down
        lines.append(f"would switch to {g} at λ > {fmt_number(lam, 4)} ({result.level_for(lam)})")
    if route.neighbours_by_set:  # a router trained on several sets: the nearest prompt of each
        sims = "; ".join(
            f'{name}: "{hits[0][0]}" ({fmt_fixed(hits[0][1], 2)})'
            for name, hits in route.neighbours_by_set.items()
            if hits
        )
        lines.append(f"most similar training prompt per set: {sims}")
    elif route.neighbours:
        sims = "; ".join(f'"{p}" ({fmt_fixed(s, 2)})' for p, s in route.neighbours)
        lines.append(f"most similar training prompts: {sims}")
    for line in lines:
        con.print("  " + line, highlight=False)
    con.print("")


def render_compact(con: Console, result: RoutingResult) -> None:
    t = Table(show_edge=False, pad_edge=False)
    rows = []
    for route in result.routes[:COMPACT_LIMIT]:
        r = route.row(route.choice)
        rows.append(
            (
                str(route.index + 1),
                route.prompt,
                route.choice,
                _q(r.predicted_quality, r.uncertainty),
                fmt_seconds(r.cost_seconds),
            )
        )
    headers = ("#", "prompt", "generator", "quality", "seconds")
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]
    # the prompt takes what the other columns (whole, never cut) and the 4 separators leave, at least 12
    widths[1] = max(12, min(widths[1], con.width - (sum(widths) - widths[1]) - 4 * 3))
    for i, header in enumerate(headers):
        t.add_column(
            header,
            justify="left" if header in ("prompt", "generator") else "right",
            no_wrap=True,
            overflow="ellipsis" if header == "prompt" else "fold",
            width=widths[i],
        )
    for row in rows:
        t.add_row(*row)
    con.print(t)
    rest = len(result.routes) - COMPACT_LIMIT
    if rest > 0:
        con.print(f"… and {rest:,} more prompts (every prompt is in --json; the plan below covers them all)")


def render_summary(con: Console, result: RoutingResult) -> None:
    n = len(result.routes)
    t = Table(title=f"plan for {n} prompts", title_justify="left", show_edge=False, pad_edge=False)
    t.add_column("generator")
    t.add_column("prompts", justify="right")
    t.add_column("share", justify="right")
    t.add_column("seconds", justify="right")
    t.add_column("cost from")
    t.add_column("mean predicted quality", justify="right")
    for name, count in sorted(result.shares().items(), key=lambda kv: -kv[1]):
        rows = [rt.row(name) for rt in result.routes if rt.choice == name]
        qs = [r.predicted_quality for r in rows if r.predicted_quality is not None]
        t.add_row(
            name,
            f"{count:,}",
            f"{100 * count / n:.0f}%",
            fmt_seconds(sum(r.cost_seconds for r in rows)),
            result.costs[name].source,
            _q(sum(qs) / len(qs)) if qs else "-",
        )
    print_table(con, t, drop=("share", "cost from"), wrap=("mean predicted quality",))
    total = result.planned_seconds + result.planned_load_seconds
    line = (
        f"planned: {fmt_seconds(total)} ({fmt_seconds(result.planned_seconds)} generating + "
        f"{fmt_seconds(result.planned_load_seconds)} loading)"
    )
    if result.total_budget_seconds is not None:
        line += f" of {fmt_seconds(result.total_budget_seconds)} budget"
    con.print(line)
    if result.mean_predicted_quality is not None:
        con.print(f"mean predicted quality: {fmt_fixed(result.mean_predicted_quality, 3)}")
    if result.best_single is not None and result.best_single_quality is not None:
        con.print(
            f"always {result.best_single} (best single generator): "
            f"{fmt_seconds(result.best_single_seconds)}, "
            f"mean predicted quality {fmt_fixed(result.best_single_quality, 3)}"
        )


@app.command()
def models(
    models: Path | None = MODELS_OPT,
    router: Path | None = ROUTER_OPT,
    device: str | None = DEVICE_OPT,
    refresh_device: bool = REFRESH_DEVICE_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """List the generators of the catalog: source, settings, cost on this device, weights present, router
    status.

    Examples:

      catimg models

      catimg models --models my-models.toml --router my-router --json
    """
    from catimg.costs.model import routing_costs

    catalog, rt, found = describe_setup(models, router, device, refresh_device)
    dev = found.info
    costs = routing_costs(catalog.generators, dev, router=rt, unknown_ok=lambda g: True)  # the one cost rule
    print_warnings()
    rows = [_model_row(g, costs[g.name], rt) for g in catalog.generators]
    if as_json:
        print_json(
            {
                "catalog": str(catalog.path),
                "origin": catalog.origin,
                "device": dev.to_dict(),
                "device_source": found.source,
                "generators": rows,
            }
        )
        return
    _render_models(catalog, rt, found, costs, rows)


def _model_row(g: Generator, c: Cost, rt: Router) -> dict[str, Any]:
    """One generator of `catimg models`: its settings, its cost here, weights on disk, what the router
    says."""
    if not g.enabled:
        status = "disabled"
    elif rt.knows(g):
        status = "routed"
    elif alias := rt.known_as(g):
        status = f"known as {alias}"  # renamed in models.toml, same settings
    else:
        status = "needs calibration"
    return {
        "name": g.name,
        "source": g.source,
        "family": g.family,
        "steps": g.steps,
        "guidance": g.guidance,
        "width": g.width,
        "height": g.height,
        "scheduler": g.scheduler,
        "enabled": g.enabled,
        "cost_seconds": c.seconds,
        "cost_tflops": c.tflops,
        "cost_kind": c.kind,
        "cost_source": c.source,
        "feasible": c.feasible,
        "offload": c.offload,
        "cost_note": c.note,
        "weights_local": _weights_local(g),
        "router": status,
        "note": g.note,
    }


def _render_models(
    catalog: Catalog, rt: Router, found: DeviceLookup, costs: dict[str, Cost], rows: list[dict[str, Any]]
) -> None:
    """`catimg models` as text: the catalog and device, one table row per generator, then the notes."""
    con = console()
    con.print(f"catalog: {catalog.path} ({catalog.origin})")
    con.print(" ".join(filter(None, [f"device: {found.info.describe()}", found.note(REFRESH_HINT)])))
    t = Table(show_edge=False, pad_edge=False)
    for col, just in (
        ("name", "left"),
        ("source", "left"),
        ("steps", "right"),
        ("size", "right"),
        ("cfg", "right"),
        ("seconds", "right"),
        ("TFLOPs", "right"),
        ("weights", "left"),
        ("router", "left"),
    ):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for g, row in zip(catalog.generators, rows, strict=True):
        c = costs[g.name]
        secs = (
            fmt_seconds(c.seconds)
            + ("*" if c.kind == "estimated" else "")
            + ("!" if c.offload or not c.feasible else "")
        )
        t.add_row(
            g.name,
            g.source,
            str(g.steps),
            (f"{g.width}²" if g.width == g.height else f"{g.width}×{g.height}"),
            fmt_number(g.guidance),
            secs,
            fmt_tflops(c.tflops),
            "local" if row["weights_local"] else "missing",
            row["router"],
        )
    # Cells keep their full text: on a narrow terminal columns go, the sources (long Hub ids) below the table.
    if "source" in print_table(
        con, t, drop=("cfg", "source", "TFLOPs", "size", "steps"), wrap=("router",), below=("source",)
    ):
        for g in catalog.generators:
            con.print(f"  {g.name}: {g.source}", highlight=False)
    if any(costs[g.name].offload or not costs[g.name].feasible for g in catalog.generators):
        con.print("! runs with CPU offload or does not fit this device (below)")
    for g in catalog.generators:
        if g.enabled and (old := rt.known_as(g)):
            con.print(label("note:", "yellow", renamed_note(g.name, old, str(catalog.path))))
    if any(costs[g.name].kind == "estimated" for g in catalog.generators):
        con.print("* estimated cost; `catimg bench` measures it on this device")
    for g in catalog.generators:
        c = costs[g.name]
        if c.offload or not c.feasible:
            con.print(f"  {g.name}: {c.note}", highlight=False)


def _weights_local(g: Any) -> bool:
    from catimg.pipelines import weights_available

    return bool(weights_available(g))


@app.command()
def doctor(
    models: Path | None = MODELS_OPT,
    router: Path | None = ROUTER_OPT,
    device: str | None = DEVICE_OPT,
    refresh_device: bool = REFRESH_DEVICE_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Check the installation: versions, device, Hub cache and offline readiness, router and catalog in use.

    Missing generator weights are reported, not failed: routing works without them. The exit code is 1 only
    for real problems (a broken catalog or router, an absent device or prompt encoder).

    Examples:

      catimg doctor

      catimg doctor --models my-models.toml --router my-router
    """
    from catimg.device import parse_override
    from catimg.routing.diagnose import diagnose

    if device is not None:
        parse_override(device)  # a mistyped --device is a usage error (exit 2), not a problem doctor found
    diag = diagnose(models, router, device, refresh=refresh_device)
    doc = _doctor_doc(diag)
    if as_json:
        print_json(doc)
    else:
        _render_doctor(doc, diag.device, diag.router)
    if diag.problems:
        raise typer.Exit(ExitStatus.ERROR)


def _doctor_doc(diag: Diagnosis) -> dict[str, Any]:
    """The --json document of a diagnosis (also what the text rendering reads)."""
    doc: dict[str, Any] = {"versions": diag.versions}
    doc["catalog"] = {"path": str(diag.catalog_path), "origin": diag.catalog_origin}
    if diag.catalog is not None:
        doc["catalog"]["generators"] = diag.catalog.names
    if diag.device is not None:
        doc["device"] = diag.device.info.to_dict()
        doc["device_source"] = diag.device.source
    doc["hub"] = asdict(diag.hub)
    rt = diag.router
    if rt is not None:
        doc["router"] = {
            "path": str(rt.path),
            "generators": rt.generators,
            "metric": rt.metric,
            "levels": rt.levels,
            "version": rt.version,
        }
    doc["encoder"] = {
        "ok": diag.encoder_path is not None,
        "path": diag.encoder_path,
        "precision": diag.encoder_precision,
    }
    doc["generators"] = [_doctor_row(c, rt) for c in diag.generators]
    doc["problems"] = list(diag.problems)
    return doc


def _doctor_row(check: GeneratorCheck, rt: Router | None) -> dict[str, Any]:
    g = check.generator
    return {
        "name": g.name,
        "source": g.source,
        "enabled": g.enabled,
        "weights_local": check.weights_local,
        "local_folder": bool(g.is_local_folder),
        "router_knows": check.router_knows,
        "router_name": rt.known_as(g) if rt is not None else None,
    }


def _render_doctor(doc: dict[str, Any], found: Any, rt: Any) -> None:
    con = console()
    print_fields(
        con,
        [f"versions: {k} {v}" if i == 0 else f"{k} {v}" for i, (k, v) in enumerate(doc["versions"].items())],
        sep=", ",
    )
    con.print(f"catalog: {doc['catalog']['path']} (from {doc['catalog']['origin']})")
    if found is not None:
        con.print(" ".join(filter(None, [f"device: {found.info.describe()}", found.note(REFRESH_HINT)])))
    hub = doc["hub"]
    downloads = (
        "off: HF_HUB_OFFLINE is set"
        if hub["offline"]
        else "allowed"
        if hub["downloads_allowed"]
        else "off (set CATIMG_ALLOW_DOWNLOAD=1 or pass --allow-download to gen)"
    )
    print_fields(con, [f"hub cache: {hub['cache']}", f"downloads: {downloads}"])
    if rt is not None:
        con.print(f"router: {rt.path} ({rt.metric}; knows {', '.join(rt.generators)})")
    enc = doc["encoder"]
    if enc["ok"] and enc["precision"]:
        con.print(f"prompt encoder: {enc['path']} ({enc['precision']})", highlight=False)
    gens = doc["generators"]
    t = Table(show_edge=False, pad_edge=False)
    for c in ("generator", "source", "enabled", "weights", "router"):
        t.add_column(c)
    for row in gens:
        router_cell = (
            "knows"
            if row["router_knows"]
            else f"known as {row['router_name']}"
            if row["router_name"]
            else "needs calibration"
        )
        t.add_row(
            row["name"],
            row["source"],
            "yes" if row["enabled"] else "no",
            "local" if row["weights_local"] else "missing",
            router_cell,
        )
    if "source" in print_table(con, t, drop=("source", "enabled"), wrap=("router",), below=("source",)):
        for row in gens:
            con.print(f"  {row['name']}: {row['source']}", highlight=False)
    for line in _fetch_lines(gens, hub):
        con.print(line, highlight=False)
    for row in gens:
        if row["router_name"]:
            con.print(
                label(
                    "note:", "yellow", renamed_note(row["name"], row["router_name"], doc["catalog"]["path"])
                )
            )
    for p in doc["problems"]:
        con.print(label("problem:", "red", p))
    if not doc["problems"]:
        con.print(
            "ok: routing works offline; generators marked missing need their weights before `catimg gen`"
        )


def _fetch_lines(gens: list[dict[str, Any]], hub: dict[str, Any]) -> list[str]:
    """How to get the missing weights: one `hf download` per Hub model, and why gen will not fetch them
    itself."""
    missing = [r for r in gens if r["enabled"] and not r["weights_local"]]  # what gen would need
    hub_missing = list(dict.fromkeys(r["source"] for r in missing if not r["local_folder"]))
    folders = [r for r in missing if r["local_folder"]]
    lines = []
    if hub_missing:
        if hub["offline"]:
            why = "HF_HUB_OFFLINE is set, so nothing is downloaded; fetch them where the Hub is reachable:"
        elif hub["downloads_allowed"]:
            why = "downloads are allowed, so `catimg gen` fetches them when first used; or fetch them now:"
        else:
            why = (
                "downloads are off, so `catimg gen` will not fetch them (--allow-download does); fetch "
                "them with:"
            )
        lines.append(f"missing weights: {why}")
        lines.extend(f"  hf download {source}" for source in hub_missing)
    lines.extend(f"  {r['name']}: folder {r['source']} has no complete pipeline" for r in folders)
    return lines
