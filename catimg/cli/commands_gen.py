"""`catimg gen` (route, then generate and save images) and `catimg inspect` (what an image carries)."""

from __future__ import annotations

import os
import shlex
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich.table import Table

from catimg.cli import app
from catimg.cli.common import (
    BUDGET_OPT,
    DEVICE_OPT,
    DTYPE_OPT,
    ENGINE_OPT,
    ENGINES,
    FILE_OPT,
    GENERATOR_OPT,
    JSON_OPT,
    MODELS_OPT,
    PROMPTS_ARG,
    ROUTER_OPT,
    TOTAL_BUDGET_OPT,
    check_choice,
    collect_prompts,
    load_setup,
    parse_budgets,
)
from catimg.cli.render import console, fmt_seconds, fmt_value, label, print_json
from catimg.cli.scoring import finish_scoring, report_scoring, scoring_doc, scoring_hook
from catimg.device import DTYPES
from catimg.errors import ExitStatus, InputError, WeightsMissingError
from catimg.generation.events import Event, ImageDone, ModelLoading, OnEvent, Retrying, RunStarted, Step

if TYPE_CHECKING:
    from rich.console import Console

    from catimg.config import Catalog
    from catimg.generation.execution import Engine
    from catimg.generation.generate import PlanItem, RunResult
    from catimg.routing.route import RoutingResult

DEFAULT_OUT = "catimg-out"


