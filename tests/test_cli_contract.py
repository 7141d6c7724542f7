"""The outside contract as a new user meets it: train on measured seconds for generators catimg cannot
estimate (made-up Hub ids, never downloaded), explain --json on them, messages that keep their brackets, dry
runs without weights."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from catimg.cli import app

runner = CliRunner()

CATALOG = """
[generators.fast]
source = "org/model-a"
steps = 4
guidance = 0.0
width = 512
height = 512

[generators.slow]
source = "org/model-b"
steps = 50
guidance = 7.5
width = 1024
height = 1024
"""

PROMPTS = [
    "a cat in watercolor",
    "three red apples on a table",
    "a city skyline at night",
    "two horses and a cart",
    "a bowl of soup",
    "a mountain lake at dawn",
    "a robot playing chess",
    "five blue cubes",
    "a cozy library",
    "a crowded market street",
    "a single rose",
    "a portrait of an old man",
]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "catimg", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("contract")
    (d / "models.toml").write_text(CATALOG)
    with (d / "m.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "generator", "score", "seconds"])
        for i, p in enumerate(PROMPTS):
            hard = any(k in p for k in ("three", "two", "five", "crowded", "chess"))
            w.writerow([p, "fast", 2.0 if hard else 3.5, 0.5])
            w.writerow([p, "slow", 3.6 + 0.01 * i, 12.0])
    (d / "prompts.txt").write_text("\n".join(PROMPTS[:5]) + "\n")
    return d


def test_train_and_explain_on_measured_seconds_without_flop_estimates(trained: Path) -> None:
    d = trained
    r = runner.invoke(
        app,
        [
            "train",
            "--measurements",
            str(d / "m.csv"),
            "--models",
            str(d / "models.toml"),
            "--out",
            str(d / "router"),
        ],
    )
    assert r.exit_code == 0, r.output
    cfg = json.loads((d / "router" / "config.json").read_text())
    assert cfg["cost_unit"] == "seconds"
    assert {g["name"]: g["cost_seconds"] for g in cfg["generators"]} == {"fast": 0.5, "slow": 12.0}

    for level in ("low", "max"):
        r = runner.invoke(
            app,
            [
                "explain",
                "-f",
                str(d / "prompts.txt"),
                "--router",
                str(d / "router"),
                "--models",
                str(d / "models.toml"),
                "--budget",
                level,
                "--json",
            ],
        )
        assert r.exit_code == 0, r.output
        doc = json.loads(r.stdout)
        assert [p["prompt"] for p in doc["prompts"]] == PROMPTS[:5]
        for p in doc["prompts"]:
            assert p["choice"] in ("fast", "slow")
            costs = {g["name"]: g["cost_seconds"] for g in p["generators"]}
            assert costs == {"fast": 0.5, "slow": 12.0}  # the training seconds: no FLOP estimate exists
            assert all(
                isinstance(g["cost_tflops"], float) and isinstance(g["predicted_quality"], float)
                for g in p["generators"]
            )

    r = runner.invoke(app, ["models", "--router", str(d / "router"), "--models", str(d / "models.toml")])
    assert r.exit_code == 0, r.output
    assert "estimated cost" not in r.output  # nothing is estimated here


def test_train_without_seconds_and_without_estimate_says_what_to_give(trained: Path, tmp_path: Path) -> None:
    m = tmp_path / "noseconds.csv"
    m.write_text("prompt,generator,score\n" + "".join(f"{p},fast,3\n{p},slow,4\n" for p in PROMPTS[:4]))
    p = _cli("train", "-M", str(m), "--models", str(trained / "models.toml"), "--out", str(tmp_path / "r"))
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    line = p.stderr.strip()
    assert len(line.splitlines()) == 1
    assert "[generators.fast]" in line and "cost_seconds" in line and "seconds column" in line


def test_error_messages_keep_square_brackets(tmp_path: Path) -> None:
    bad = tmp_path / "models.toml"
    bad.write_text('[generators.foo]\nsource = "a/b"\nstpes = 4\n')
    p = _cli("explain", "a cat", "--models", str(bad))
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert '[generators.foo]: unknown key "stpes" (did you mean "steps"?)' in p.stderr


def test_prompts_with_brackets_render_verbatim() -> None:
    prompt = "a sign reading [bold] and [/] done"
    r = runner.invoke(app, ["explain", prompt, "--neighbours", "0"])
    assert r.exit_code == 0, r.output
    assert prompt in r.output


def test_dry_run_shows_the_plan_when_weights_are_missing(tmp_path: Path) -> None:
    from catimg.errors import WeightsMissingError

    out = tmp_path / "out"
    r = runner.invoke(app, ["gen", "a lighthouse at dusk", "--dry-run", "--out", str(out), "--seed", "1"])
    # the plan is shown, then the run fails as a real one would: same message, same exit code
    assert "plan: 1 prompt(s)" in r.output and "a real run stops before loading anything" in r.output
    assert "dry run: nothing loaded, nothing written" in r.output
    assert isinstance(r.exception, WeightsMissingError) and "hf download" in r.exception.message
    assert not out.exists()


def test_router_weights_that_do_not_fit_the_config_fail_as_one_line(tmp_path: Path) -> None:
    import shutil

    import numpy as np
    from safetensors.numpy import load_file, save_file

    from catimg.errors import RouterError
    from catimg.routing.router import PACKAGED_ROUTER, load_router

    bad = tmp_path / "router"
    shutil.copytree(PACKAGED_ROUTER, bad)
    arrays = load_file(str(bad / "weights.safetensors"))
    key = next(k for k, v in arrays.items() if v.ndim >= 1 and v.shape[0] > 3)
    arrays[key] = np.ascontiguousarray(arrays[key][:3])
    save_file(arrays, str(bad / "weights.safetensors"))
    with pytest.raises(RouterError, match="weights") as exc:
        load_router(bad)
    assert "\n" not in exc.value.message and "catimg train" in exc.value.message


def test_exit_codes_of_the_console_entry(tmp_path: Path) -> None:
    """`raise typer.Exit(n)` inside a command must reach the shell (click returns it without standalone
    mode)."""
    p = _cli("doctor", "--router", str(tmp_path / "no-router"))
    assert p.returncode == 1, p.stdout + p.stderr
    assert "router folder not found" in p.stdout
    p = _cli("doctor")  # offline, no weights anywhere: a report, not a failure
    assert p.returncode == 0, p.stdout + p.stderr
    assert "missing" in p.stdout


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["gen", "a cat", "--seed", "abc"], ["--seed", "'abc'", "catimg gen --help"]),
        (["explain", "a cat", "--neighbours", "99"], ["--neighbours", "'99'"]),
        (["gen", "a cat", "--sed", "3"], ["No such option: --sed", "--seed"]),
    ],
)
def test_usage_errors_are_one_line_without_traceback(args: list[str], needles: list[str]) -> None:
    p = _cli(*args)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    for n in needles:
        assert n in p.stderr
