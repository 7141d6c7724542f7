"""`catimg plan`: size a cluster before paying for it (makespan and GPU utilisation on K GPUs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    ROUTER_OPT,
    TOTAL_BUDGET_OPT,
    collect_prompts,
    parse_budgets,
)
from catimg.cli.render import console, fmt_seconds, print_fields, print_json, print_table
from catimg.errors import InputError


def _parse_gpus(text: str) -> list[int]:
    try:
        ks = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise InputError(f"--gpus {text}: expected whole numbers separated by commas, e.g. 8,64") from None
    if not ks or any(k < 1 for k in ks):
        raise InputError(f"--gpus {text}: each count must be 1 or more, e.g. 8,64")
    return ks


# plan's own options (the shared ones are in catimg.cli.common)
_PROMPT_SET = typer.Option(
    None,
    "--set",
    help="A built-in prompt set instead of -f (e.g. parti-geneval-200).",
    show_default=False,
)
_GPUS = typer.Option("1,8,64", "--gpus", help="GPU counts to predict for, comma-separated.")
_GPU = typer.Option(
    None,
    "--gpu",
    help="Cost the plan for this GPU (H100, A100, L4 ...) instead of this machine's device.",
    show_default=False,
)
_SCALE_TO = typer.Option(
    None,
    "--scale-to",
    help="Predict for this many prompts with the routed shares (e.g. 1000000).",
    show_default=False,
)
_IMAGES_PER_PROMPT = typer.Option(1, "--images-per-prompt", "-n", help="Images per prompt.")
_CHUNK_SIZE = typer.Option(16, "--chunk-size", help="Images a worker takes at a time.")


@app.command()
def plan(
    prompts: list[str] | None = PROMPTS_ARG,
    file: Path | None = FILE_OPT,
    prompt_set: str | None = _PROMPT_SET,
    budget: str | None = BUDGET_OPT,
    total_budget: str | None = TOTAL_BUDGET_OPT,
    models: Path | None = MODELS_OPT,
    router: Path | None = ROUTER_OPT,
    generator: str | None = GENERATOR_OPT,
    gpus: str = _GPUS,
    gpu: str | None = _GPU,
    device: str | None = DEVICE_OPT,
    scale_to: int | None = _SCALE_TO,
    images_per_prompt: int = _IMAGES_PER_PROMPT,
    chunk_size: int = _CHUNK_SIZE,
    as_json: bool = JSON_OPT,
) -> None:
    """Predict how long a plan takes on K GPUs: catimg's scheduling (actors per model in proportion to cost,
    work stealing) against naive round-robin. Nothing is loaded.

    Examples:

      catimg plan -f prompts.txt --gpus 8,64

      catimg plan --set parti-geneval-200 --budget medium --gpu H100 --scale-to 1000000 --gpus 8,64
    """
    from catimg.config import load_catalog
    from catimg.device import lookup_device
    from catimg.generation.schedule import cluster_plan, hypothetical_gpu
    from catimg.routing.route import route_prompts
    from catimg.routing.router import load_router

    ks = _parse_gpus(gpus)
    _check_numbers(scale_to, images_per_prompt, chunk_size, gpu, device)
    if prompt_set is not None:
        from catimg.prompts import reference_set

        texts = reference_set(prompt_set) + (collect_prompts(prompts, file) if prompts or file else [])
    else:
        texts = collect_prompts(prompts, file)
    bud, total = parse_budgets(budget, total_budget)
    catalog = load_catalog(models)
    rt = load_router(router)
    # nothing runs: no torch needed
    dev = hypothetical_gpu(gpu) if gpu is not None else lookup_device(device).info
    from catimg.prompts import fit_for_run

    # the router sees long prompts as the generator's encoder cuts them
    fit = fit_for_run(texts, catalog, generator)
    costs = _other_gpu_costs(catalog, dev, rt, generator) if gpu is not None else None
    result = route_prompts(
        texts,
        catalog,
        rt,
        dev,
        budget=bud,
        total_budget=total,
        forced=generator,
        router_texts=fit.texts,
        costs=costs,
    )
    gmodels = {g.name: g.model for g in catalog.generators}
    cp = cluster_plan(
        result.shares(),
        result.costs,
        gmodels,
        ks,
        scale_to=scale_to,
        chunk_size=chunk_size,
        device=dev.name,
        images_per_prompt=images_per_prompt,
    )
    if as_json:
        print_json({"budget": result.budget, "lambda": result.lam, **cp.to_dict()})
        return
    _render_plan(cp, result.budget, dev.name, chunk_size)


def _check_numbers(
    scale_to: int | None, images_per_prompt: int, chunk_size: int, gpu: str | None, device: str | None
) -> None:
    if scale_to is not None and scale_to < 1:
        raise InputError(f"--scale-to {scale_to}: must be 1 or more")
    if images_per_prompt < 1:
        raise InputError(f"--images-per-prompt {images_per_prompt}: must be 1 or more")
    if chunk_size < 1:
        raise InputError(f"--chunk-size {chunk_size}: must be 1 or more")
    if gpu is not None and device is not None:
        raise InputError(
            "--gpu and --device both given; use --gpu to cost another GPU, --device for one here"
        )


def _other_gpu_costs(catalog: Any, dev: Any, rt: Any, generator: str | None) -> Any:
    """Costs on another GPU: the router's seconds were not measured on it (the rule's step 3 is skipped)."""
    from catimg.costs.model import routing_costs

    return routing_costs(
        catalog.generators,
        dev,
        unknown_ok=lambda g: generator is not None or not (g.enabled and rt.knows(g)),
    )


def _render_plan(cp: Any, budget: str, device_name: str, chunk_size: int) -> None:
    """plan's text output: the work per generator, the predictions per GPU count and policy, the speed-up."""
    con = console()
    scaled = f" (shares of {cp.routed_prompts} routed prompts)" if cp.prompts != cp.routed_prompts else ""
    print_fields(
        con,
        [
            f"plan: {cp.prompts:,} prompt(s){scaled}",
            f"budget {budget}",
            f"costs for {device_name}",
            f"chunks of {chunk_size} image(s)",
        ],
        sep=", ",
    )
    t = Table(show_edge=False, pad_edge=False)
    for col, just in (
        ("generator", "left"),
        ("model", "left"),
        ("images", "right"),
        ("per image", "right"),
        ("load", "right"),
        ("GPU time", "right"),
    ):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for w in cp.work:
        t.add_row(
            w.generator,
            w.model,
            f"{w.images:,}",
            fmt_seconds(w.seconds),
            fmt_seconds(w.load_seconds),
            fmt_seconds(w.total_seconds),
        )
    print_table(con, t, drop=("model", "load"))
    p = Table(show_edge=False, pad_edge=False)
    for col in ("GPUs", "policy", "makespan", "utilisation", "loads", "ideal"):
        p.add_column(col, justify="left" if col == "policy" else "right")
    for k, (c, r) in sorted(cp.predictions.items()):
        for pred in (c, r):
            p.add_row(
                f"{k:,}",
                pred.policy,
                fmt_seconds(pred.makespan),
                f"{pred.utilisation:.1%}",
                f"{pred.loads:,}",
                fmt_seconds(pred.ideal),
            )
    print_table(con, p, drop=("ideal", "loads"))
    for k, (c, r) in sorted(cp.predictions.items()):
        if c.makespan > 0:
            con.print(
                f"{k} GPU(s): round-robin takes {r.makespan / c.makespan:.2f}x as long as catimg's scheduling"
            )