@app.command()
def gen(
    prompts: list[str] | None = PROMPTS_ARG,
    file: Path | None = FILE_OPT,
    budget: str | None = BUDGET_OPT,
    total_budget: str | None = TOTAL_BUDGET_OPT,
    models: Path | None = MODELS_OPT,
    router: Path | None = ROUTER_OPT,
    generator: str | None = GENERATOR_OPT,
    out: Path = typer.Option(
        Path(DEFAULT_OUT), "--out", "-o", help="Folder for the images and manifest.jsonl."
    ),
    seed: int | None = typer.Option(
        None,
        "--seed",
        "-s",
        help="Base seed (image k of prompt i gets seed + i*n + k). Default: random, recorded.",
        show_default=False,
    ),
    images_per_prompt: int = typer.Option(1, "--images-per-prompt", "-n", help="Images per prompt."),
    negative: str | None = typer.Option(
        None, "--negative", help="Negative prompt (overrides the catalog's).", show_default=False
    ),
    negative_file: Path | None = typer.Option(
        None, "--negative-file", help="Read the negative prompt from this UTF-8 file.", show_default=False
    ),
    width: int | None = typer.Option(
        None, "--width", help="Image width, a multiple of 8 (default: the generator's).", show_default=False
    ),
    height: int | None = typer.Option(
        None, "--height", help="Image height, a multiple of 8 (default: the generator's).", show_default=False
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the plan only; load nothing, write nothing."),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Make only the images not yet in OUT/manifest.jsonl and on disk. Images are matched by what they are "
        "(prompt, image number, seed, generator settings, size), not by position; what differs from the "
        "manifest is named in one line and the run goes on with what is still to do.",
    ),
    device: str | None = DEVICE_OPT,
    dtype: str | None = DTYPE_OPT,
    no_metadata: bool = typer.Option(False, "--no-metadata", help="Write PNGs without catimg's text chunks."),
    allow_download: bool = typer.Option(
        False,
        "--allow-download",
        help="Let diffusers download missing weights from the Hugging Face Hub (also CATIMG_ALLOW_DOWNLOAD=1). Default: off.",
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Images per pipeline call (default: by device memory).", show_default=False
    ),
    engine: str = ENGINE_OPT,
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        help="With --engine ray: the cluster head (host:port, ray://host:10001 or auto). Default: a local Ray instance.",
        show_default=False,
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        help="With --engine ray: workers (default: one per GPU, else per CPU).",
        show_default=False,
    ),
    score: bool = typer.Option(
        False,
        "--score",
        help="Score every image made (CLIPScore or PickScore weights from the Hugging Face cache) and record it in "
        "the measurement store that calibrate fills; `catimg train --db` then refreshes the router.",
    ),
    metric: str = typer.Option(
        "clipscore", "--metric", help="With --score: the scorer (clipscore, pickscore)."
    ),
    scorer_model: str | None = typer.Option(
        None,
        "--scorer-model",
        help="With --score: scorer checkpoint (Hub id in the HF cache or a local folder).",
        show_default=False,
    ),
    db: Path | None = typer.Option(
        None,
        "--db",
        help="With --score: the measurement database (default: the one `catimg calibrate` uses).",
        show_default=False,
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Route each prompt to a generator, then generate and save the images.

    Each image is saved as OUT/{index}-{slug}-{generator}-{seed}.png with its settings and predictions in PNG text
    chunks, and recorded in OUT/manifest.jsonl. Existing files are never overwritten.

    Examples:

      catimg gen "a lighthouse at dusk" --budget low

      catimg gen -f prompts.txt --total-budget 10m --out shots/

      catimg gen -f prompts.txt --out shots/ --resume
    """
    from contextlib import ExitStack

    from catimg.generation.output import out_dir_lock, prepare_out_dir, removed_if_left_empty

    # cheap checks first: a mistake costs nothing
    _check_numbers(seed, images_per_prompt, width, height, batch_size)
    check_choice("--engine", engine, ENGINES)
    if engine == "ray" and not dry_run:
        from catimg.generation.ray_engine import preflight

        preflight(ray_address, workers)
    check_choice("--dtype", dtype, DTYPES)
    negative = _negative(negative, negative_file)
    out = out.expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file, not a folder; pass a folder for the images")
    if score or db is not None or scorer_model is not None or metric != "clipscore":
        from catimg.cli.scoring import check_scoring

        check_scoring(
            score, metric, scorer_model, db
        )  # no scorer, a store catimg cannot write: before any work
    # a run that stops before its first image leaves no new, empty --out folder behind
    with removed_if_left_empty(out), ExitStack() as held:
        locked: list[str] = []
        if not dry_run:
            prepare_out_dir(out)
            # one live run per folder: a second one is refused (naming the process), a dead run's lock taken over
            locked = held.enter_context(out_dir_lock(out, "catimg " + shlex.join(sys.argv[1:])))
        texts = collect_prompts(prompts, file)
        bud, total = parse_budgets(budget, total_budget)
        repaired, seed = _resume_state(out, resume and not dry_run, seed)
        if (
            not dry_run
        ):  # weights first: a missing model stops the run within a second, before torch is imported
            _check_weights_early(models, generator, allow_download)
        catalog, rt, dev = load_setup(models, router, device)
        from catimg.generation.generate import run_settings

        # costs follow the settings the run will use: size, dtype, device and batch overrides
        run_as = partial(run_settings, width=width, height=height, dtype=dtype)
        result, notes, stop = _route_run(
            texts,
            catalog,
            rt,
            dev,
            bud,
            total,
            generator,
            allow_download,
            run_as,
            batch_size or 1,
            dry_run,
            as_json,
        )
        notes = [*locked, *repaired, *notes]
        from catimg.generation.generate import RunOptions, plan_from_routing

        plan = plan_from_routing(
            result, seed=seed, images_per_prompt=images_per_prompt, negative=negative, size=(width, height)
        )
        con = console()
        if dry_run:
            _show_dry_run(con, result, plan, out, seed, notes, stop, as_json)
            return

        if not as_json:
            _show_plan(con, result, plan, out, seed, notes)
        scoring = None
        if score:  # the store opened, the scorer loaded (corrupt weights stop here), earlier images scored
            from catimg.cli.scoring import start_scoring

            say = (lambda n: None) if as_json else (lambda n: con.print(label("note:", "yellow", n)))
            scoring = start_scoring(held, metric, scorer_model, db, dev, out, plan, resume, say)
        progress = _Progress(con, enabled=not as_json, total=len(plan))
        opts = RunOptions(
            out_dir=out,
            device=dev,
            dtype=dtype,
            allow_download=allow_download,
            batch_size=batch_size,
            metadata=not no_metadata,
            resume=resume,
            budget=result.budget,
            router_version=getattr(rt, "version", None),
            base_seed=seed,
            images_per_prompt=images_per_prompt,
        )
        try:
            with progress:
                runner = _engine(engine, result, ray_address, workers, device)
                res = runner.run(plan, opts, _events(progress, engine, as_json), scoring_hook(scoring))
        except KeyboardInterrupt:  # pragma: no cover - the executor catches it; belt and braces
            res = None
        if (
            res is not None and engine != "ray"
        ):  # measured seconds feed this device's cost cache (as bench does)
            from catimg.costs.bench import record_run

            record_run([(r.generator, r.seconds) for r in res.made], res.load_seconds, dev, dtype)
        resume_cmd = _resume_command(seed)
        if res is None or res.interrupted:
            _stop_interrupted(con, result, plan, res, out, seed, notes, scoring, resume_cmd, as_json)
        _report_done(con, result, plan, res, out, seed, notes, scoring, resume_cmd, as_json)


def _resume_state(out: Path, resume: bool, seed: int | None) -> tuple[list[str], int]:
    """(what repairing OUT after a crash did, the seed): with --resume, corrupt manifest lines are set aside (all at
    once), orphan PNGs adopted and stale .tmp files removed, and the manifest's seed is reused unless --seed is
    given; a seed not given otherwise is random (and recorded)."""
    repaired: list[str] = []
    if resume:
        from catimg.generation.output import read_manifest, repair_out_dir

        repaired = repair_out_dir(out)
        records = read_manifest(out)
        if seed is None:
            seed = next((int(r["base_seed"]) for r in records if r.get("base_seed") is not None), None)
    if seed is None:
        import secrets

        seed = secrets.randbelow(2**31)
    return repaired, seed


def _report_done(
    con: Console,
    result: RoutingResult,
    plan: list[PlanItem],
    res: RunResult,
    out: Path,
    seed: int,
    notes: list[str],
    scoring: Any,
    resume_cmd: str,
    as_json: bool,
) -> None:
    """A finished run: one JSON document or the summary; exit 7 when nothing could be made."""
    if as_json:
        print_json(
            {
                **_plan_doc(result, plan, out, seed, notes),
                **_run_doc(result, res, plan),
                "interrupted": False,
                **scoring_doc(scoring),
            }
        )
    else:
        _render_summary(con, result, res, plan)
        report_scoring(con, scoring)
    finish_scoring(scoring, out, resume_cmd, as_json)
    if res.failed and not res.made:
        raise typer.Exit(ExitStatus.GENERATION)


def _engine(
    engine: str, result: RoutingResult, address: str | None, workers: int | None, device: str | None
) -> Engine:
    """The --engine's :class:`~catimg.generation.execution.Engine` (Ray: with each model's predicted load seconds)."""
    if engine != "ray":
        from catimg.generation.generate import LocalEngine

        return LocalEngine()
    from catimg.generation.ray_engine import RayEngine

    loads = {result.generator(n).model: c.load_seconds for n, c in result.costs.items()}
    return RayEngine(address=address, workers=workers, device=device, load_seconds=loads)


def _events(progress: _Progress, engine: str, as_json: bool) -> OnEvent:
    """The run's progress callback; with the Ray engine its Ray-only events are said as one line each."""
    if engine != "ray" or as_json:
        return progress.event
    from catimg.generation.ray_engine import cli_events

    return cli_events(progress.event, progress._line)


