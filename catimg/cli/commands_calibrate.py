"""`catimg calibrate` and `catimg measurements export|import`: measure your own generators into the store."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from catimg.cli import app
from catimg.cli.common import (
    DEVICE_OPT,
    DTYPE_OPT,
    ENGINE_OPT,
    ENGINES,
    JSON_OPT,
    MODELS_OPT,
    RAY_ADDRESS_OPT,
    WORKERS_OPT,
    check_choice,
)
from catimg.cli.render import console, fmt_seconds, print_json
from catimg.device import DTYPES
from catimg.errors import ExitStatus, InputError

if TYPE_CHECKING:
    from catimg.calibration.calibrate import Campaign, CampaignResult
    from catimg.calibration.scorer import Scorer
    from catimg.generation.execution import Engine

DB_OPT = typer.Option(
    None,
    "--db",
    help="Measurement database (default: measurements.sqlite in the catimg user data dir, or "
    "$CATIMG_DATA_DIR).",
    show_default=False,
)

measurements_app = typer.Typer(
    name="measurements",
    help=(
        "Move measurements between the calibration database and long-format CSV/JSONL files.\n\n"
        "Examples:\n\n"
        "  catimg measurements export scores.csv\n\n"
        "  catimg measurements export scores.jsonl --metric clipscore --generators sdxl-turbo,sd21\n\n"
        "  catimg measurements import colleague-scores.csv\n\n"
        "  catimg train --measurements scores.csv --out my-router"
    ),
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(measurements_app, name="measurements")


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


SET_OPT = typer.Option(
    None,
    "--set",
    help="Built-in reference prompt set (default parti-geneval-200; see --list-sets).",
    show_default=False,
)
GENERATORS_OPT = typer.Option(
    None,
    "--generators",
    "-g",
    show_default=False,
    help="Comma-separated generators to measure (default: every enabled one).",
)
SCORER_MODEL_OPT = typer.Option(
    None,
    "--scorer-model",
    help="Scorer checkpoint: Hub id in the HF cache or a local folder.",
    show_default=False,
)
OUT_OPT = typer.Option(
    None,
    "--out",
    "-o",
    show_default=False,
    help="Folder for the calibration images (default: images/ next to the database).",
)


PROMPTS_FILE_OPT = typer.Option(
    None, "--prompts", "-f", help="Prompt file (UTF-8, one prompt a line).", show_default=False
)
LIMIT_OPT = typer.Option(
    None, "--limit", "-n", help="Measure only the first N prompts of the set.", show_default=False
)
METRIC_OPT = typer.Option("clipscore", "--metric", help="Scorer / metric to record (clipscore, pickscore).")
BATCH_SIZE_OPT = typer.Option(
    None,
    "--batch-size",
    help="Prompts per pipeline call (default: by device memory).",
    show_default=False,
)


@app.command()
def calibrate(
    prompts: Path = PROMPTS_FILE_OPT,
    prompt_set: str = SET_OPT,
    list_sets: bool = typer.Option(False, "--list-sets", help="List the built-in prompt sets and exit."),
    generators: str = GENERATORS_OPT,
    seeds: int = typer.Option(1, "--seeds", help="Images per prompt and generator (seeds 0..N-1)."),
    limit: int = LIMIT_OPT,
    metric: str = METRIC_OPT,
    scorer_model: str = SCORER_MODEL_OPT,
    db: Path = DB_OPT,
    models: Path = MODELS_OPT,
    out: Path = OUT_OPT,
    device: str = DEVICE_OPT,
    dtype: str = DTYPE_OPT,
    batch_size: int = BATCH_SIZE_OPT,
    dry_run: bool = typer.Option(False, "--dry-run", help="Show how many images and how long, then stop."),
    engine: str = ENGINE_OPT,
    ray_address: str = RAY_ADDRESS_OPT,
    workers: int = WORKERS_OPT,
    json_out: bool = JSON_OPT,
) -> None:
    """Measure your generators: generate, score and store images for a prompt set (resumable, incremental).

    Examples:

      catimg calibrate --dry-run

      catimg calibrate --set parti-geneval-50 --generators sdxl-turbo,sdxl@20

      catimg calibrate --prompts my_prompts.txt --seeds 2 --db run.sqlite
    """
    if list_sets:
        _list_sets(json_out)
        return
    if seeds < 1:
        raise InputError(f"--seeds {seeds}: must be 1 or more")
    if batch_size is not None and batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: must be 1 or more")
    plist, origin = _campaign_prompts(prompts, prompt_set)
    run_engine = _engine(engine, dtype, dry_run, ray_address, workers, device)
    from catimg.calibration.calibrate import CampaignRequest, open_campaign

    request = CampaignRequest(
        prompts=tuple(plist),
        origin=origin,
        metric=metric,
        generators=tuple(_split(generators) or ()) if generators else None,
        seeds=seeds,
        limit=limit,
        scorer_model=scorer_model,
        db=db,
        models=models,
        out=out,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        dry_run=dry_run,
    )
    with open_campaign(request) as campaign:
        if dry_run:
            _show_dry_run(campaign, json_out)
            return
        doc = _measure(campaign, run_engine, json_out)
    if json_out:
        print_json(doc)
    else:
        _render_summary(doc, metric)
    if doc["interrupted"]:
        from catimg import interrupts

        interrupts.mark_reported()  # the summary said what is kept and how to continue
        raise typer.Exit(ExitStatus.INTERRUPTED)


def _show_dry_run(campaign: Campaign, json_out: bool) -> None:
    """A dry run: the plan (text or one JSON document), nothing generated."""
    plan, db, device = campaign.plan, campaign.store.path, campaign.device.name
    if json_out:
        print_json(
            {
                "dry_run": True,
                "db": str(db),
                "device": device,
                "scorer": campaign.scorer_note,
                **plan.to_dict(),
            }
        )
    else:
        _render_plan(plan, db, device, campaign.scorer_note, dry=True)


def _measure(campaign: Campaign, engine: Engine | None, json_out: bool) -> dict[str, Any]:
    """The scorer loaded, the plan shown, the images made, scored and stored: the campaign's document."""
    from catimg.calibration.calibrate import campaign_scorer

    plan, store = campaign.plan, campaign.store
    scorer = campaign_scorer(campaign)
    if not json_out:
        _render_plan(plan, store.path, campaign.device.name, campaign.scorer_note, dry=False)
    # progress on stderr
    result = None if scorer is None else _run_with_progress(campaign, scorer, engine)
    summary = store.summary(plan.metric, plan.generators)
    return _campaign_doc(str(store.path), plan.metric, plan, result, summary)


