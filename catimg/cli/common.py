"""Options and loading steps shared by the commands that route (explain, gen, calibrate)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from catimg.device import DTYPES
from catimg.errors import InputError, did_you_mean

if TYPE_CHECKING:
    from catimg.config import Catalog
    from catimg.device import DeviceLookup
    from catimg.routing.budget import Budget
    from catimg.routing.router import Router

# Reusable option declarations: one place for names, defaults and help.
PROMPTS_ARG = typer.Argument(
    None, help="One or more prompts (quote each). Use -f FILE for a prompt file.", show_default=False
)
FILE_OPT = typer.Option(
    None,
    "--file",
    "-f",
    help=(
        "Prompt file: UTF-8, one prompt a line; blank lines and lines starting with # are skipped. "
        "- reads standard input."
    ),
    show_default=False,
)
BUDGET_OPT = typer.Option(
    None,
    "--budget",
    "-b",
    help=(
        "Per-image budget: low, medium (default), high, max, or mean seconds per image on this device "
        "such as 2.5s."
    ),
    show_default=False,
)
TOTAL_BUDGET_OPT = typer.Option(
    None,
    "--total-budget",
    "-T",
    help=(
        "One budget for all prompts (with loading), e.g. 90s, 10m, 1h30m: most total predicted quality "
        "that fits."
    ),
    show_default=False,
)
MODELS_OPT = typer.Option(
    None,
    "--models",
    "-m",
    help=(
        "models.toml to use (default: $CATIMG_MODELS, ./models.toml, the user config dir, then the "
        "packaged default)."
    ),
    show_default=False,
)
ROUTER_OPT = typer.Option(
    None, "--router", "-r", help="Router artifact folder (default: the bundled router).", show_default=False
)
GENERATOR_OPT = typer.Option(
    None,
    "--generator",
    "-g",
    help="Force this generator for every prompt (skips routing).",
    show_default=False,
)
DEVICE_OPT = typer.Option(
    None, "--device", help="cpu, cuda, cuda:N or mps (default: detected).", show_default=False
)
DTYPE_OPT = typer.Option(
    None,
    "--dtype",
    help=f"{', '.join(DTYPES[:-1])} or {DTYPES[-1]} (default: the generator's dtype, else by device).",
    show_default=False,
)
ENGINES = ("local", "ray")
ENGINE_OPT = typer.Option(
    "local", "--engine", help='local (this process) or ray (a Ray cluster; pip install "catimg\\[ray]").'
)
RAY_ADDRESS_OPT = typer.Option(
    None,
    "--ray-address",
    help=(
        "With --engine ray: the cluster head (host:port, ray://host:10001 or auto). Default: a local Ray "
        "instance."
    ),
    show_default=False,
)
WORKERS_OPT = typer.Option(
    None,
    "--workers",
    help="With --engine ray: workers (default: one per GPU, else per CPU).",
    show_default=False,
)
JSON_OPT = typer.Option(False, "--json", help="Print one JSON document and nothing else.")


def check_choice(option: str, value: str | None, choices: Sequence[str]) -> None:
    """An InputError naming ``option``, the value and the closest choice unless ``value`` is None or a
    choice."""
    if value is not None and value not in choices:
        raise InputError(
            f'{option} "{value}" is unknown{did_you_mean(value, choices)}; '
            f"use {', '.join(choices[:-1])} or {choices[-1]}"
        )


def collect_prompts(prompts: list[str] | None, file: Path | None) -> list[str]:
    """Prompts from arguments and/or a file (``-f -``: standard input), validated; an empty list is an
    error."""
    from catimg.prompts import read_prompt_file, validate_prompt

    given = list(prompts or [])
    for i, p in enumerate(given):
        if not p.strip():  # the command the user typed is the right one: say what is wrong with the prompt
            which = "the prompt" if len(given) == 1 else f"prompt {i + 1} of {len(given)}"
            raise InputError(
                f'{which} is empty ("{p}"); put the text to draw in quotes, e.g. "a lighthouse at dusk"'
            )
    out = [validate_prompt(p) for p in given]
    if file is not None:
        out.extend(read_stdin_prompts() if str(file) == "-" else read_prompt_file(file))
    if not out:
        raise InputError('no prompt given; pass one ("a lighthouse at dusk") or a prompt file with -f FILE')
    return out


def read_stdin_prompts() -> list[str]:
    """``-f -``: prompts from standard input, one a line (blank and ``#`` lines skipped), UTF-8."""
    from catimg.prompts import parse_prompt_lines

    raw = getattr(sys.stdin, "buffer", None)
    if raw is not None:
        data = raw.read()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InputError(
                f"standard input (-f -): not UTF-8 at byte {exc.start}; convert it to UTF-8"
            ) from None
    else:
        text = sys.stdin.read()
    found = parse_prompt_lines(text)
    if not found:
        raise InputError(
            "standard input (-f -): no prompts; send one prompt a line, e.g. "
            "`cat prompts.txt | catimg explain -f -`"
        )
    return found


REFRESH_DEVICE_OPT = typer.Option(
    False,
    "--refresh-device",
    help="Probe the device with torch now instead of using the cached description.",
)
REFRESH_HINT = "`catimg doctor --refresh-device`"


def describe_setup(
    models: Path | None, router: Path | None, device: str | None, refresh: bool = False
) -> tuple[Catalog, Router, DeviceLookup]:
    """Catalog, router and device for commands that only describe the device (models, doctor, explain): no
    torch import when there is no GPU driver or the description is cached (see
    :func:`catimg.device.lookup_device`); a run loads them in :func:`catimg.generation.run.plan_run`."""
    from catimg.config import load_catalog
    from catimg.device import lookup_device
    from catimg.routing.router import load_router

    catalog = load_catalog(models)
    rt = load_router(router)
    return catalog, rt, lookup_device(device, refresh=refresh)


def renamed_note(name: str, router_name: str, catalog: str) -> str:
    return (
        f"{name}: known to the router as {router_name} (same settings, another name), so it is not routed; "
        f'rename it back to "{router_name}" in {catalog} or retrain the router (`catimg train`)'
    )


def parse_budgets(budget: str | None, total_budget: str | None) -> tuple[Budget, float | None]:
    from catimg.routing.budget import parse_budget, parse_duration

    if budget is not None and total_budget is not None:
        raise InputError(
            "--budget and --total-budget both given; use --budget per image or --total-budget for the run"
        )
    total = parse_duration(total_budget) if total_budget is not None else None
    return parse_budget(budget), total