def _stop_interrupted(
    con: Console,
    result: RoutingResult,
    plan: list[PlanItem],
    res: RunResult | None,
    out: Path,
    seed: int,
    notes: list[str],
    scoring: Any,
    resume_cmd: str,
    as_json: bool,
) -> NoReturn:
    """After Ctrl-C: what was made (JSON or summary), one line on stderr (with --json too), exit 130."""
    if as_json:
        print_json(
            {
                **_plan_doc(result, plan, out, seed, notes),
                **(_run_doc(result, res, plan) if res else {}),
                "interrupted": True,
                "resume_command": resume_cmd,
                **scoring_doc(scoring),
            }
        )
    elif res is not None:
        _render_summary(con, result, res, plan)
        report_scoring(con, scoring)
    from catimg import interrupts

    interrupts.mark_reported()
    made = len(res.made) if res is not None else 0
    _stderr().print(
        f"interrupted: {made} image(s) made by this run are kept in {out}; resume with: {resume_cmd}",
        soft_wrap=True,
    )
    raise typer.Exit(ExitStatus.INTERRUPTED)


# ------------------------------------------------------------------------------------------------- routing


def _route_run(
    texts: list[str],
    catalog: Catalog,
    rt: Any,
    dev: Any,
    bud: Any,
    total: float | None,
    forced: str | None,
    allow_download: bool,
    run_as: Any,
    batch: int,
    dry_run: bool,
    as_json: bool,
) -> tuple[RoutingResult, list[str], WeightsMissingError | None]:
    """(routing, notes for the run, the missing-weights error a dry run shows after its plan, else None).

    Long prompts are routed as the generator's text encoder cuts them, and said once (a note); that estimates
    drive the routing is said once too (stderr; with --json a note in the document instead)."""
    from catimg.prompts import fit_for_run

    fit = fit_for_run(texts, catalog, forced)
    stop: WeightsMissingError | None = None
    try:
        result, notes = _route(
            texts, catalog, rt, dev, bud, total, forced, allow_download, run_as, batch, fit.texts
        )
    except WeightsMissingError as exc:
        if not dry_run:
            raise
        # a dry run still shows the plan, then fails as the real run would (same message and exit code)
        from catimg.routing.route import route_prompts

        stop = exc
        result = route_prompts(
            texts,
            catalog,
            rt,
            dev,
            budget=bud,
            total_budget=total,
            forced=forced,
            run_as=run_as,
            batch=batch,
            router_texts=fit.texts,
        )
        notes = ["a real run stops before loading anything: the weights are missing (see the error below)"]
    from catimg.cli.commands_routing import cost_notice, print_warnings

    print_warnings(result, notice=not as_json)
    notes += [n for n in [fit.note()] if n] + [n for n in [cost_notice(result)] if n and as_json]
    return result, notes, stop


