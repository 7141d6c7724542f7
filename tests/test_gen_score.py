"""`catimg gen --score`: a router that learns from use, through the real CLI.

Tiny real pipelines make the images, a tiny real CLIP (in a fake Hugging Face cache under the default
CLIPScore id) scores them, a real SQLite store keeps them, and `train --db` retrains the router with the real
encoder. The story runs as a user would: a router trained on imported measurements, `gen --score`,
`train --db`, `gen --score` again. The bad inputs: no scorer, corrupt scorer weights, a store of a newer
catimg.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tiny  # tests/tiny.py
from harness import run_cli

from catimg.calibration.store import Store

CLIP_ID = "openai/clip-vit-large-patch14"  # the default clipscore checkpoint
PROMPTS = ["two cats", "a lighthouse at dusk", "a red cube on a table"]


def _catalog(path: Path, sd: Path) -> Path:
    lines = []
    for name, steps, secs in (("fast", 1, 0.05), ("slow", 3, 0.2)):
        lines += [
            f"[generators.{name}]",
            f'source = "{sd}"',
            f"steps = {steps}",
            "guidance = 1.0",
            "width = 64",
            "height = 64",
            f"cost_seconds = {secs}",
            "",
        ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


@pytest.fixture
def setup(tmp_path: Path, tiny_sd_dir: Path) -> dict[str, Path]:
    return {
        "models": _catalog(tmp_path / "models.toml", tiny_sd_dir),
        "db": tmp_path / "m.sqlite",
        "root": tmp_path,
    }


def _json(args: list[Any]) -> dict[str, Any]:
    code, out, err = run_cli(*[str(a) for a in args], "--json")
    assert code == 0, err
    return json.loads(out)


def _predictions(router: Path, models: Path) -> dict[tuple[str, str], float]:
    doc = _json(["explain", *PROMPTS, "--router", router, "--models", models, "--device", "cpu"])
    return {(r["prompt"], g["name"]): g["predicted_quality"] for r in doc["prompts"] for g in r["generators"]}


def _gen(s: dict[str, Path], router: Path, out: Path, seed: int, *extra: Any) -> dict[str, Any]:
    return _json(
        [
            "gen",
            *PROMPTS,
            "--router",
            router,
            "--models",
            s["models"],
            "--out",
            out,
            "--seed",
            seed,
            "--device",
            "cpu",
            "--score",
            "--db",
            s["db"],
            *extra,
        ]
    )


def _gen_rows(db: Path) -> list[Any]:
    with Store.open(db, create=False) as store:
        return [m for m in store.measurements("clipscore") if m.source == "gen"]


def test_gen_score_train_db_moves_predictions_towards_the_new_measurements(
    setup: dict[str, Path], tiny_clip_dir: Path, hf_cache: Path
) -> None:
    s = setup
    tiny.install_fake_hub(hf_cache, CLIP_ID, tiny_clip_dir)
    # imported measurements far above what the tiny CLIP gives (0-10): the router learns "about 60-90"
    csv = tiny.write_measurements(
        s["root"] / "m.csv", {"fast": (80.0, 60.0, 0.05), "slow": (85.0, 90.0, 0.2)}, n=24
    )
    code, _, err = run_cli(
        "measurements", "import", csv, "--db", s["db"], "--models", s["models"], "--metric", "clipscore"
    )
    assert code == 0, err
    assert (
        _json(["train", "--db", s["db"], "--models", s["models"], "--out", s["root"] / "r1"])["data_card"][
            "store"
        ]["own_rows"]
        == 0
    )
    before = _predictions(s["root"] / "r1", s["models"])

    doc = _gen(s, s["root"] / "r1", s["root"] / "out1", 7)
    made = {(i["prompt"], i["generator"], i["seed"]): i for i in doc["images"] if i["status"] == "ok"}
    scoring = doc["scoring"]
    assert len(made) == 3 and scoring["scored"] == 3 and scoring["unscored"] == 0 and scoring["error"] is None
    assert scoring["scorer"] == CLIP_ID and scoring["db"] == str(s["db"])
    rows = _gen_rows(s["db"])
    assert {(m.prompt, m.generator, m.seed) for m in rows} == set(made)
    assert (
        max(m.score for m in rows) > 1.0
    )  # the tiny CLIP gives "two cats" a real score (others may clamp to 0)
    # what the store holds is what the manifest measured and what the scorer gives for the PNG on disk
    from PIL import Image

    from catimg.calibration.scorer import load_scorer

    scorer = load_scorer("clipscore")
    manifest = [json.loads(line) for line in (s["root"] / "out1" / "manifest.jsonl").read_text().splitlines()]
    for m in rows:
        rec = next(
            r for r in manifest if (r["prompt"], r["generator"], r["seed"]) == (m.prompt, m.generator, m.seed)
        )
        with Image.open(s["root"] / "out1" / rec["file"]) as im:
            assert m.score == pytest.approx(scorer.score([im], [m.prompt])[0], abs=1e-4)
        assert m.seconds == pytest.approx(rec["measured_seconds"], abs=1e-3) and m.seconds > 0
    with sqlite3.connect(s["db"]) as conn:  # the generator settings behind each row, under its settings hash
        hashes = dict(conn.execute("SELECT name, hash FROM generators"))
    assert {hashes[m.generator] for m in rows} == {r["settings_hash"] for r in manifest}

    card = _json(["train", "--db", s["db"], "--models", s["models"], "--out", s["root"] / "r2"])["data_card"]
    assert card["store"]["own_rows"] == 3 and card["store"]["own_prompts"] == 3
    assert card["store"]["rows_by_source"]["gen"] == 3
    after = _predictions(s["root"] / "r2", s["models"])
    for m in rows:  # each measured (prompt, generator) moved towards its measurement
        key = (m.prompt, m.generator)
        assert abs(after[key] - m.score) < abs(before[key] - m.score) - 1.0, (
            key,
            before[key],
            after[key],
            m.score,
        )

    code, out, err = run_cli(
        "explain", PROMPTS[0], "--router", s["root"] / "r2", "--models", s["models"], "--device", "cpu"
    )
    assert code == 0, err
    assert "router data: 3 of your own measurements on 3 prompt(s)" in out and "gen --score 3" in out
    own = _json(
        ["explain", PROMPTS[0], "--router", s["root"] / "r2", "--models", s["models"], "--device", "cpu"]
    )
    assert own["own_measurements"]["rows"] == 3 and own["own_measurements"]["by_source"]["gen"] == 3

    # the second use, with the refreshed router: three more rows (other seeds), the first three kept
    doc = _gen(s, s["root"] / "r2", s["root"] / "out2", 8)
    assert doc["scoring"]["scored"] == 3
    assert len(_gen_rows(s["db"])) == 6


def test_resume_score_scores_earlier_images_and_corrupt_weights_lose_nothing(
    setup: dict[str, Path], tiny_clip_dir: Path
) -> None:
    s = setup
    out = s["root"] / "out"
    code, _, err = run_cli(
        "gen",
        *PROMPTS[:2],
        "--generator",
        "fast",
        "--models",
        s["models"],
        "--out",
        out,
        "--seed",
        "3",
        "--device",
        "cpu",
    )
    assert code == 0, err
    manifest = (out / "manifest.jsonl").read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) == 2

    bad = s["root"] / "bad-clip"
    shutil.copytree(tiny_clip_dir, bad)
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # cut short
    args = [
        "gen",
        *PROMPTS[:2],
        "--generator",
        "fast",
        "--models",
        s["models"],
        "--out",
        out,
        "--seed",
        "3",
        "--device",
        "cpu",
        "--resume",
        "--score",
        "--db",
        s["db"],
    ]
    code, stdout, err = run_cli(*args, "--scorer-model", bad)
    assert code == 6, err
    line = err.strip()
    assert "\n" not in line and "corrupt or incomplete" in line and str(bad) in line
    assert (out / "manifest.jsonl").read_text() == manifest and sorted(
        p.name for p in out.glob("*.png")
    ) == pngs
    assert not _gen_rows(s["db"]) if s["db"].exists() else True

    doc = _json(
        [*args, "--scorer-model", tiny_clip_dir]
    )  # the scorer works now: the earlier images are scored
    assert doc["scoring"]["scored"] == 2 and doc["scoring"]["from_earlier_runs"] == 2
    assert {m.prompt for m in _gen_rows(s["db"])} == set(PROMPTS[:2])
    doc = _json([*args, "--scorer-model", tiny_clip_dir])  # and only once
    assert doc["scoring"]["scored"] == 0 and len(_gen_rows(s["db"])) == 2


def test_score_without_a_scorer_fails_before_any_work(setup: dict[str, Path]) -> None:
    s = setup
    out = s["root"] / "out"
    code = (
        "import sys\nfrom catimg.cli import main\n"
        f"sys.argv = ['catimg', 'gen', 'a red cube', '--models', {str(s['models'])!r}, "
        f"'--out', {str(out)!r}, "
        f"'--score', '--db', {str(s['db'])!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n"
        "    print('exit', e.code, 'torch' in sys.modules, 'diffusers' in sys.modules, file=sys.stderr)\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy(), timeout=120
    )
    lines = p.stderr.strip().splitlines()
    assert lines[-1] == "exit 6 False False", p.stderr
    assert len(lines) == 2 and f"hf download {CLIP_ID}" in lines[0] and "--scorer-model" in lines[0]
    assert not out.exists() and not s["db"].exists()


def test_score_into_a_store_of_a_newer_catimg_is_one_line(
    setup: dict[str, Path], tiny_clip_dir: Path
) -> None:
    s = setup
    with Store.open(s["db"]):
        pass
    with sqlite3.connect(s["db"]) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    out = s["root"] / "out"
    code, _, err = run_cli(
        "gen",
        "a red cube",
        "--models",
        s["models"],
        "--out",
        out,
        "--device",
        "cpu",
        "--score",
        "--db",
        s["db"],
        "--scorer-model",
        tiny_clip_dir,
    )
    assert code == 8
    assert err.count("\n") == 1 and "newer catimg" in err and str(s["db"]) in err
    assert not out.exists()


def test_run_scoring_records_what_the_scorer_gives_and_stops_at_a_failure(
    tiny_clip_dir: Path, tmp_path: Path
) -> None:
    """RunScoring records what the scorer gives, and a failure stops the scoring (not the caller) and is
    kept."""
    from PIL import Image

    from catimg.calibration.calibrate import RunScoring
    from catimg.calibration.scorer import load_scorer

    img = tmp_path / "a.png"
    Image.new("RGB", (64, 64), (200, 20, 20)).save(img)
    with Store.open(tmp_path / "s.sqlite") as store:
        run = RunScoring(store, load_scorer("clipscore", str(tiny_clip_dir)), "cpu/test")
        gen = tiny.generator("fast")
        done = run.score(gen, "a red square", 1, img, 0.5)
        assert done is not None and math.isfinite(done.score)
        assert run.score(gen, "a red square", 2, tmp_path / "missing.png", 0.5) is None
        assert isinstance(run.error, FileNotFoundError) and run.unscored == 1
        assert run.score(gen, "a red square", 3, img, 0.5) is None and run.unscored == 2  # stopped
        rows = store.measurements("clipscore")
    assert [(r.prompt, r.seed, r.source, r.score) for r in rows] == [("a red square", 1, "gen", done.score)]


def test_every_gen_run_feeds_the_cost_cache(tmp_path: Path, tiny_sd_dir: Path) -> None:
    """Without --score too: the seconds a run measured become this device's measured cost (the cache bench
    fills)."""
    from catimg.config import load_catalog
    from catimg.costs.bench import lookup
    from catimg.device import cpu_device

    models = tmp_path / "models.toml"
    models.write_text(
        f'[generators.sd]\nsource = "{tiny_sd_dir}"\nfamily = "sd1"\nsteps = 2\nguidance = 1.0\n'
        "width = 64\nheight = 64\n",
        encoding="utf-8",
    )
    gen = load_catalog(models).get("sd")
    cost = _json(["explain", "a cat", "--generator", "sd", "--models", models, "--device", "cpu"])["costs"][
        "sd"
    ]
    assert cost["kind"] == "estimated" and lookup(gen, cpu_device()) is None

    def run(out: str) -> list[float]:
        doc = _json(
            [
                "gen",
                "a red cube",
                "two cats",
                "--generator",
                "sd",
                "--models",
                models,
                "--out",
                tmp_path / out,
                "--seed",
                "1",
                "--device",
                "cpu",
            ]
        )
        return [i["seconds"] for i in doc["images"] if i["status"] == "ok"]

    first = run("o1")
    entry = lookup(gen, cpu_device())
    assert entry is not None and entry.source == "catimg gen" and entry.steps_run == 2
    assert (
        entry.image_seconds == [round(first[1], 5)] and entry.warmup == 1
    )  # the image after the load is left out
    assert entry.seconds_per_image(2) == pytest.approx(first[1], rel=1e-3) and entry.load_seconds > 0
    cost = _json(["explain", "a cat", "--generator", "sd", "--models", models, "--device", "cpu"])["costs"][
        "sd"
    ]
    assert cost["kind"] == "measured" and cost["seconds"] == pytest.approx(first[1], rel=1e-3)

    second = run("o2")  # the next run's times join the history; the median is the cost
    entry = lookup(gen, cpu_device())
    assert entry is not None and entry.image_seconds == [round(first[1], 5), round(second[1], 5)]
    assert entry.seconds_per_image(2) == pytest.approx((first[1] + second[1]) / 2, rel=1e-3)


def test_a_scorer_failing_mid_run_loses_nothing(
    setup: dict[str, Path], tiny_clip_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scorer fails at the second image (as a GPU running out of memory would; it cannot here, so the real
    scorer's score() is made to raise): the run goes on, ends with one line and exit 1, and the command that
    line gives scores the rest."""
    import shlex

    from catimg.calibration.scorer import CLIPFamilyScorer

    s = setup
    out = s["root"] / "out"
    real = CLIPFamilyScorer.score
    calls: list[int] = []

    def flaky(self: Any, images: Any, prompts: Any) -> list[float]:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB")
        return real(self, images, prompts)

    monkeypatch.setattr(CLIPFamilyScorer, "score", flaky)
    code, _, err = run_cli(
        "gen",
        *PROMPTS,
        "--generator",
        "fast",
        "--models",
        s["models"],
        "--out",
        out,
        "--device",
        "cpu",
        "--score",
        "--db",
        s["db"],
        "--scorer-model",
        tiny_clip_dir,
    )
    assert code == 1
    line = err.strip()
    assert "\n" not in line and "scoring stopped after 1 image(s) (RuntimeError: CUDA out of memory" in line
    assert "2 image(s) made since are kept in" in line
    assert len(list(out.glob("*.png"))) == 3 and len((out / "manifest.jsonl").read_text().splitlines()) == 3
    assert len(_gen_rows(s["db"])) == 1
    monkeypatch.setattr(CLIPFamilyScorer, "score", real)
    again = shlex.split(line.split("score them with: ", 1)[1])
    assert again[0] == "catimg" and "--resume" in again
    code, _, err = run_cli(*again[1:])
    assert code == 0, err
    assert {m.prompt for m in _gen_rows(s["db"])} == set(PROMPTS) and len(list(out.glob("*.png"))) == 3


def test_scoring_options_without_score_are_a_usage_mistake(setup: dict[str, Path]) -> None:
    s = setup
    code, _, err = run_cli(
        "gen",
        "a red cube",
        "--models",
        s["models"],
        "--out",
        s["root"] / "out",
        "--db",
        s["db"],
        "--metric",
        "pickscore",
    )
    assert (
        code == 2 and err.count("\n") == 1 and "--metric, --db are for scoring the images; add --score" in err
    )
    assert not (s["root"] / "out").exists() and not s["db"].exists()
