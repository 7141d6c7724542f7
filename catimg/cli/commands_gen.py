"""`catimg gen` (route, then generate and save images) and `catimg inspect` (what an image carries).

``gen`` parses and checks its options, then calls the use case in :mod:`catimg.generation.run` (plan the run,
make the images) and renders the plan, the progress and the summary (text or one JSON document).
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from dataclasses import dataclass, replace
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
    RAY_ADDRESS_OPT,
    ROUTER_OPT,
    TOTAL_BUDGET_OPT,
    WORKERS_OPT,
    check_choice,
    collect_prompts,
    parse_budgets,
)
from catimg.cli.render import console, fmt_seconds, fmt_value, label, print_json
from catimg.cli.scoring import finish_scoring, report_scoring, scoring_doc, scoring_hook
from catimg.device import DTYPES
from catimg.errors import ExitStatus, InputError
from catimg.generation.events import Event, ImageDone, ModelLoading, OnEvent, Retrying, RunStarted, Step
from catimg.generation.run import EngineChoice, GenRequest

if TYPE_CHECKING:
    from contextlib import ExitStack

    from rich.console import Console

    from catimg.calibration.calibrate import RunScoring
    from catimg.generation.generate import PlanItem
    from catimg.generation.run import GenResult, RunPlan, Spend
    from catimg.routing.route import RoutingResult

DEFAULT_OUT = "catimg-out"

OUT_OPT = typer.Option(Path(DEFAULT_OUT), "--out", "-o", help="Folder for the images and manifest.jsonl.")
SEED_OPT = typer.Option(
    None,
    "--seed",
    "-s",
    help="Base seed (image k of prompt i gets seed + i*n + k). Default: random, recorded.",
    show_default=False,
)
IMAGES_OPT = typer.Option(1, "--images-per-prompt", "-n", help="Images per prompt.")
NEGATIVE_OPT = typer.Option(
    None, "--negative", help="Negative prompt (overrides the catalog's).", show_default=False
)
NEGATIVE_FILE_OPT = typer.Option(
    None, "--negative-file", help="Read the negative prompt from this UTF-8 file.", show_default=False
)
WIDTH_OPT = typer.Option(
    None, "--width", help="Image width, a multiple of 8 (default: the generator's).", show_default=False
)
HEIGHT_OPT = typer.Option(
    None, "--height", help="Image height, a multiple of 8 (default: the generator's).", show_default=False
)
DRY_RUN_OPT = typer.Option(False, "--dry-run", help="Show the plan only; load nothing, write nothing.")
RESUME_OPT = typer.Option(
    False,
    "--resume",
    help="Make only the images not yet in OUT/manifest.jsonl and on disk. Images are matched by what they "
    "are (prompt, image number, seed, generator settings, size), not by position; what differs from the "
    "manifest is named in one line and the run goes on with what is still to do.",
)
NO_METADATA_OPT = typer.Option(False, "--no-metadata", help="Write PNGs without catimg's text chunks.")
ALLOW_DOWNLOAD_OPT = typer.Option(
    False,
    "--allow-download",
    help="Let diffusers download missing weights from the Hugging Face Hub (also CATIMG_ALLOW_DOWNLOAD=1). "
    "Default: off.",
)
BATCH_SIZE_OPT = typer.Option(
    None, "--batch-size", help="Images per pipeline call (default: by device memory).", show_default=False
)
SCORE_OPT = typer.Option(
    False,
    "--score",
    help="Score every image made (CLIPScore or PickScore weights from the Hugging Face cache) and record it "
    "in the measurement store that calibrate fills; `catimg train --db` then refreshes the router.",
)
METRIC_OPT = typer.Option("clipscore", "--metric", help="With --score: the scorer (clipscore, pickscore).")
SCORER_MODEL_OPT = typer.Option(
    None,
    "--scorer-model",
    help="With --score: scorer checkpoint (Hub id in the HF cache or a local folder).",
    show_default=False,
)
DB_OPT = typer.Option(
    None,
    "--db",
    help="With --score: the measurement database (default: the one `catimg calibrate` uses).",
    show_default=False,
)


@app.command()
def gen(
    prompts: list[str] | None = PROMPTS_ARG,
    file: Path | None = FILE_OPT,
    budget: str | None = BUDGET_OPT,
    total_budget: str | None = TOTAL_BUDGET_OPT,
    models: Path | None = MODELS_OPT,
    router: Path | None = ROUTER_OPT,
    generator: str | None = GENERATOR_OPT,
    out: Path = OUT_OPT,
    seed: int | None = SEED_OPT,
    images_per_prompt: int = IMAGES_OPT,
    negative: str | None = NEGATIVE_OPT,
    negative_file: Path | None = NEGATIVE_FILE_OPT,
    width: int | None = WIDTH_OPT,
    height: int | None = HEIGHT_OPT,
    dry_run: bool = DRY_RUN_OPT,
    resume: bool = RESUME_OPT,
    device: str | None = DEVICE_OPT,
    dtype: str | None = DTYPE_OPT,
    no_metadata: bool = NO_METADATA_OPT,
    allow_download: bool = ALLOW_DOWNLOAD_OPT,
    batch_size: int | None = BATCH_SIZE_OPT,
    engine: str = ENGINE_OPT,
    ray_address: str | None = RAY_ADDRESS_OPT,
    workers: int | None = WORKERS_OPT,
    score: bool = SCORE_OPT,
    metric: str = METRIC_OPT,
    scorer_model: str | None = SCORER_MODEL_OPT,
    db: Path | None = DB_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Route each prompt to a generator, then generate and save the images.

    Each image is saved as OUT/{index}-{slug}-{generator}-{seed}.png with its settings and predictions in PNG
    text chunks, and recorded in OUT/manifest.jsonl. Existing files are never overwritten.

    Examples:

      catimg gen "a lighthouse at dusk" --budget low

      catimg gen -f prompts.txt --total-budget 10m --out shots/

      catimg gen -f prompts.txt --out shots/ --resume
    """
    # cheap checks first: a mistake costs nothing
    _check_numbers(seed, images_per_prompt, width, height, batch_size)
    choice = _engine_choice(engine, ray_address, workers, dry_run)
    check_choice("--dtype", dtype, DTYPES)
    negative = _negative(negative, negative_file)
    scoring = _ScoringArgs(score, metric, scorer_model, db)
    request = GenRequest(
        texts=(),  # the prompts and the budgets are read once the folder is locked (_gen)
        out=_out_folder(out),
        models=models,
        router=router,
        device=device,
        forced=generator,
        seed=seed,
        images_per_prompt=images_per_prompt,
        negative=negative,
        size=(width, height),
        dtype=dtype,
        batch_size=batch_size,
        allow_download=allow_download,
        metadata=not no_metadata,
        resume=resume,
        dry_run=dry_run,
        engine=choice,
    )
    scoring.check()  # no scorer, a store catimg cannot write: before any work
    _gen(request, prompts, file, (budget, total_budget), scoring, as_json)


