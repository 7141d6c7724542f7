"""catimg bench: real tiny pipelines measured, cached, reused, invalidated; corrupt cache discarded in one
line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from catimg.cli import app
from catimg.config import parse_catalog
from catimg.costs.bench import cache_path, load_cache, lookup, measure, pop_warnings, save_results
from catimg.costs.model import generator_cost
from catimg.device import DeviceInfo, detect_device

CPU = detect_device("cpu")
H100 = DeviceInfo("cuda", 0, "NVIDIA H100 80GB HBM3", 79.2, 78.0, (9, 0), True, "cuda:0")


def _catalog(tmp_path: Path, folder: Path, width: int = 64, steps: str = "[2, 4]") -> Path:
    toml = tmp_path / "models.toml"
    toml.write_text(
        f'[generators.tsd]\nsource = "{folder}"\nsteps = {steps}\nwidth = {width}\nheight = 64\n',
        encoding="utf-8",
    )
    return toml


def test_bench_command_stores_and_cost_uses_it(tmp_path: Path, tiny_sd_dir: Path) -> None:
    toml = _catalog(tmp_path, tiny_sd_dir)
    r = CliRunner().invoke(
        app, ["bench", "--models", str(toml), "--device", "cpu", "--repeats", "2", "--warmup", "1", "--json"]
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    rows = {x["generator"]: x for x in doc["results"]}
    assert set(rows) == {"tsd@2", "tsd@4"}  # one model measured once, stored for both step variants
    for row in rows.values():
        assert row["step_seconds"] > 0 and row["fixed_seconds"] >= 0 and row["load_seconds"] > 0
        assert row["peak_memory_gb"] is None and "CUDA only" in row["note"]
    assert rows["tsd@4"]["seconds_per_image"] > rows["tsd@2"]["seconds_per_image"]
    assert Path(doc["cache"]) == cache_path() and cache_path().is_file()
    assert str(cache_path()).startswith(os.environ["CATIMG_CACHE_DIR"])

    cat = parse_catalog(toml.read_text(), toml)
    c = generator_cost(cat.get("tsd@4"), CPU)
    assert c.kind == "measured"
    assert c.seconds == pytest.approx(rows["tsd@4"]["seconds_per_image"])
    assert c.load_seconds == pytest.approx(rows["tsd@4"]["load_seconds"])
    # another device class has no measurement
    assert generator_cost(cat.get("tsd@4"), H100).kind == "estimated"


def test_results_reused_and_invalidated_by_settings(tmp_path: Path, tiny_sd_dir: Path) -> None:
    cat = parse_catalog(_catalog(tmp_path, tiny_sd_dir).read_text(), tmp_path / "models.toml")
    g2 = cat.get("tsd@2")
    res = measure(g2, CPU, repeats=1, warmup=0)
    assert res.steps_run == 3  # at least two step intervals are timed
    save_results([res], CPU)
    hit = lookup(g2, CPU)
    assert hit == res  # exact settings match
    # another step count of the same model reuses the per-step and fixed seconds
    g4 = cat.get("tsd@4")
    other = lookup(g4, CPU)
    assert other is not None and "from the measurement of tsd@2" in other.note
    assert generator_cost(g4, CPU).seconds == pytest.approx(res.fixed_seconds + 4 * res.step_seconds)
    # a changed size is a new generator: estimated again
    wide = parse_catalog(_catalog(tmp_path, tiny_sd_dir, width=128).read_text(), tmp_path / "models.toml")
    assert lookup(wide.get("tsd@2"), CPU) is None
    assert generator_cost(wide.get("tsd@2"), CPU).kind == "estimated"
    # another dtype on the same device misses too
    assert lookup(g2, CPU, dtype="bf16") is None


def test_corrupt_cache_is_discarded_with_one_warning(tmp_path: Path, tiny_sd_dir: Path) -> None:
    path = cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"format": 1, "entries": {"x": {"generator": 3}}', encoding="utf-8")
    cat = parse_catalog(_catalog(tmp_path, tiny_sd_dir).read_text(), tmp_path / "models.toml")
    c = generator_cost(cat.get("tsd@2"), CPU)
    assert c.kind == "estimated"
    warns = pop_warnings()
    assert len(warns) == 1 and "corrupt" in warns[0] and "catimg bench" in warns[0] and "\n" not in warns[0]
    assert not path.exists() and path.with_name("bench.json.corrupt").exists()
    assert load_cache() == {} and pop_warnings() == []


def test_corrupt_cache_via_cli(tmp_path: Path, tiny_sd_dir: Path) -> None:
    cache_path().parent.mkdir(parents=True, exist_ok=True)
    cache_path().write_text("not json at all", encoding="utf-8")
    toml = _catalog(tmp_path, tiny_sd_dir, steps="2")
    r = CliRunner().invoke(
        app, ["bench", "--models", str(toml), "--device", "cpu", "--repeats", "1", "--warmup", "0"]
    )
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if "warning:" in ln]
    assert len(lines) == 1 and "was corrupt" in lines[0]
    assert set(load_cache()) and "Traceback" not in r.output


def test_missing_weights_fail_in_one_line(tmp_path: Path) -> None:
    toml = tmp_path / "models.toml"
    toml.write_text(
        '[generators.xl]\nsource = "stabilityai/sdxl-turbo"\nsteps = 1\nguidance = 0\n', encoding="utf-8"
    )
    r = CliRunner().invoke(app, ["bench", "--models", str(toml), "--device", "cpu", "--json"])
    assert r.exit_code == 6
    doc = json.loads(r.stdout)
    assert doc["results"] == [] and len(doc["errors"]) == 1 and "sdxl-turbo" in doc["errors"][0]


def test_bench_does_not_leak_the_torchvision_notice(tmp_path: Path, tiny_sd_dir: Path) -> None:
    """transformers' "requires torchvision (not installed); falling back to ...Pil" notice (once per process)
    is silenced by `catimg bench`, on its one logger only; loading the same pipeline without the CLI shows
    it."""
    import importlib.util
    import subprocess
    import sys

    toml = _catalog(tmp_path, tiny_sd_dir, steps="2")
    # a fresh process with transformers' default verbosity (tests that load pipelines in-process set it
    # to error)
    env = {k: v for k, v in os.environ.items() if k not in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY")}
    env["CATIMG_CACHE_DIR"] = str(tmp_path / "cache")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "catimg",
            "bench",
            "--models",
            str(toml),
            "--device",
            "cpu",
            "--repeats",
            "1",
            "--warmup",
            "0",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert "torchvision" not in r.stderr and "torchvision" not in r.stdout, r.stderr
    if importlib.util.find_spec("torchvision") is None:  # the control: the notice is real here
        code = (
            "from catimg.config import parse_catalog; from catimg.costs.bench import measure; "
            "from catimg.device import detect_device; from pathlib import Path; "
            f"p = Path({str(toml)!r}); g = parse_catalog(p.read_text(), p).get('tsd'); "
            "measure(g, detect_device('cpu'), repeats=1, warmup=0)"
        )
        control = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        assert control.returncode == 0, control.stderr
        assert "requires torchvision (not installed)" in control.stderr