def _show_plan(
    con: Console, result: RoutingResult, plan: list[PlanItem], out: Path, seed: int, notes: list[str]
) -> None:
    for n in notes:
        con.print(label("note:", "yellow", n))
    _render_plan(con, result, plan, out, seed)


def _show_dry_run(
    con: Console,
    result: RoutingResult,
    plan: list[PlanItem],
    out: Path,
    seed: int,
    notes: list[str],
    stop: WeightsMissingError | None,
    as_json: bool,
) -> None:
    """The plan of a dry run (text or one JSON document), then the error a real run would stop with, if any."""
    if as_json:
        doc = _plan_doc(result, plan, out, seed, notes, dry_run=True)
        if stop is not None:  # one JSON document: the plan carries the error the real run would stop with
            doc["error"] = {"code": int(stop.exit_code), "message": stop.message}
            stop.json_reported = True  # type: ignore[attr-defined]
        print_json(doc)
    else:
        _show_plan(con, result, plan, out, seed, notes)
        con.print("dry run: nothing loaded, nothing written")
    if stop is not None:
        raise stop


def _route(
    texts: list[str],
    catalog: Catalog,
    rt: Any,
    dev: Any,
    bud: Any,
    total: float | None,
    forced: str | None,
    allow_download: bool,
    run_as: Any = None,
    batch: int = 1,
    router_texts: list[str] | None = None,
) -> tuple[RoutingResult, list[str]]:
    """Route; if a chosen generator's weights are missing, re-plan among those that are there (and say so)."""
    from dataclasses import replace

    from catimg.cli.progress import embedding_progress
    from catimg.config import Catalog
    from catimg.errors import WeightsMissingError
    from catimg.pipelines import check_weights, missing_weights
    from catimg.routing.route import route_prompts

    with (
        embedding_progress()
    ):  # a file of thousands of new prompts takes minutes to embed: progress on stderr
        result = route_prompts(
            texts,
            catalog,
            rt,
            dev,
            budget=bud,
            total_budget=total,
            forced=forced,
            run_as=run_as,
            batch=batch,
            router_texts=router_texts,
        )
    chosen = {r.choice for r in result.routes}
    missing: dict[str, WeightsMissingError] = {}
    for name in sorted(chosen):
        try:
            check_weights(catalog.get(name), allow_download)
        except WeightsMissingError as exc:
            missing[name] = exc
    if not missing:
        return result, []
    if forced is not None:
        raise next(iter(missing.values()))
    # every generator that could be routed to and whose weights are absent is taken out
    for g in catalog.enabled:
        if g.name not in missing:
            try:
                check_weights(g, allow_download)
            except WeightsMissingError as exc:
                missing[g.name] = exc
    keep = tuple(replace(g, enabled=False) if g.name in missing else g for g in catalog.generators)
    # one message for every missing model (with sizes), not one per run
    every = missing_weights([g for g in catalog.generators if g.name in missing], allow_download) or next(
        iter(missing.values())
    )
    if not any(g.enabled for g in keep):
        raise every
    reduced = Catalog(path=catalog.path, origin=catalog.origin, generators=keep)
    try:
        result = route_prompts(
            texts,
            reduced,
            rt,
            dev,
            budget=bud,
            total_budget=total,
            run_as=run_as,
            batch=batch,
            router_texts=router_texts,
        )
    except InputError:
        raise every from None
    note = (
        f"weights not found for {', '.join(sorted(missing))}; re-planned among the generators that are "
        f"available ({', '.join(sorted(g.name for g in keep if g.enabled))}). {every.message}"
    )
    return result, [note]


