"""Which images of a plan are still to make (``gen --resume``), and how a run differs from the manifest.

An image is done when the manifest records it as saved, its file is on disk, and it is the same image: same
prompt, image number, base seed, negative prompt, size and routed generator settings (the settings hash; the
generator's name for records written before catimg recorded the hash). Position in the prompt file does not
matter. Both engines call :func:`resume_todo` through :func:`catimg.generation.execution.start_run`; the
manifest may have been written by either.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catimg.generation.output import SAVED, read_manifest

if TYPE_CHECKING:
    from catimg.generation.execution import RunOptions
    from catimg.generation.generate import PlanItem


def resume_todo(
    plan: list[PlanItem], opt: RunOptions, records: list[dict[str, Any]] | None = None
) -> tuple[list[int], list[str]]:
    """Positions in ``plan`` still to make, and how this run differs from the manifest (one phrase each).

    An image is done when the manifest records it as saved, its file is on disk, and it is the same image:
    same prompt, image number, base seed, negative prompt, size and routed generator settings (the settings
    hash; the generator's name for records written before catimg recorded the hash). Position in the prompt
    file does not matter, so inserting or reordering prompts redoes nothing; a prompt given twice needs two
    records.
    """
    folder = Path(opt.out_dir)
    recs = read_manifest(folder) if records is None else records
    by_hash: Counter[tuple[Any, ...]] = Counter()
    by_name: Counter[tuple[Any, ...]] = Counter()
    done_recs = []
    for r in recs:
        if r.get("status") not in SAVED or not r.get("file") or not (folder / str(r["file"])).is_file():
            continue
        done_recs.append(r)
        base = (
            str(r.get("prompt", "")),
            int(r.get("image") or 0),
            r.get("base_seed"),
            str(r.get("negative_prompt") or ""),
            r.get("width"),
            r.get("height"),
        )
        if r.get("settings_hash"):
            by_hash[base + (r["settings_hash"],)] += 1  # not d[(*a, b)]: mypy reads it as 3.11 syntax
        else:
            by_name[base + (r.get("routed_generator") or r.get("generator"),)] += 1
    todo = []
    for pos, it in enumerate(plan):
        g = it.generator
        base = (it.prompt, it.image, opt.base_seed, it.negative or "", g.width, g.height)
        kh, kn = (*base, g.settings_hash()), (*base, g.name)
        if by_hash[kh] > 0:
            by_hash[kh] -= 1
        elif by_name[kn] > 0:
            by_name[kn] -= 1
        else:
            todo.append(pos)
    return todo, _differences(plan, opt, done_recs)


def _differences(plan: list[PlanItem], opt: RunOptions, recs: list[dict[str, Any]]) -> list[str]:
    """What of this run differs from the images recorded in the manifest, as short phrases."""
    if not recs or not plan:
        return []
    out: list[str] = []

    def then(values: set[Any]) -> str:
        return ", ".join(sorted(str(v) for v in values))

    seeds = {r.get("base_seed") for r in recs if r.get("base_seed") is not None}
    if seeds and opt.base_seed not in seeds:
        out.append(f"--seed {opt.base_seed} (manifest: {then(seeds)})")
    ns = {r.get("images_per_prompt") for r in recs if r.get("images_per_prompt")}
    if not ns:  # written before the count was recorded: the most images of one prompt
        per_prompt: dict[str, int] = {}
        for r in recs:
            per_prompt[str(r.get("prompt"))] = max(
                per_prompt.get(str(r.get("prompt")), 0), int(r.get("image") or 0) + 1
            )
        ns = {max(per_prompt.values())}
    n_now = opt.images_per_prompt or (max(it.image for it in plan) + 1)
    if n_now not in ns:
        out.append(f"--images-per-prompt {n_now} (manifest: {then(ns)})")
    sizes_then = {f"{r.get('width')}x{r.get('height')}" for r in recs}
    sizes_now = {f"{it.generator.width}x{it.generator.height}" for it in plan}
    if not sizes_now & sizes_then:
        out.append(f"size {then(sizes_now)} (manifest: {then(sizes_then)})")
    budgets = {r.get("budget") for r in recs if r.get("budget")}
    if opt.budget and budgets and opt.budget not in budgets:
        out.append(f"budget {opt.budget} (manifest: {then(budgets)})")
    negs = {str(r.get("negative_prompt") or "") for r in recs}
    if not {it.negative or "" for it in plan} & negs:
        out.append("negative prompt")
    order_then: list[str] = [
        str(r.get("prompt")) for r in sorted(recs, key=lambda r: int(r.get("index") or 0))
    ]
    order_then = list(dict.fromkeys(order_then))
    order_now = list(dict.fromkeys(it.prompt for it in plan))
    new = [p for p in order_now if p not in set(order_then)]
    gone = [p for p in order_then if p not in set(order_now)]
    if new:
        out.append(f"{len(new)} prompt(s) not in the manifest")
    if gone:
        out.append(f"{len(gone)} prompt(s) of the manifest not in this run")
    common_then = [p for p in order_then if p in set(order_now)]
    common_now = [p for p in order_now if p in set(order_then)]
    if common_then != common_now:
        out.append("prompts in another order")
    routed_then: dict[str, set[str]] = {}
    for r in recs:
        routed_then.setdefault(str(r.get("prompt")), set()).add(
            str(r.get("routed_generator") or r.get("generator"))
        )
    moved = {
        it.prompt
        for it in plan
        if it.prompt in routed_then and it.generator.name not in routed_then[it.prompt]
    }
    if moved:
        out.append(f"{len(moved)} prompt(s) now routed to another generator")
    return out
