"""`catimg gen --score`: check, start and report the scoring of a run's images into the measurement store.

The core is :class:`catimg.calibration.calibrate.RunScoring`; this module holds the CLI's part:
:func:`check_scoring` (before any work, without torch: the metric, the scorer's checkpoint in the HF cache, a
store this catimg can write), :func:`start_scoring` (the store opened for the run, the scorer loaded before
the first pipeline, and with ``--resume`` the images of earlier runs the store lacks scored),
:func:`scoring_hook` (the engine's ``on_image`` hook that scores each image made), :func:`scoring_doc` /
:func:`report_scoring` (what the run scored, for ``--json`` and for people) and :func:`finish_scoring` (a
scoring that stopped is one error line after the summary: the images stay on disk and in the manifest).
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catimg.errors import CatimgError, InputError, first_line

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from rich.console import Console

    from catimg.calibration.calibrate import RunScoring
    from catimg.device import DeviceInfo
    from catimg.generation.events import OnImage
    from catimg.generation.generate import PlanItem


def check_scoring(score: bool, metric: str, scorer_model: str | None, db: Path | None) -> None:
    """Raise the one-line error a ``--score`` run would stop with: unknown metric, scorer weights not in the
    Hugging Face cache (naming the ``hf download`` command), a store of a newer catimg or not catimg's; or,
    without ``score``, that the scoring options were given alone. Reads only."""
    from catimg.calibration.scorer import check_scorer, get_spec
    from catimg.calibration.store import Store

    if not score:
        given = [
            o
            for o, v in (
                ("--metric", metric != "clipscore"),
                ("--scorer-model", scorer_model is not None),
                ("--db", db is not None),
            )
            if v
        ]
        raise InputError(
            f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for scoring the images; add --score"
        )
    get_spec(metric)
    check_scorer(metric, scorer_model)
    Store.open(db, dry_run=True).close()


def start_scoring(
    held: ExitStack,
    metric: str,
    scorer_model: str | None,
    db: Path | None,
    dev: DeviceInfo,
    out: Path,
    plan: Sequence[PlanItem],
    resume: bool,
    say: Callable[[str], None],
) -> RunScoring:
    """Open the store (closed by ``held``), load the scorer (corrupt weights: one line, nothing generated yet)
    and, with ``resume``, score the images of ``out``'s manifest that the store does not have yet."""
    from catimg.calibration.calibrate import RunScoring
    from catimg.calibration.scorer import load_scorer
    from catimg.calibration.store import Store
    from catimg.device import device_class

    store = held.enter_context(Store.open(db))
    scorer = load_scorer(metric, scorer_model, dev.torch_device)
    held.callback(scorer.close)
    scoring = RunScoring(store, scorer, device_class(dev))
    if resume:
        from catimg.generation.output import read_manifest

        gens = {g.settings_hash(): g for it in plan for g in (it.generator, *it.fallbacks)}
        for note in scoring.backlog(out, read_manifest(out), list(gens.values()), dev.name):
            say(note)
    return scoring


def scoring_hook(scoring: RunScoring | None) -> OnImage | None:
    """The run's ``on_image`` hook: each image made scored when ``scoring`` is on (None without --score)."""
    return None if scoring is None else scoring.on_image


def scoring_doc(scoring: RunScoring | None) -> dict[str, Any]:
    """``{"scoring": {...}}`` for the run's JSON document (empty without --score)."""
    if scoring is None:
        return {}
    vals = [s.score for s in scoring.scored]
    return {
        "scoring": {
            "metric": scoring.metric,
            "scorer": scoring.scorer.model_id,
            "db": str(scoring.store.path),
            "scored": len(vals),
            "from_earlier_runs": scoring.from_backlog,
            "mean_score": sum(vals) / len(vals) if vals else None,
            "unscored": scoring.unscored,
            "error": None if scoring.error is None else first_line(scoring.error, typed=True),
            "images": [
                {
                    "file": s.file.name,
                    "generator": s.generator,
                    "settings_hash": s.settings_hash,
                    "seed": s.seed,
                    "score": s.score,
                    "seconds": s.seconds,
                }
                for s in scoring.scored
            ],
        }
    }


def report_scoring(con: Console, scoring: RunScoring | None) -> None:
    """One line: how many images were scored into which store, and how to refresh the router."""
    if scoring is None:
        return
    vals = [s.score for s in scoring.scored]
    mean = f", mean {sum(vals) / len(vals):.3g}" if vals else ""
    earlier = f" ({scoring.from_backlog} made by earlier runs)" if scoring.from_backlog else ""
    con.print(
        f"scored {len(vals)} image(s){earlier} with {scoring.metric} ({scoring.scorer.model_id}){mean} into "
        f"{scoring.store.path}; `catimg train --db {scoring.store.path} --out ROUTER` refreshes the router",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def finish_scoring(scoring: RunScoring | None, out: Path, resume_cmd: str, as_json: bool) -> None:
    """Raise the one-line error of a scoring that stopped during the run (its exit code; else 1)."""
    if scoring is None or scoring.error is None:
        return
    err = scoring.error
    msg = (
        f"scoring stopped after {len(scoring.scored)} image(s) "
        f"({first_line(err, typed=not isinstance(err, CatimgError), limit=200)}); "
        f"{scoring.unscored} image(s) made since are kept in {out} and its manifest but not scored: "
        f"once the scorer works, score them with: {resume_cmd}"
    )
    cls = type(err) if isinstance(err, CatimgError) else CatimgError
    exc = cls(msg)
    if as_json:
        exc.json_reported = True  # type: ignore[attr-defined]  # the run's document carries scoring.error
    raise exc


def own_measurements(card: dict[str, Any]) -> dict[str, Any]:
    """From a router's data card: how many of the user's own measurements (``gen --score``, ``calibrate``) the
    router was trained on, by source, and from which store (zeros for a router not trained with ``--db``)."""
    store = card.get("store") or {}
    by_source = {k: int(v) for k, v in (store.get("rows_by_source") or {}).items()}
    return {
        "rows": int(store.get("own_rows", 0)),
        "prompts": int(store.get("own_prompts", 0)),
        "by_source": by_source,
        "store": store.get("path"),
    }


def own_measurements_line(card: dict[str, Any]) -> str | None:
    """One line for explain, or None for a router not trained on a measurement store."""
    if not card.get("store"):
        return None
    own = own_measurements(card)
    parts = [f"{'gen --score' if s == 'gen' else s} {n}" for s, n in own["by_source"].items()]
    return (
        f"router data: {own['rows']} of your own measurements on {own['prompts']} prompt(s), from "
        f"{own['store']} (rows by source: {', '.join(parts) or 'none'})"
    )