def _check_weights_early(models: Path | None, forced: str | None, allow_download: bool) -> None:
    """Raise one WeightsMissingError naming every missing model when nothing could be generated anyway.

    With --generator: that generator's model. Otherwise every enabled generator's: if none of them is on disk
    the run could not make a single image. (When only some are missing, routing re-plans among the others.)
    Reads the catalog and the disk only; no torch.
    """
    from catimg.config import load_catalog
    from catimg.pipelines import missing_weights

    catalog = load_catalog(models)
    gens = [catalog.get(forced)] if forced else list(catalog.enabled)
    if not gens:
        return
    err = missing_weights(gens, allow_download)
    if err is None:
        return
    if forced or all(missing_weights([g], allow_download) is not None for g in gens):
        raise err


def _check_numbers(
    seed: int | None, images_per_prompt: int, width: int | None, height: int | None, batch_size: int | None
) -> None:
    from catimg.generation.generate import check_seed, check_size

    if seed is not None:
        check_seed(seed)
    if images_per_prompt < 1:
        raise InputError(f"--images-per-prompt {images_per_prompt}: must be 1 or more")
    check_size(width, "--width")
    check_size(height, "--height")
    if batch_size is not None and batch_size < 1:
        raise InputError(f"--batch-size {batch_size}: must be 1 or more")


def _negative(negative: str | None, negative_file: Path | None) -> str | None:
    """--negative or the text of --negative-file (not both)."""
    if negative is not None and negative_file is not None:
        raise InputError("--negative and --negative-file both given; use one")
    return _read_negative(negative_file) if negative_file is not None else negative


def _read_negative(path: Path) -> str:
    from catimg.textfiles import read_user_text

    return read_user_text(path, "file", InputError, prefix="--negative-file").strip()


def _resume_command(seed: int) -> str:
    args = list(sys.argv[1:])
    if "--resume" not in args:
        args.append("--resume")
    if not any(a == "--seed" or a == "-s" or a.startswith("--seed=") for a in args):
        args += ["--seed", str(seed)]
    return "catimg " + " ".join(shlex.quote(a) for a in args)


# -------------------------------------------------------------------------------------------------- render