@dataclass(frozen=True)
class _ScoringArgs:
    """--score and its options."""

    score: bool
    metric: str
    scorer_model: str | None
    db: Path | None

    def check(self) -> None:
        if self.score or self.db is not None or self.scorer_model is not None or self.metric != "clipscore":
            from catimg.cli.scoring import check_scoring

            check_scoring(self.score, self.metric, self.scorer_model, self.db)

    def start(self, held: ExitStack, con: Console, run: RunPlan, as_json: bool) -> RunScoring | None:
        """With --score: the store opened, the scorer loaded (corrupt weights stop here), earlier images
        scored."""
        if not self.score:
            return None
        from catimg.cli.scoring import start_scoring

        say = (lambda n: None) if as_json else (lambda n: con.print(label("note:", "yellow", n)))
        req = run.request
        return start_scoring(
            held, self.metric, self.scorer_model, self.db, run.device, req.out, run.items, req.resume, say
        )


def _gen(
    request: GenRequest,
    prompts: list[str] | None,
    file: Path | None,
    budgets: tuple[str | None, str | None],
    scoring: _ScoringArgs,
    as_json: bool,
) -> None:
    """OUT locked, the request completed with the prompts and budgets, planned, then shown (dry run) or
    made."""
    from contextlib import ExitStack

    from catimg.cli.commands_routing import print_warnings
    from catimg.cli.progress import embedding_progress
    from catimg.generation.output import out_dir_lock, prepare_out_dir, removed_if_left_empty
    from catimg.generation.run import plan_run

    out = request.out
    # a run that stops before its first image leaves no new, empty --out folder behind
    with removed_if_left_empty(out), ExitStack() as held:
        locked: list[str] = []
        if not request.dry_run:
            prepare_out_dir(out)
            # one live run per folder: a second one is refused (naming the process), a dead run's lock is
            # taken over
            locked = held.enter_context(out_dir_lock(out, "catimg " + shlex.join(sys.argv[1:])))
        texts = collect_prompts(prompts, file)
        bud, total = parse_budgets(*budgets)
        request = replace(request, texts=tuple(texts), budget=bud, total_budget=total)
        # embedding thousands of new prompts takes minutes: progress on stderr; then the core's warnings
        run = plan_run(
            request, embedding=embedding_progress, on_routed=partial(print_warnings, notice=not as_json)
        )
        notes = [*locked, *run.notes, *_cost_note(run.routing, as_json)]
        con = console()
        if request.dry_run:
            _show_dry_run(con, run, notes, as_json)
            return
        _make(con, held, run, notes, scoring, as_json)