def _engine(
    engine: str,
    dtype: str | None,
    dry_run: bool,
    ray_address: str | None,
    workers: int | None,
    device: str | None,
) -> Engine | None:
    """--engine and --dtype checked; the Ray engine (preflighted) for a real run with --engine ray, else
    None."""
    check_choice("--engine", engine, ENGINES)
    check_choice("--dtype", dtype, DTYPES)
    if engine != "ray" or dry_run:
        return None
    from catimg.generation.ray_engine import RayEngine, preflight

    preflight(ray_address, workers)
    return RayEngine(address=ray_address, workers=workers, device=device)


def _list_sets(json_out: bool) -> None:
    from catimg import prompts as P

    names = P.list_reference_sets()
    if json_out:
        print_json({"sets": {n: len(P.reference_set(n)) for n in names}})
    else:
        for n in names:
            console().print(f"{n}  ({len(P.reference_set(n))} prompts)")


def _campaign_prompts(prompts: Path | None, prompt_set: str | None) -> tuple[list[str], str]:
    """The prompts to calibrate on and where they come from: --prompts FILE, else --set (default
    parti-geneval-200)."""
    from catimg import prompts as P

    if prompts is not None and prompt_set is not None:
        raise InputError("--prompts and --set both given; choose a prompt file or a built-in set")
    if prompts is not None:
        return P.read_prompt_file(prompts), str(prompts)
    name = prompt_set or "parti-geneval-200"
    return P.reference_set(name), f"prompt set {name}"


def _campaign_doc(db: str, metric: str, plan: Any, result: Any, summary: Any) -> dict[str, Any]:
    """What a campaign did: the --json document, also the input of the text summary."""
    return {
        "db": db,
        "metric": metric,
        "plan": plan.to_dict(),
        "recorded": result.recorded if result else 0,
        "failed": [
            {"generator": g, "prompt": p, "seed": s, "error": e}
            for g, p, s, e in (result.failed if result else [])
        ],
        "interrupted": bool(result and result.interrupted),
        "wall_seconds": result.wall_seconds if result else 0.0,
        "generators": [
            {
                "name": s.name,
                "hash": s.hash,
                "images": s.images,
                "prompts": s.prompts,
                "mean_score": s.mean_score,
                "seconds_this_run": (result.seconds_by_generator.get(s.name, 0.0) if result else 0.0),
                "images_this_run": (result.images_by_generator.get(s.name, 0) if result else 0),
            }
            for s in summary
        ],
    }


def _render_plan(plan: Any, db: Path, device: str, scorer_note: str, dry: bool) -> None:
    from rich.table import Table

    c = console()
    for n in plan.notes:
        c.print(f"note: {n}")
    for name, why in plan.skipped_generators.items():
        c.print(f"not measured: {name}: {why}")
    t = Table(
        title=f"calibration plan: {len(plan.prompts)} prompts x {len(plan.seeds)} seed(s), "
        f"metric {plan.metric}"
    )
    for col in ("generator", "to measure", "already stored", "per image", "estimate"):
        t.add_column(col, justify="left" if col == "generator" else "right")
    for g in plan.per_generator:
        per = (
            f"{fmt_seconds(g.seconds_per_image)} ({g.seconds_kind})"
            if g.seconds_per_image is not None
            else "unknown"
        )
        t.add_row(g.name, str(g.todo), str(g.done), per, fmt_seconds(g.estimated_seconds))
    c.print(t)
    est = plan.estimated_seconds
    c.print(
        f"{plan.images} images to make on {device}, estimated "
        f"{fmt_seconds(est) if est is not None else 'unknown'} "
        f"(plus scoring); database {db}"
    )
    c.print(f"scorer: {scorer_note}")
    if dry:
        c.print("dry run: nothing was generated")


