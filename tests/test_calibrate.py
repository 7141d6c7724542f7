"""The calibration campaign through the real CLI: tiny real pipelines, a tiny real CLIP, a real SQLite store.

One session-scoped campaign story: dry run, a run interrupted by Ctrl-C, resumed, a generator added to the
catalog afterwards (only it is measured), a changed generator (a new settings hash; old measurements stay),
export/import, and the store's table feeding training.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from catimg.calibration.store import Store
from catimg.cli import app
from catimg.errors import CatimgError, InputError, MeasurementsError, StoreError, WeightsMissingError

PROMPTS = ["a red cube", "a blue sphere on grass", "two cats", "a lighthouse at dusk"]


def _catalog(path: Path, entries: dict[str, tuple[Path, int]]) -> Path:
    lines = []
    for name, (folder, steps) in entries.items():
        lines += [
            f"[generators.{name}]",
            f'source = "{folder}"',
            f"steps = {steps}",
            "guidance = 1.0",
            "width = 64",
            "height = 64",
            "cost_seconds = 0.05",
            "",
        ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _run(args: list[str]) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=True)


@pytest.fixture
def setup(tmp_path: Path, tiny_sd_dir: Path, tiny_clip_dir: Path) -> dict[str, Path]:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# calibration prompts\n" + "\n".join(PROMPTS) + "\n", encoding="utf-8")
    models = _catalog(tmp_path / "models.toml", {"fast": (tiny_sd_dir, 2)})
    return {
        "prompts": prompts,
        "models": models,
        "db": tmp_path / "cal.sqlite",
        "clip": tiny_clip_dir,
        "out": tmp_path / "imgs",
        "root": tmp_path,
    }


def _base(s: dict[str, Path], *extra: Any) -> list[Any]:
    return [
        "calibrate",
        "--prompts",
        s["prompts"],
        "--models",
        s["models"],
        "--db",
        s["db"],
        "--scorer-model",
        s["clip"],
        "--out",
        s["out"],
        "--device",
        "cpu",
        *extra,
    ]


def test_dry_run_counts_and_estimates_without_generating(setup: dict[str, Path]) -> None:
    r = _run(_base(setup, "--seeds", "2", "--dry-run", "--json"))
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["dry_run"] and doc["images"] == 8 and doc["already_measured"] == 0
    assert doc["generators"][0]["seconds_per_image"] == pytest.approx(0.05)
    assert doc["estimated_seconds"] == pytest.approx(
        8 * 0.05 + doc["generators"][0]["estimated_seconds"] - 0.4
    )
    assert not setup["out"].exists()
    r = _run(_base(setup, "--dry-run", "--limit", "10"))
    assert r.exit_code == 0
    assert "fewer than --limit 10" in r.output and "4 images to make" in r.output and "dry run" in r.output


def test_dry_run_writes_nothing(setup: dict[str, Path]) -> None:
    new = setup["root"] / "new" / "cal.sqlite"
    r = _run(
        [
            "calibrate",
            "--prompts",
            setup["prompts"],
            "--models",
            setup["models"],
            "--db",
            new,
            "--device",
            "cpu",
            "--dry-run",
            "--json",
        ]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["images"] == 4 and json.loads(r.stdout)["db"] == str(new)
    assert not new.parent.exists()
    empty = setup["root"] / "empty.sqlite"
    empty.touch()
    r = _run(
        [
            "calibrate",
            "--prompts",
            setup["prompts"],
            "--models",
            setup["models"],
            "--db",
            empty,
            "--device",
            "cpu",
            "--dry-run",
        ]
    )
    assert r.exit_code == 0, r.output
    assert empty.stat().st_size == 0
    with Store.open(setup["db"]):  # an existing store: the plan reads it and leaves it byte for byte
        pass
    before = {f.name: f.read_bytes() for f in setup["root"].iterdir() if f.is_file()}
    r = _run(_base(setup, "--dry-run"))
    assert r.exit_code == 0, r.output
    assert {f.name: f.read_bytes() for f in setup["root"].iterdir() if f.is_file()} == before
    with Store.open(setup["db"]) as store:
        assert store.generators() == []


def test_campaign_interrupted_resumed_extended_and_changed(
    setup: dict[str, Path], tiny_sd2_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from catimg.calibration import scorer as scorer_mod

    real_score = scorer_mod.CLIPFamilyScorer.score
    calls = {"n": 0}

    def interrupting(self: Any, images: Any, prompts: Any) -> list[float]:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_score(self, images, prompts)

    monkeypatch.setattr(scorer_mod.CLIPFamilyScorer, "score", interrupting)
    r = _run(_base(setup, "--batch-size", "1"))
    assert r.exit_code == 130, r.output
    assert "interrupted" in r.output and "run the same command again" in r.output
    with Store.open(setup["db"]) as st:
        assert st.metrics() == {"clipscore": 2}
    monkeypatch.setattr(scorer_mod.CLIPFamilyScorer, "score", real_score)

    # resumed: only the two missing images are made
    r = _run(_base(setup, "--json"))
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["plan"]["images"] == 2 and doc["plan"]["already_measured"] == 2 and doc["recorded"] == 2
    g = doc["generators"][0]
    assert g["name"] == "fast" and g["images"] == 4 and g["prompts"] == 4 and 0 <= g["mean_score"] <= 100
    assert len(list(setup["out"].glob("*.png"))) >= 4

    # nothing left to do
    r = _run(_base(setup, "--json"))
    assert json.loads(r.stdout)["plan"]["images"] == 0

    # a generator added to the catalog: only it is measured (a step variant of another model)
    _catalog(setup["models"], {"fast": (_src(setup), 2), "other": (tiny_sd2_dir, 3)})
    r = _run(_base(setup, "--json"))
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    per = {g["name"]: g for g in doc["plan"]["generators"]}
    assert per["fast"]["images"] == 0 and per["other"]["images"] == 4 and doc["recorded"] == 4

    # a changed generator (steps 2 -> 4) is new for the store; the old measurements stay
    _catalog(setup["models"], {"fast": (_src(setup), 4), "other": (tiny_sd2_dir, 3)})
    r = _run(_base(setup, "--generators", "fast", "--limit", "2", "--json"))
    doc = json.loads(r.stdout)
    assert doc["recorded"] == 2
    with Store.open(setup["db"]) as st:
        assert st.metrics() == {"clipscore": 10}
        names = {m.generator for m in st.measurements("clipscore")}
        assert "fast" in names and "other" in names and any(n.startswith("fast~") for n in names)

    # export -> the long format the trainer reads; import into a fresh database gives the same table
    out_csv = setup["root"] / "m.csv"
    r = _run(
        [
            "measurements",
            "export",
            out_csv,
            "--db",
            setup["db"],
            "--metric",
            "clipscore",
            "--generators",
            "fast,other",
        ]
    )
    assert r.exit_code == 0, r.output
    from catimg.measurements import read_measurements

    table = read_measurements(out_csv)
    assert table.metric == "clipscore" and set(table.generators) == {"fast", "other"}
    r = _run(
        [
            "measurements",
            "import",
            out_csv,
            "--db",
            setup["root"] / "copy.sqlite",
            "--models",
            setup["models"],
        ]
    )
    assert r.exit_code == 0, r.output
    # 10 rows; the changed 'fast' shares the catalog's settings hash with the old one, so 2 rows repeat a key
    assert "10 scores: 8 new, 0 updated, 2 unchanged" in r.output

    # calibrate -> train --db -> eval: the router learns both generators, 'fast' from 2 prompts only
    router_dir = setup["root"] / "router"
    r = _run(
        [
            "train",
            "--db",
            setup["db"],
            "--models",
            setup["models"],
            "--out",
            router_dir,
            "--metric",
            "clipscore",
            "--predictor",
            "knn",
            "--json",
        ]
    )
    assert r.exit_code == 0, (r.output, r.exception)
    gens = {g["name"]: g for g in json.loads(r.stdout)["generators"]}
    assert gens["fast"]["n_measured"] == 2 and gens["other"]["n_measured"] == 4
    r = _run(["eval", "--router", router_dir, "--measurements", out_csv, "--metric", "clipscore", "--json"])
    assert r.exit_code == 0, (r.output, r.exception)
    r = _run(
        [
            "train",
            "--db",
            setup["db"],
            "--models",
            setup["models"],
            "--out",
            router_dir,
            "--metric",
            "pickscore",
            "--force",
        ]
    )
    assert isinstance(r.exception, MeasurementsError) and "pickscore" in str(r.exception)

    # the store as a training table for the current catalog: 'fast' (new settings) measured on 2 prompts only
    from catimg.config import load_catalog

    cat = load_catalog(setup["models"])
    with Store.open(setup["db"]) as st:
        t = st.to_table("clipscore", list(cat.generators))
        assert t.generators == ["fast", "other"] and t.n_prompts == 4
        assert t.n_measured() == {"fast": 2, "other": 4}
        assert np.isnan(t.Y).sum() == 2
        with pytest.raises(MeasurementsError, match="pickscore"):
            st.to_table("pickscore", list(cat.generators))


def _src(s: dict[str, Path]) -> Path:
    text = s["models"].read_text(encoding="utf-8")
    return Path(text.split('source = "')[1].split('"')[0])


def test_bad_inputs_are_one_line(setup: dict[str, Path], tmp_path: Path) -> None:
    r = _run(_base(setup, "--metric", "clipscor"))
    assert isinstance(r.exception, InputError) and 'did you mean "clipscore"' in str(r.exception)
    r = _run(_base(setup, "--generators", "fsat"))
    assert isinstance(r.exception, InputError) and 'did you mean "fast"' in str(r.exception)
    missing = [
        "calibrate",
        "--prompts",
        setup["prompts"],
        "--models",
        setup["models"],
        "--db",
        setup["db"],
        "--device",
        "cpu",
    ]
    r = _run(missing)
    assert isinstance(r.exception, WeightsMissingError) and "openai/clip-vit-large-patch14" in str(
        r.exception
    )
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as c:
        c.execute("CREATE TABLE x (y)")
    r = _run(_base(setup, "--db", other))
    assert isinstance(r.exception, StoreError) and "not a catimg" in str(r.exception)
    r = _run(["calibrate", "--prompts", tmp_path / "nope.txt", "--db", setup["db"]])
    assert isinstance(r.exception, InputError) and "not found" in str(r.exception)
    r = _run(["measurements", "export", tmp_path / "x.csv", "--db", tmp_path / "none.sqlite"])
    assert isinstance(r.exception, StoreError) and isinstance(r.exception, CatimgError)
    assert "\n" not in str(r.exception)


def test_main_prints_one_line_for_locked_campaign(setup: dict[str, Path]) -> None:
    import subprocess
    import sys

    from harness import run_cli

    Store.open(setup["db"]).close()
    code = (
        "import sys; from catimg.calibration.store import Store; s = Store.open(sys.argv[1]); "
        "s.acquire_campaign(); print('ok', flush=True); sys.stdin.readline()"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code, str(setup["db"])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as p:
        try:
            assert p.stdout is not None and p.stdout.readline().strip() == "ok"
            exit_code, out, err = run_cli(*_base(setup))
            assert exit_code == StoreError.exit_code and out == ""
            assert err.strip().count("\n") == 0 and "another catimg calibrate is running" in err
        finally:
            assert p.stdin is not None
            p.stdin.write("\n")
            p.stdin.flush()
            p.wait(timeout=30)
