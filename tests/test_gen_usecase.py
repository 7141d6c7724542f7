"""The `catimg gen` use case called directly (catimg.generation.run), without the command line.

Real tiny pipelines, a router trained on synthetic measurements, the real local engine: which generator each
prompt gets when weights are missing, which seed a resumed run uses, and that the spend is the run's records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import tiny

from catimg.config import load_catalog
from catimg.costs.bench import lookup
from catimg.errors import WeightsMissingError
from catimg.generation.generate import LocalEngine
from catimg.generation.run import (
    GenRequest,
    RunPlan,
    engine_for,
    make_images,
    plan_run,
    resume_state,
)
from catimg.measurements import read_measurements
from catimg.routing.budget import parse_budget
from catimg.training.train import train_router

PROMPTS = tuple(f"a {tiny.WORDS[i]} in the {tiny.WORDS[-i - 1]}" for i in range(4))


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path, tiny_sdxl_dir: Path
) -> dict[str, Path]:
    """models.toml (sd@2, sd@4 from a folder; turbo from a Hub id, best on every prompt) and its router."""
    root = tmp_path_factory.mktemp("usecase")
    hub, models = tiny.write_sd_turbo_catalog(root, tiny_sd_dir, tiny_sdxl_dir)
    m = tiny.write_measurements(
        root / "m.csv", {"sd@2": (0.5, 0.3, 0.05), "sd@4": (0.6, 0.5, 0.1), "turbo": (0.9, 0.8, 0.2)}
    )
    catalog = load_catalog(models)
    train_router(read_measurements(m, known_generators=catalog.names), catalog, root / "router")
    return {"models": models, "router": root / "router", "hub": hub}


def request(s: dict[str, Path], out: Path, **kw: Any) -> GenRequest:
    return GenRequest(texts=PROMPTS, out=out, models=s["models"], router=s["router"], device="cpu", **kw)


def chosen(run: RunPlan) -> list[str]:
    return [it.generator.name for it in run.items]


def test_missing_weights_replan_among_the_generators_that_are_there(
    setup: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    max_budget = parse_budget("max")
    monkeypatch.setenv("HF_HUB_CACHE", str(setup["hub"]))  # every weight there: turbo is routed to
    full = plan_run(request(setup, tmp_path / "o", budget=max_budget, seed=1))
    assert set(chosen(full)) == {"turbo"} and full.missing == () and full.stop is None
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))  # turbo's weights gone
    routed: list[object] = []
    run = plan_run(request(setup, tmp_path / "o", budget=max_budget, seed=1), on_routed=routed.append)
    assert run.missing == ("turbo",) and run.stop is None
    assert set(chosen(run)) <= {"sd@2", "sd@4"} and len(run.items) == len(PROMPTS)
    assert routed == [run.routing]  # the hook sees the routing the plan follows: the re-planned one
    assert {g.name for g in run.routing.generators if g.enabled} == {"sd@2", "sd@4"}
    note = next(n for n in run.notes if n.startswith("weights not found for turbo; re-planned"))
    assert "(sd@2, sd@4)" in note and "hf download stabilityai/sdxl-turbo" in note
    assert not (tmp_path / "o").exists()  # planning writes nothing


def test_a_forced_generator_without_weights_is_not_replanned(setup: dict[str, Path], tmp_path: Path) -> None:
    # a real run stops before routing (and before torch); a dry run plans, then carries the same error
    with pytest.raises(WeightsMissingError, match="stabilityai/sdxl-turbo"):
        plan_run(request(setup, tmp_path / "o", forced="turbo", seed=1))
    dry = plan_run(request(setup, tmp_path / "o", forced="turbo", seed=1, dry_run=True))
    assert set(chosen(dry)) == {"turbo"} and dry.missing == ()
    assert isinstance(dry.stop, WeightsMissingError) and "stabilityai/sdxl-turbo" in dry.stop.message
    assert any("a real run stops before loading anything" in n for n in dry.notes)


def test_spend_is_the_runs_records_and_feeds_the_cost_cache(setup: dict[str, Path], tmp_path: Path) -> None:
    run = plan_run(request(setup, tmp_path / "o", forced="sd@2", seed=5, total_budget=600.0))
    gen = run.catalog.get("sd@2")
    assert lookup(gen, run.device) is None  # nothing measured on this device yet
    done = make_images(run, engine_for(run))
    res, sp = done.run, done.spend
    assert len(res.made) == len(PROMPTS) and not res.failed and not sp.interrupted
    assert sp.budget_seconds == 600.0 and sp.over_seconds == pytest.approx(res.wall_seconds - 600.0)
    assert sp.actual_seconds == res.wall_seconds
    assert sp.images_seconds == pytest.approx(sum(r.seconds for r in res.records))
    assert sp.load_seconds == pytest.approx(sum(res.load_seconds.values())) and res.loads == ["sd"]
    [g] = sp.generators
    assert (g.generator, g.model, g.images_planned, g.images_made) == ("sd@2", "sd", 4, 4)
    assert g.planned_seconds == pytest.approx(sum(it.predicted_seconds or 0.0 for it in run.items))
    assert g.planned_load_seconds == run.routing.costs["sd@2"].load_seconds
    assert g.actual_load_seconds == res.load_seconds["sd"]
    assert sp.planned_seconds == pytest.approx(g.planned_seconds + sp.planned_load_seconds)
    assert sp.to_dict()["over_seconds"] == sp.over_seconds
    # the local engine's measured seconds are this device's cost from now on
    assert lookup(gen, run.device) is not None
    records = [json.loads(line) for line in (tmp_path / "o" / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["seed"] for r in records) == [5, 6, 7, 8]


def test_resume_reuses_the_manifests_seed_and_repairs_the_folder(
    setup: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "o"
    first = plan_run(request(setup, out, forced="sd@2", seed=41))
    make_images(first, LocalEngine())
    with (out / "manifest.jsonl").open("a") as f:
        f.write('{"cut short\n')  # a crash mid-line
    again = plan_run(request(setup, out, forced="sd@2", resume=True))  # no --seed: the manifest's
    assert again.seed == 41 and [it.seed for it in again.items] == [41, 42, 43, 44]
    assert any("corrupt" in n and "set aside" in n for n in again.notes)
    done = make_images(again, LocalEngine())
    assert done.run.skipped == 4 and not done.run.made and done.spend.generators[0].images_made == 0
    # an explicit --seed wins over the manifest's; without --resume a seed not given is drawn
    assert plan_run(request(setup, out, forced="sd@2", resume=True, seed=7)).seed == 7
    assert resume_state(out, resume=True, seed=None) == ([], 41)
    fresh = resume_state(tmp_path / "other", resume=False, seed=None)[1]
    assert 0 <= fresh < 2**31