def _render_plan(con: Console, result: RoutingResult, plan: list[PlanItem], out: Path, seed: int) -> None:
    shares = result.shares()
    lam = "-" if result.lam is None else f"{result.lam:.3g}"
    con.print(
        f"plan: {len(result.routes)} prompt(s), {len(plan)} image(s) -> {out}  budget {result.budget} (λ {lam})  "
        f"device {result.device.torch_device}  seed {seed}"
    )
    t = Table(title=None, show_edge=False, pad_edge=False)
    t.add_column("generator")
    t.add_column("model")
    t.add_column("images", justify="right")
    t.add_column("predicted", justify="right")
    t.add_column(
        "cost from"
    )  # the one cost rule (catimg.costs.model): explicit, measured, router data or estimated
    t.add_column("mean q̂", justify="right")
    per_gen: dict[str, list[PlanItem]] = {}
    for it in plan:
        per_gen.setdefault(it.generator.name, []).append(it)
    for name, its in per_gen.items():
        qs = [i.predicted_quality for i in its if i.predicted_quality is not None]
        t.add_row(
            name,
            its[0].generator.model,
            str(len(its)),
            fmt_seconds(sum(i.predicted_seconds or 0.0 for i in its)),
            result.costs[name].source,
            f"{sum(qs) / len(qs):.3f}" if qs else "-",
        )
    con.print(t)
    del shares
    est = sum(it.predicted_seconds or 0.0 for it in plan) + result.planned_load_seconds
    line = f"estimate: {fmt_seconds(est)} (loading included)"
    if result.total_budget_seconds is not None:
        line += f" of the {fmt_seconds(result.total_budget_seconds)} budget"
    if result.best_single and result.best_single_seconds is not None:
        per_img = len(plan) / max(1, len(result.routes))
        line += f"; always {result.best_single}: {fmt_seconds(_best_single_seconds(result, per_img))}"
    con.print(line)


def _render_summary(
    con: Console, result: RoutingResult, res: RunResult, plan: list[PlanItem] | None = None
) -> None:
    sp = spend(result, res, plan)
    t = Table(title="summary", show_edge=False, pad_edge=False)
    for col in ("generator", "images", "planned", "actual", "load planned", "load actual", "mean q̂"):
        t.add_column(col, justify="left" if col == "generator" else "right")
    quality = {name: d["mean_predicted_quality"] for name, d in res.per_generator().items()}
    for g in sp.generators:
        q = quality.get(g.generator)
        t.add_row(
            g.generator,
            f"{g.images_made}/{g.images_planned}",
            fmt_seconds(g.planned_seconds),
            fmt_seconds(g.actual_seconds),
            fmt_seconds(g.planned_load_seconds),
            fmt_seconds(g.actual_load_seconds),
            "-" if q is None else f"{q:.3f}",
        )
    con.print(t)
    con.print(sp.line())
    loads = ", ".join(f"{m} {fmt_seconds(s)}" for m, s in res.load_seconds.items()) or "none"
    con.print(f"loaded {len(res.loads)} model(s): {loads}")
    line = f"total: {len(res.made)} image(s) in {fmt_seconds(res.wall_seconds)}"
    if res.skipped:
        line += f", {res.skipped} skipped (already done)"
    if res.failed:
        line += f", {len(res.failed)} failed (see manifest.jsonl)"
    con.print(line)
    if (
        result.best_single
        and result.best_single_seconds is not None
        and result.routes
        and (res.made or res.failed)
    ):
        per_img = (len(res.made) + len(res.failed)) / len(result.routes)
        con.print(
            f"always the best single generator ({result.best_single}): estimated "
            f"{fmt_seconds(_best_single_seconds(result, per_img))}"
        )
    for r in res.records:
        if r.status != "ok":
            con.print(f"{r.status}: #{r.item.index} {r.item.prompt[:50]!r}: {r.note or r.error}")


def _best_single_seconds(result: RoutingResult, images_per_prompt: float) -> float:
    """Always the best single generator, for ``images_per_prompt`` images a prompt: its images, and one load."""
    assert result.best_single is not None and result.best_single_seconds is not None
    load = result.costs[result.best_single].load_seconds
    return (result.best_single_seconds - load) * images_per_prompt + load


def _plan_doc(
    result: RoutingResult, plan: list[PlanItem], out: Path, seed: int, notes: list[str], dry_run: bool = False
) -> dict[str, Any]:
    return {
        "out": str(out),
        "seed": seed,
        "dry_run": dry_run,
        "notes": notes,
        "routing": result.to_dict(),
        "plan": [
            {
                "index": it.index,
                "image": it.image,
                "prompt": it.prompt,
                "generator": it.generator.name,
                "seed": it.seed,
                "predicted_quality": it.predicted_quality,
                "predicted_seconds": it.predicted_seconds,
                "negative_prompt": it.negative,
            }
            for it in plan
        ],
    }


