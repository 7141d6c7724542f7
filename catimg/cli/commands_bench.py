"""``catimg bench``: measure generators on this device and cache the results for the cost model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from catimg.cli import app
from catimg.cli.common import DEVICE_OPT, JSON_OPT, MODELS_OPT
from catimg.cli.render import console, error_console, fmt_seconds, label, print_json, print_table


@app.command()
def bench(
    generators: list[str] | None = typer.Argument(
        None,
        help="Generators to measure (default: every enabled generator of the catalog).",
        show_default=False,
    ),
    models: Path | None = MODELS_OPT,
    device: str | None = DEVICE_OPT,
    repeats: int = typer.Option(3, "--repeats", "-n", min=1, max=100, help="Timed images per generator."),
    warmup: int = typer.Option(1, "--warmup", min=0, max=20, help="Untimed images before timing."),
    allow_download: bool = typer.Option(
        False, "--allow-download", help="Download missing weights from the Hugging Face Hub."
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Measure load time, seconds per step, fixed seconds per image and peak memory on this device.

    Results are cached by device and generator settings; `explain`, `models` and budgets in seconds then use
    measured rather than estimated costs. Step variants of one model (sdxl@10, sdxl@20) are measured once.

    Examples:

      catimg bench

      catimg bench sdxl-turbo sd21 --repeats 5
    """
    from catimg.config import load_catalog
    from catimg.costs.bench import cache_path, measure, pop_warnings
    from catimg.costs.model import generator_cost
    from catimg.device import detect_device
    from catimg.errors import CatimgError

    catalog = load_catalog(models)
    gens = [catalog.get(n) for n in generators] if generators else list(catalog.enabled)
    dev = detect_device(device)
    quiet_torchvision_notice()
    err = error_console()
    con = console()
    if not as_json:
        con.print(f"device: {dev.describe()}   repeats: {repeats}   warm-up: {warmup}")

    by_model: dict[str, list[Any]] = {}
    for g in gens:
        by_model.setdefault(g.model, []).append(g)
    rows: list[dict[str, Any]] = []
    failures: list[CatimgError] = []
    for model, variants in by_model.items():
        first = variants[0]
        estimate = None
        try:
            estimate = generator_cost(first, dev, use_measured=False)
        except CatimgError:
            pass
        if not as_json:
            err.print(f"measuring {model} ({first.source}) …", highlight=False)
        try:
            result = measure(first, dev, repeats=repeats, warmup=warmup, allow_download=allow_download)
        except CatimgError as exc:
            failures.append(exc)
            err.print(label("error:", "bold red", exc.message), highlight=False, soft_wrap=True)
            continue
        rows.extend(_store_variants(result, variants, dev, estimate is not None))
    warnings = pop_warnings()
    if as_json:
        print_json(
            {
                "device": dev.to_dict(),
                "cache": str(cache_path()),
                "results": rows,
                "errors": [f.message for f in failures],
                "warnings": warnings,
            }
        )
    else:
        _render_bench(rows, warnings, str(cache_path()))
    if failures:
        raise typer.Exit(failures[0].exit_code)


def _store_variants(result: Any, variants: list[Any], dev: Any, estimated: bool) -> list[dict[str, Any]]:
    """Save one model's measurement for each of its step variants; one output row per variant."""
    from dataclasses import replace

    from catimg.costs.bench import model_hash, save_results
    from catimg.costs.model import generator_cost

    stored = [
        replace(result, generator=g.name, settings_hash=g.settings_hash(), model_hash=model_hash(g))
        for g in variants
    ]
    save_results(stored, dev)
    rows = []
    for g, r in zip(variants, stored, strict=True):
        est = generator_cost(g, dev, use_measured=False) if estimated else None
        rows.append(
            {
                "generator": g.name,
                "steps": g.steps,
                "load_seconds": r.load_seconds,
                "step_seconds": r.step_seconds,
                "fixed_seconds": r.fixed_seconds,
                "seconds_per_image": r.seconds_per_image(g.steps),
                "estimated_seconds": est.seconds if est else None,
                "tflops": est.tflops if est else None,
                "peak_memory_gb": r.peak_memory_gb,
                "estimated_peak_memory_gb": est.peak_memory_gb if est else None,
                "dtype": r.dtype,
                "repeats": r.repeats,
                "warmup": r.warmup,
                "note": r.note,
            }
        )
    return rows


def _render_bench(rows: list[dict[str, Any]], warnings: list[str], cache: str) -> None:
    """bench's text output: warnings on stderr, one row per generator measured, where the results went."""
    for w in warnings:
        error_console().print(label("warning:", "yellow", w), highlight=False, soft_wrap=True)
    if not rows:
        return
    from rich.table import Table

    con = console()
    t = Table(show_edge=False, pad_edge=False)
    for col in ("generator", "steps", "load", "per step", "fixed", "per image", "estimated", "peak mem"):
        t.add_column(col, justify="left" if col == "generator" else "right")
    for row in rows:
        mem = f"{row['peak_memory_gb']:.2f} GB" if row["peak_memory_gb"] is not None else "-"
        t.add_row(
            row["generator"],
            str(row["steps"]),
            fmt_seconds(row["load_seconds"]),
            fmt_seconds(row["step_seconds"]),
            fmt_seconds(row["fixed_seconds"]),
            fmt_seconds(row["seconds_per_image"]),
            fmt_seconds(row["estimated_seconds"]),
            mem,
        )
    print_table(con, t, drop=("fixed", "peak mem", "estimated", "steps"))
    con.print(f"saved to {cache}; `catimg models` and `catimg explain` now use these costs")


TORCHVISION_NOTICE = "requires torchvision (not installed)"


class _NoTorchvisionNotice:
    """A logging filter: drops transformers' notice that an image processor falls back to its PIL backend."""

    def filter(self, record: Any) -> bool:
        return TORCHVISION_NOTICE not in record.getMessage()


def quiet_torchvision_notice() -> None:
    """transformers says once per image processor (CLIPImageProcessor, SiglipImageProcessor ...) that
    torchvision is missing and it uses the PIL backend, which is what catimg wants; bench silences exactly
    that notice (on the one logger that emits it), nothing else."""
    import logging

    logger = logging.getLogger("transformers.utils.import_utils")
    if not any(isinstance(f, _NoTorchvisionNotice) for f in logger.filters):
        logger.addFilter(_NoTorchvisionNotice())
