"""`catimg explain`, `catimg models` and `catimg doctor` through the real CLI with the bundled router."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from harness import run_cli

from catimg.config import PACKAGED_MODELS
from catimg.routing.router import load_router

PROMPTS = [
    "a white and empty wall",
    "a colourful park with a crowd of people flying kites, a brass band and a dog chasing pigeons",
    "a red cube on a blue sphere",
    "three cats sitting on a windowsill at sunset, oil painting",
    "a lighthouse at dusk",
    "an astronaut reading a newspaper in a crowded Tokyo subway car",
]


@pytest.fixture
def timed_models(tmp_path: Path) -> Path:
    """The default catalog with explicit seconds (same settings, so the bundled router still knows them), an
    extra generator the router has never seen, and a disabled one."""
    text = PACKAGED_MODELS.read_text(encoding="utf-8")
    for name, secs in (("sdxl-turbo", 0.5), ("sd21", 4.0), ("sdxl", 12.0)):
        text = text.replace(f"[generators.{name}]\n", f"[generators.{name}]\ncost_seconds = {secs}\n")
    text += '\n[generators.newcomer]\nsource = "org/newcomer"\nsteps = 8\ncost_seconds = 1.0\n'
    path = tmp_path / "models.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def prompt_file(tmp_path: Path) -> Path:
    p = tmp_path / "prompts.txt"
    p.write_text("# my prompts\n\n" + "\n".join(PROMPTS) + "\n", encoding="utf-8")
    return p


def explain_json(*args: str) -> dict:
    code, out, _ = run_cli("explain", *args, "--json")
    assert code == 0, out
    return json.loads(out)


def test_single_prompt_table_says_why(timed_models: Path) -> None:
    code, out, _ = run_cli("explain", "a colourful park with a crowd", "--models", str(timed_models))
    assert code == 0, out
    for needle in (
        "sdxl-turbo",
        "sd21",
        "sdxl",
        "predicted quality",
        "➜",
        "runner-up",
        "would switch to",
        "most similar training prompt",
        "needs calibration",
        "disabled",
    ):
        assert needle in out, needle
    assert "newcomer" in out


def test_json_contract_in_file_order(timed_models: Path, prompt_file: Path) -> None:
    doc = explain_json("-f", str(prompt_file), "--models", str(timed_models), "--budget", "medium")
    assert [p["prompt"] for p in doc["prompts"]] == PROMPTS
    for p in doc["prompts"]:
        names = [g["name"] for g in p["generators"]]
        assert names == ["sdxl-turbo", "sd21", "sdxl", "sd15", "pixart", "newcomer"]
        assert p["choice"] in {"sdxl-turbo", "sd21", "sdxl"}  # never one without data or disabled
        for g in p["generators"]:
            assert {"name", "predicted_quality", "uncertainty", "cost_seconds", "cost_tflops"} <= set(g)
        known = {g["name"]: g for g in p["generators"] if g["predicted_quality"] is not None}
        assert set(known) == {"sdxl-turbo", "sd21", "sdxl"}
        lo, hi = load_router(None).scale  # the bundled router's scale (the joint scale, 0-1)
        assert all(lo <= g["predicted_quality"] <= hi and g["uncertainty"] > 0 for g in known.values())
        assert (
            known["sdxl"]["cost_seconds"] == 12.0
            and known["sdxl"]["cost_tflops"] > known["sdxl-turbo"]["cost_tflops"]
        )
    assert doc["statuses"]["newcomer"] == "needs calibration" and doc["statuses"]["sd15"] == "disabled"


def test_levels_are_monotone_in_cost_and_predicted_quality(timed_models: Path, tmp_path: Path) -> None:
    from catimg.prompts import reference_set_path

    costs, quals = [], []
    for level in ("low", "medium", "high", "max"):
        doc = explain_json(
            "-f",
            str(reference_set_path("parti-geneval-50")),
            "--models",
            str(timed_models),
            "--budget",
            level,
        )
        chosen = [next(g for g in p["generators"] if g["name"] == p["choice"]) for p in doc["prompts"]]
        costs.append(sum(g["cost_seconds"] for g in chosen))
        quals.append(sum(g["predicted_quality"] for g in chosen) / len(chosen))
    assert costs == sorted(costs) and quals == sorted(quals)
    assert costs[0] < costs[-1]


def test_disabling_a_generator_moves_only_the_prompts_that_chose_it(
    timed_models: Path, tmp_path: Path
) -> None:
    """λ is one price of compute: the cost scale is the dearest generator the router knows, enabled or not
    (catimg.routing.rule), so disabling sdxl keeps every other prompt's choice and the λ of each switch
    point."""
    from catimg.prompts import reference_set_path

    ref = str(reference_set_path("parti-geneval-50"))
    before = explain_json("-f", ref, "--models", str(timed_models), "--budget", "medium")
    off = tmp_path / "sdxl-off.toml"
    off.write_text(
        timed_models.read_text(encoding="utf-8").replace(
            "[generators.sdxl]\n", "[generators.sdxl]\nenabled = false\n"
        ),
        encoding="utf-8",
    )
    after = explain_json("-f", ref, "--models", str(off), "--budget", "medium")
    assert after["statuses"]["sdxl"] == "disabled" and after["lambda"] == before["lambda"]
    moved = 0
    for b, a in zip(before["prompts"], after["prompts"], strict=True):
        assert b["runner_up"] is not None and a["runner_up"] is not None  # explain always explains
        if b["choice"] == "sdxl":
            moved += 1
            assert a["choice"] in {"sdxl-turbo", "sd21"}
        else:
            assert a["choice"] == b["choice"]
            if b["switch_down"] is not None and b["switch_down"]["generator"] != "sdxl":
                assert a["switch_down"] == b["switch_down"]
    assert moved > 0


def test_explanation_only_when_asked(timed_models: Path) -> None:
    """route_prompts computes runner-up, margin and switch points only for explain; the plan is the same."""
    from catimg.config import load_catalog
    from catimg.device import cpu_device
    from catimg.routing.route import route_prompts
    from catimg.routing.router import load_router

    catalog, router = load_catalog(timed_models), load_router(None)
    plain = route_prompts(PROMPTS, catalog, router, cpu_device())
    full = route_prompts(PROMPTS, catalog, router, cpu_device(), explain=True)
    assert [r.rows for r in plain.routes] == [r.rows for r in full.routes]
    assert all(
        r.runner_up is None and r.margin is None and r.switch_down is None and r.switch_up is None
        for r in plain.routes
    )
    for r in full.routes:  # the choice is the argmax at the level's λ: nothing beats it
        assert r.runner_up is not None and r.margin is not None and r.margin >= -1e-12
        assert r.switch_down is None or r.switch_down[1] >= r.lam - 1e-12
        assert r.switch_up is None or r.switch_up[1] <= r.lam + 1e-12


def test_seconds_and_total_budgets_fit(timed_models: Path, prompt_file: Path) -> None:
    doc = explain_json("-f", str(prompt_file), "--models", str(timed_models), "--budget", "3s")
    assert doc["planned_seconds"] <= 3.0 * len(PROMPTS) + 1e-9
    total = explain_json("-f", str(prompt_file), "--models", str(timed_models), "--total-budget", "40s")
    assert total["planned_seconds"] + total["planned_load_seconds"] <= 40.0 + 1e-9
    assert total["total_budget_seconds"] == 40.0
    rich = explain_json("-f", str(prompt_file), "--models", str(timed_models), "--total-budget", "2h")
    assert rich["lambda"] == 0.0  # everything affordable: best predicted quality everywhere


def test_forced_generator_and_summary(timed_models: Path, prompt_file: Path) -> None:
    doc = explain_json("-f", str(prompt_file), "--models", str(timed_models), "--generator", "newcomer")
    assert {p["choice"] for p in doc["prompts"]} == {"newcomer"}
    code, out, _ = run_cli("explain", "-f", str(prompt_file), "--models", str(timed_models))
    assert code == 0 and "plan for 6 prompts" in out and "best single generator" in out
    assert "mean predicted quality" in out


@pytest.mark.parametrize(
    ("args", "needle", "exit_code"),
    [
        (["explain", "  "], "the prompt is empty", 2),
        (["explain"], "no prompt given", 2),
        (["explain", "-f", "/nonexistent/prompts.txt"], "prompt file not found", 2),
        (["explain", "x", "--budget", "cheap"], '--budget "cheap" is not a level or a duration', 2),
        (["explain", "x", "--budget", "low", "--total-budget", "1m"], "both given", 2),
        (["explain", "x", "--total-budget", "soon"], "is not a duration", 2),
        (["explain", "x", "--generator", "sdxl-turob"], 'did you mean "sdxl-turbo"', 2),
        (["explain", "x", "--router", "/nonexistent/router"], "/nonexistent/router", 3),
        (["explain", "x", "--models", "/nonexistent/models.toml"], "models file not found", 2),
    ],
)
def test_bad_input_is_one_line(args: list[str], needle: str, exit_code: int) -> None:
    code, out, err = run_cli(*args)
    assert code == exit_code and out == ""
    assert err.startswith("error: ") and needle in err and "\n" not in err.strip()


def test_total_budget_below_cheapest_plan(timed_models: Path, prompt_file: Path) -> None:
    code, _, err = run_cli(
        "explain", "-f", str(prompt_file), "--models", str(timed_models), "--total-budget", "1s"
    )
    assert code == 2 and "below the cheapest plan" in err


def test_models_json_lists_status_and_costs(timed_models: Path) -> None:
    code, out, _ = run_cli("models", "--models", str(timed_models), "--json")
    assert code == 0, out
    doc = json.loads(out)
    rows = {r["name"]: r for r in doc["generators"]}
    assert rows["sdxl"]["router"] == "routed" and rows["newcomer"]["router"] == "needs calibration"
    assert rows["sd15"]["router"] == "disabled"
    assert rows["sdxl"]["cost_kind"] == "explicit" and rows["sdxl"]["cost_seconds"] == 12.0
    assert rows["sdxl"]["weights_local"] is False  # nothing downloaded in tests
    code, out, _ = run_cli("models", "--models", str(timed_models))
    assert code == 0 and "needs calibration" in out and "missing" in out


def test_doctor_reports_offline_readiness(timed_models: Path) -> None:
    code, out, _ = run_cli("doctor", "--models", str(timed_models), "--json")
    doc = json.loads(out)
    assert code == 0, doc["problems"]
    # the bundled router knows the catalog's three, then the public sets' reference columns (never routed)
    assert doc["catalog"]["origin"] == "--models" and doc["router"]["generators"][:3] == [
        "sdxl-turbo",
        "sd21",
        "sdxl",
    ]
    assert doc["hub"]["downloads_allowed"] is False
    gens = {g["name"]: g for g in doc["generators"]}
    assert gens["sdxl"]["router_knows"] and not gens["newcomer"]["router_knows"]
    code, out, _ = run_cli("doctor", "--router", "/nonexistent/router")
    assert code == 1 and "problem" in out


def test_generator_without_any_cost_does_not_block_the_others(tmp_path: Path) -> None:
    """A newly added generator of an unknown family (no FLOP estimate, no cost_seconds, not in the router) is
    listed as needing calibration with an unknown cost; forcing it works without one."""
    models = tmp_path / "models.toml"
    models.write_text(
        PACKAGED_MODELS.read_text(encoding="utf-8")
        + '\n[generators.mystery]\nsource = "org/mystery"\nsteps = 8\n',
        encoding="utf-8",
    )
    doc = explain_json("a red cube", "--models", str(models))
    row = next(g for g in doc["prompts"][0]["generators"] if g["name"] == "mystery")
    assert row["cost_seconds"] is None and row["cost_tflops"] is None and row["status"] == "needs calibration"
    assert doc["prompts"][0]["choice"] in {"sdxl-turbo", "sd21", "sdxl"}
    code, out, _ = run_cli("models", "--models", str(models), "--json")
    mystery = next(r for r in json.loads(out)["generators"] if r["name"] == "mystery")
    assert code == 0 and mystery["cost_kind"] == "unknown" and mystery["cost_seconds"] is None
    # forcing it needs no cost (issue 10): the plan shows the cost as unknown
    forced = explain_json("a red cube", "--models", str(models), "--generator", "mystery")
    row = next(g for g in forced["prompts"][0]["generators"] if g["name"] == "mystery")
    assert (
        forced["prompts"][0]["choice"] == "mystery"
        and row["status"] == "forced"
        and row["cost_seconds"] is None
    )