def _make(
    con: Console, held: ExitStack, run: RunPlan, notes: list[str], scoring_args: _ScoringArgs, as_json: bool
) -> None:
    """The plan shown, its images made with progress, the summary (exit 7 when nothing could be made)."""
    from catimg.generation.run import engine_for, make_images

    if not as_json:
        _show_plan(con, run, notes)
    scoring = scoring_args.start(held, con, run, as_json)
    progress = _Progress(con, enabled=not as_json, total=len(run.items))
    done: GenResult | None = None
    try:
        with progress:
            events = _events(progress, run.request.engine.name, as_json)
            done = make_images(run, engine_for(run), events, scoring_hook(scoring))
    except KeyboardInterrupt:  # pragma: no cover - the executor catches it; belt and braces
        done = None
    resume_cmd = _resume_command(run.seed)
    if done is None or done.run.interrupted:
        _stop_interrupted(con, run, done, notes, scoring, resume_cmd, as_json)
    _report_done(con, run, done, notes, scoring, resume_cmd, as_json)


def _cost_note(result: RoutingResult, as_json: bool) -> list[str]:
    """With --json, the note that estimates drive the routing goes into the document (text: on stderr)."""
    from catimg.cli.commands_routing import cost_notice

    return [n for n in [cost_notice(result)] if n and as_json]


def _report_done(
    con: Console,
    run: RunPlan,
    done: GenResult,
    notes: list[str],
    scoring: RunScoring | None,
    resume_cmd: str,
    as_json: bool,
) -> None:
    """A finished run: one JSON document or the summary; exit 7 when nothing could be made."""
    if as_json:
        print_json(
            {**_plan_doc(run, notes), **_run_doc(run, done), "interrupted": False, **scoring_doc(scoring)}
        )
    else:
        _render_summary(con, run, done)
        report_scoring(con, scoring)
    finish_scoring(scoring, run.request.out, resume_cmd, as_json)
    if done.run.failed and not done.run.made:
        raise typer.Exit(ExitStatus.GENERATION)