def _run_doc(result: RoutingResult, res: RunResult, plan: list[PlanItem] | None = None) -> dict[str, Any]:
    return {
        "images": [
            {
                "index": r.item.index,
                "image": r.item.image,
                "prompt": r.item.prompt,
                "generator": r.generator.name,
                "routed_generator": r.item.generator.name,
                "seed": r.item.seed,
                "status": r.status,
                "file": str(r.file) if r.file else None,
                "seconds": r.seconds,
                "error": r.error,
                "note": r.note,
            }
            for r in res.records
        ],
        "summary": {
            "generators": res.per_generator(),
            "loads": res.loads,
            "wall_seconds": res.wall_seconds,
            "made": len(res.made),
            "failed": len(res.failed),
            "skipped": res.skipped,
            "resume_differences": res.differences,
            "best_single": result.best_single,
            "best_single_seconds": result.best_single_seconds,
            "spend": spend(result, res, plan).to_dict(),  # planned and actual seconds against the budget
        },
    }


@dataclass(frozen=True)
class GeneratorSpend:
    """Planned and actual seconds of one generator in a gen run (its model's load on its first generator)."""

    generator: str
    model: str
    images_planned: int
    images_made: int
    planned_seconds: float  # predicted seconds of the images planned for it
    actual_seconds: float  # measured seconds of the images it made (and tried)
    planned_load_seconds: float | None
    actual_load_seconds: float | None


@dataclass(frozen=True)
class Spend:
    """A gen run's spend against its budget: the plan's estimate (loading included) and the run's wall time."""

    budget_seconds: float | None  # --total-budget, or --budget SECONDS x prompts; None for a level
    planned_seconds: float
    actual_seconds: float  # wall time of the run
    images_seconds: float
    load_seconds: float
    planned_load_seconds: float
    interrupted: bool
    generators: tuple[GeneratorSpend, ...]

    @property
    def over_seconds(self) -> float | None:
        return None if self.budget_seconds is None else self.actual_seconds - self.budget_seconds

    def line(self) -> str:
        """One line: what was spent of the budget, against the plan, where it went and by how much it is over."""
        other = max(self.actual_seconds - self.images_seconds - self.load_seconds, 0.0)
        head = f"spent {fmt_seconds(self.actual_seconds)}"
        if self.budget_seconds is not None:
            head += f" of the {fmt_seconds(self.budget_seconds)} budget"
        text = (
            f"{head} (planned {fmt_seconds(self.planned_seconds)}, loading included): images "
            f"{fmt_seconds(self.images_seconds)}, loading {fmt_seconds(self.load_seconds)} (planned "
            f"{fmt_seconds(self.planned_load_seconds)}), other {fmt_seconds(other)}"
        )
        over = self.over_seconds
        if over is not None and self.budget_seconds:
            pct = 100 * abs(over) / self.budget_seconds
            text += (
                f"; {fmt_seconds(over)} ({pct:.0f}%) over budget"
                if over > 0
                else f"; {fmt_seconds(-over)} ({pct:.0f}%) under budget"
            )
        if self.interrupted:
            text += "; interrupted before the plan was done"
        return text

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {**asdict(self), "over_seconds": self.over_seconds}


def spend(result: RoutingResult, res: RunResult, plan: list[PlanItem] | None = None) -> Spend:
    """The spend of ``res`` against ``result``'s budget and ``plan`` (None: the images the run tried)."""
    items = plan if plan is not None else [r.item for r in res.records]
    planned: dict[str, list[float]] = {}
    for it in items:
        planned.setdefault(it.generator.name, []).append(it.predicted_seconds or 0.0)
    made: dict[str, list[float]] = {}
    models: dict[str, str] = {it.generator.name: it.generator.model for it in items}
    for r in res.records:
        made.setdefault(r.generator.name, []).append(r.seconds)
        models.setdefault(r.generator.name, r.generator.model)
    seen: set[str] = set()
    gens = []
    for name in [*planned, *(n for n in made if n not in planned)]:
        model = models[name]
        first = model not in seen
        seen.add(model)
        cost = result.costs.get(name)
        gens.append(
            GeneratorSpend(
                generator=name,
                model=model,
                images_planned=len(planned.get(name, [])),
                images_made=sum(1 for r in res.made if r.generator.name == name),
                planned_seconds=sum(planned.get(name, [])),
                actual_seconds=sum(made.get(name, [])),
                planned_load_seconds=(cost.load_seconds if cost is not None else None) if first else None,
                actual_load_seconds=res.load_seconds.get(model) if first else None,
            )
        )
    planned_load = sum(g.planned_load_seconds or 0.0 for g in gens if g.images_planned)
    return Spend(
        budget_seconds=result.total_budget_seconds,
        planned_seconds=sum(g.planned_seconds for g in gens) + planned_load,
        actual_seconds=res.wall_seconds,
        images_seconds=sum(g.actual_seconds for g in gens),
        load_seconds=sum(res.load_seconds.values()),
        planned_load_seconds=planned_load,
        interrupted=res.interrupted,
        generators=tuple(gens),
    )