def _run_with_progress(campaign: Campaign, scorer: Scorer, engine: Engine | None) -> CampaignResult:
    from catimg.calibration.calibrate import measure
    from catimg.cli.progress import StepProgress
    from catimg.generation.events import Event, ImageFailed, ImageScored, ModelLoading

    # stderr only (a bar on a terminal, a line every 10 s elsewhere): stdout keeps the summary (or the --json
    # document)
    with StepProgress("calibrating", campaign.plan.images) as progress:

        def on_event(event: Event) -> None:
            if isinstance(event, ModelLoading):
                progress.update(progress.done, label=f"calibrating: loading {event.model}")
            elif isinstance(event, (ImageScored, ImageFailed)):
                progress.advance(label=f"calibrating {event.generator}")
                if isinstance(event, ImageFailed):
                    progress.note(
                        f"failed: {event.generator} seed {event.seed}: {event.prompt[:60]}: {event.error}"
                    )

        return measure(campaign, scorer, engine=engine, on_event=on_event)


def _render_summary(doc: dict[str, Any], metric: str) -> None:
    from rich.table import Table

    c = console()
    t = Table(title=f"calibration summary ({metric}, database {doc['db']})")
    for col in (
        "generator",
        "images this run",
        "time this run",
        "s/image",
        "prompts stored",
        f"mean {metric}",
    ):
        t.add_column(col, justify="left" if col == "generator" else "right")
    for g in doc["generators"]:
        n = g["images_this_run"]
        per = fmt_seconds(g["seconds_this_run"] / n) if n else "-"
        mean = f"{g['mean_score']:.3f}" if g["mean_score"] is not None else "-"
        t.add_row(
            g["name"], str(n), fmt_seconds(g["seconds_this_run"]) if n else "-", per, str(g["prompts"]), mean
        )
    c.print(t)
    c.print(
        f"{doc['recorded']} images recorded in {fmt_seconds(doc['wall_seconds'])}"
        + (f"; {len(doc['failed'])} failed (re-run to retry them)" if doc["failed"] else "")
    )
    if doc["interrupted"]:
        c.print("interrupted: everything recorded so far is kept; run the same command again to continue")


@measurements_app.command("export")
def export_cmd(
    file: Path = typer.Argument(..., help="Output file: JSON lines for .jsonl, .ndjson or .json, else CSV."),
    db: Path = DB_OPT,
    metric: str = typer.Option(None, "--metric", help="Only this metric (default: all).", show_default=False),
    generators: str = typer.Option(
        None, "--generators", "-g", help="Only these generators (comma-separated).", show_default=False
    ),
    json_out: bool = JSON_OPT,
) -> None:
    """Write the database's measurements in the long format that `catimg train --measurements` reads."""
    from catimg.calibration.store import Store

    with Store.open(db, create=False) as store:
        n = store.export(file, metric=metric, generators=_split(generators))
        path = store.path
    if json_out:
        print_json({"db": str(path), "file": str(file), "rows": n})
    else:
        console().print(f"wrote {n} rows from {path} to {file}")


@measurements_app.command("import")
def import_cmd(
    file: Path = typer.Argument(
        ..., help="Long-format CSV or JSONL (prompt, generator, score; metric, seconds, seed, source)."
    ),
    db: Path = DB_OPT,
    models: Path = MODELS_OPT,
    metric: str = typer.Option("score", "--metric", help="Metric for rows that name none."),
    json_out: bool = JSON_OPT,
) -> None:
    """Add measurements from a long-format file to the database (importing the same file twice adds nothing).

    Says how many scores were new, updated (another value for an image already there) and unchanged.

    Rows are keyed by the settings of the generators of models.toml (--models), so later changes to a
    generator do not mix with these scores.
    """
    from catimg.calibration.store import Store
    from catimg.config import load_catalog
    from catimg.errors import ConfigError

    try:
        gens = list(load_catalog(models).generators)
    except ConfigError:
        if models is not None:
            raise
        gens = []
    with Store.open(db) as store:
        counts = store.import_file(file, gens, default_metric=metric)
        path = store.path
    if json_out:
        print_json(
            {
                "db": str(path),
                "file": str(file),
                "scores": counts.total,
                "new": counts.new,
                "updated": counts.updated,
                "unchanged": counts.unchanged,
            }
        )
    else:
        console().print(f"imported {file} into {path}: {counts.describe()}", soft_wrap=True)