def _events(progress: _Progress, engine: str, as_json: bool) -> OnEvent:
    """The run's progress callback; with the Ray engine its Ray-only events are said as one line each."""
    if engine != "ray" or as_json:
        return progress.event
    from catimg.generation.ray_engine import cli_events

    return cli_events(progress.event, progress._line)


def _stop_interrupted(
    con: Console,
    run: RunPlan,
    done: GenResult | None,
    notes: list[str],
    scoring: RunScoring | None,
    resume_cmd: str,
    as_json: bool,
) -> NoReturn:
    """After Ctrl-C: what was made (JSON or summary), one line on stderr (with --json too), exit 130."""
    if as_json:
        print_json(
            {
                **_plan_doc(run, notes),
                **(_run_doc(run, done) if done else {}),
                "interrupted": True,
                "resume_command": resume_cmd,
                **scoring_doc(scoring),
            }
        )
    elif done is not None:
        _render_summary(con, run, done)
        report_scoring(con, scoring)
    from catimg import interrupts

    interrupts.mark_reported()
    made = len(done.run.made) if done is not None else 0
    _stderr().print(
        f"interrupted: {made} image(s) made by this run are kept in {run.request.out}; resume with: "
        f"{resume_cmd}",
        soft_wrap=True,
    )
    raise typer.Exit(ExitStatus.INTERRUPTED)


def _show_plan(con: Console, run: RunPlan, notes: list[str]) -> None:
    for n in notes:
        con.print(label("note:", "yellow", n))
    _render_plan(con, run)


def _show_dry_run(con: Console, run: RunPlan, notes: list[str], as_json: bool) -> None:
    """The plan of a dry run (text or one JSON document), then the error a real run would stop with, if
    any."""
    stop = run.stop
    if as_json:
        doc = _plan_doc(run, notes, dry_run=True)
        if stop is not None:  # one JSON document: the plan carries the error the real run would stop with
            doc["error"] = {"code": int(stop.exit_code), "message": stop.message}
            stop.json_reported = True  # type: ignore[attr-defined]
        print_json(doc)
    else:
        _show_plan(con, run, notes)
        con.print("dry run: nothing loaded, nothing written")
    if stop is not None:
        raise stop


def _engine_choice(engine: str, address: str | None, workers: int | None, dry_run: bool) -> EngineChoice:
    """--engine checked; with ray (unless a dry run) the cluster preflighted before anything else."""
    check_choice("--engine", engine, ENGINES)
    if engine == "ray" and not dry_run:
        from catimg.generation.ray_engine import preflight

        preflight(address, workers)
    return EngineChoice(engine, address, workers)


def _out_folder(out: Path) -> Path:
    out = out.expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file, not a folder; pass a folder for the images")
    return out


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


def _render_plan(con: Console, run: RunPlan) -> None:
    result, plan = run.routing, run.items
    lam = "-" if result.lam is None else f"{result.lam:.3g}"
    con.print(
        f"plan: {len(result.routes)} prompt(s), {len(plan)} image(s) -> {run.request.out}  budget "
        f"{result.budget} (λ {lam})  device {result.device.torch_device}  seed {run.seed}"
    )
    t = Table(title=None, show_edge=False, pad_edge=False)
    t.add_column("generator")
    t.add_column("model")
    t.add_column("images", justify="right")
    t.add_column("predicted", justify="right")
    # the one cost rule (catimg.costs.model): explicit, measured, router data or estimated
    t.add_column("cost from")
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
    est = sum(it.predicted_seconds or 0.0 for it in plan) + result.planned_load_seconds
    line = f"estimate: {fmt_seconds(est)} (loading included)"
    if result.total_budget_seconds is not None:
        line += f" of the {fmt_seconds(result.total_budget_seconds)} budget"
    if result.best_single and result.best_single_seconds is not None:
        per_img = len(plan) / max(1, len(result.routes))
        line += f"; always {result.best_single}: {fmt_seconds(_best_single_seconds(result, per_img))}"
    con.print(line)