def _stderr() -> Console:
    from catimg.cli.render import error_console

    return error_console()


class _Progress:
    """Rich progress (batch ETA + current image's steps) on a terminal; plain lines otherwise; nothing with --json."""

    def __init__(self, con: Console, enabled: bool, total: int) -> None:
        self.con = con
        self.enabled = enabled
        self.total = total
        self.tty = enabled and sys.stdout.isatty() and not os.environ.get("CATIMG_PLAIN")
        self.rich: Any = None
        self.done = 0
        self.t0 = time.perf_counter()

    def __enter__(self) -> _Progress:
        if self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.rich = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=self.con,
                transient=False,
            )
            self.rich.__enter__()
            self.batch_task = self.rich.add_task("images", total=self.total)
            self.step_task = self.rich.add_task("steps", total=1)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.rich is not None:
            self.rich.__exit__(*exc)

    def event(self, event: Event) -> None:
        if not self.enabled:
            return
        if isinstance(event, RunStarted) and (event.skipped or event.differences):
            line = f"resume: {event.skipped} image(s) already done, {event.images} to make"
            if event.differences:  # one line, matched by what the images are, not by position
                line += (
                    f"; differs from the manifest: {'; '.join(event.differences)} (images are matched by "
                    "prompt, image number, seed, generator settings and size)"
                )
            self._line(line)
            if self.rich is not None:
                self.rich.update(self.batch_task, total=event.images)
        elif isinstance(event, ModelLoading):
            self._line(f"loading {event.model} ({event.source})")
        elif isinstance(event, Step) and self.rich is not None:
            self.rich.update(
                self.step_task, total=event.steps, completed=event.step, description=f"{event.generator} step"
            )
        elif isinstance(event, Retrying):
            self._line(f"retrying #{event.item.index} ({event.error})")
        elif isinstance(event, ImageDone):
            self.done += 1
            r = event.record
            if self.rich is not None:
                self.rich.update(self.batch_task, advance=1)
            else:
                where = r.file.name if r.file else r.error
                self._line(
                    f"[{self.done}/{self.total}] {r.status} {r.generator.name} {fmt_seconds(r.seconds)} {where}"
                )

    def _line(self, text: str) -> None:
        if self.rich is not None:
            self.rich.console.print(text, markup=False, highlight=False)
        else:
            self.con.print(text, markup=False, highlight=False, soft_wrap=True)


# ------------------------------------------------------------------------------------------------- inspect


@app.command()
def inspect(
    images: list[Path] = typer.Argument(..., help="PNG files written by catimg gen.", show_default=False),
    as_json: bool = JSON_OPT,
) -> None:
    """Print what an image carries: prompt, seed, generator, settings, predictions, versions.

    Example:

      catimg inspect catimg-out/0000-a-lighthouse-at-dusk-sdxl-turbo-42.png
    """
    from catimg.generation.output import read_image_metadata

    docs = [read_image_metadata(p) for p in images]
    if as_json:
        print_json({"images": docs})
        return
    con = console()
    for d in docs:
        con.print(f"{d['path']}  ({d['format']} {d['size'][0]}x{d['size'][1]})")
        rec = d["catimg"]
        if rec is None:
            con.print(
                "  no catimg metadata" + (f"; parameters: {d['parameters']}" if d["parameters"] else "")
            )
            continue
        t = Table(show_header=False, show_edge=False, pad_edge=False, box=None)
        t.add_column("key", style="bold")
        t.add_column("value")
        for k in sorted(rec):
            v = rec[k]
            t.add_row(k, fmt_value(v))
        con.print(t)