def _render_summary(con: Console, run: RunPlan, done: GenResult) -> None:
    result, res, sp = run.routing, done.run, done.spend
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
    con.print(_spend_line(sp))
    loads = ", ".join(f"{m} {fmt_seconds(s)}" for m, s in res.load_seconds.items()) or "none"
    con.print(f"loaded {len(res.loads)} model(s): {loads}")
    line = f"total: {len(res.made)} image(s) in {fmt_seconds(res.wall_seconds)}"
    if res.skipped:
        line += f", {res.skipped} skipped (already done)"
    if res.failed:
        line += f", {len(res.failed)} failed (see manifest.jsonl)"
    con.print(line)
    tried = len(res.made) + len(res.failed)
    if result.best_single and result.best_single_seconds is not None and result.routes and tried:
        per_img = tried / len(result.routes)
        con.print(
            f"always the best single generator ({result.best_single}): estimated "
            f"{fmt_seconds(_best_single_seconds(result, per_img))}"
        )
    for r in res.records:
        if r.status != "ok":
            con.print(f"{r.status}: #{r.item.index} {r.item.prompt[:50]!r}: {r.note or r.error}")


def _spend_line(sp: Spend) -> str:
    """One line: what was spent of the budget, against the plan, where it went and by how much it is over."""
    head = f"spent {fmt_seconds(sp.actual_seconds)}"
    if sp.budget_seconds is not None:
        head += f" of the {fmt_seconds(sp.budget_seconds)} budget"
    text = (
        f"{head} (planned {fmt_seconds(sp.planned_seconds)}, loading included): images "
        f"{fmt_seconds(sp.images_seconds)}, loading {fmt_seconds(sp.load_seconds)} (planned "
        f"{fmt_seconds(sp.planned_load_seconds)}), other {fmt_seconds(sp.other_seconds)}"
    )
    over = sp.over_seconds
    if over is not None and sp.budget_seconds:
        pct = 100 * abs(over) / sp.budget_seconds
        text += (
            f"; {fmt_seconds(over)} ({pct:.0f}%) over budget"
            if over > 0
            else f"; {fmt_seconds(-over)} ({pct:.0f}%) under budget"
        )
    if sp.interrupted:
        text += "; interrupted before the plan was done"
    return text


def _best_single_seconds(result: RoutingResult, images_per_prompt: float) -> float:
    """Always the best single generator, for ``images_per_prompt`` images a prompt: its images, and one
    load."""
    assert result.best_single is not None and result.best_single_seconds is not None
    load = result.costs[result.best_single].load_seconds
    return (result.best_single_seconds - load) * images_per_prompt + load


def _plan_doc(run: RunPlan, notes: list[str], dry_run: bool = False) -> dict[str, Any]:
    return {
        "out": str(run.request.out),
        "seed": run.seed,
        "dry_run": dry_run,
        "notes": notes,
        "routing": run.routing.to_dict(),
        "plan": [_item_doc(it) for it in run.items],
    }


def _item_doc(it: PlanItem) -> dict[str, Any]:
    return {
        "index": it.index,
        "image": it.image,
        "prompt": it.prompt,
        "generator": it.generator.name,
        "seed": it.seed,
        "predicted_quality": it.predicted_quality,
        "predicted_seconds": it.predicted_seconds,
        "negative_prompt": it.negative,
    }


def _run_doc(run: RunPlan, done: GenResult) -> dict[str, Any]:
    result, res = run.routing, done.run
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
            "spend": done.spend.to_dict(),  # planned and actual seconds against the budget
        },
    }


def _stderr() -> Console:
    from catimg.cli.render import error_console

    return error_console()


class _Progress:
    """Rich progress (batch ETA + current image's steps) on a terminal; plain lines otherwise; nothing with
    --json."""

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
                    f"[{self.done}/{self.total}] {r.status} {r.generator.name} "
                    f"{fmt_seconds(r.seconds)} {where}"
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
