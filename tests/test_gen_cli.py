"""`catimg gen` and `catimg inspect` through the real CLI (CliRunner on catimg.cli.app), tiny real
pipelines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tiny
from typer.testing import CliRunner

from catimg.cli import app
from catimg.errors import CatimgError, InputError

runner = CliRunner()


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path, tiny_sdxl_dir: Path
) -> dict[str, Path]:
    """models.toml (sd@2, sd@4 sharing weights from a folder; turbo from a Hub id) and a router trained on
    it."""
    root = tmp_path_factory.mktemp("gencli")
    hub, models = tiny.write_sd_turbo_catalog(root, tiny_sd_dir, tiny_sdxl_dir)
    m = tiny.write_measurements(
        root / "m.csv", {"sd@2": (0.6, 0.3, 0.05), "sd@4": (0.62, 0.5, 0.1), "turbo": (0.63, 0.8, 0.2)}
    )
    prompts = root / "prompts.txt"
    prompts.write_text(
        "# a comment\n" + "".join(f"a {tiny.WORDS[i]} in the {tiny.WORDS[-i - 1]}\n" for i in range(6))
    )
    res = runner.invoke(
        app, ["train", "--measurements", str(m), "--models", str(models), "--out", str(root / "router")]
    )
    if res.exit_code != 0:
        pytest.skip(f"catimg train not usable yet: {res.output[-300:]} {res.exception!r}")
    return {"root": root, "models": models, "router": root / "router", "prompts": prompts, "hub": hub}


def gen_args(s: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "gen",
        "-f",
        str(s["prompts"]),
        "--models",
        str(s["models"]),
        "--router",
        str(s["router"]),
        "--out",
        str(out),
        *extra,
    ]


def test_gen_file_end_to_end_then_inspect(
    setup: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(setup["hub"]))
    out = tmp_path / "out"
    res = runner.invoke(app, gen_args(setup, out, "--seed", "3", "--budget", "max", "--json"))
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)  # nothing but JSON
    assert doc["summary"]["made"] == 6 and doc["interrupted"] is False
    used = {i["generator"] for i in doc["images"]}
    models_used = {"sd" if g.startswith("sd@") else g for g in used}
    assert sorted(doc["summary"]["loads"]) == sorted(models_used)  # one load per distinct model
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 6 and len((out / "manifest.jsonl").read_text().splitlines()) == 6
    # metadata round trip through inspect
    ins = runner.invoke(app, ["inspect", str(pngs[0]), "--json"])
    meta = json.loads(ins.output)["images"][0]["catimg"]
    first = next(i for i in doc["images"] if Path(i["file"]).name == pngs[0].name)
    assert (
        meta["prompt"] == first["prompt"]
        and meta["seed"] == first["seed"]
        and meta["generator"] == first["generator"]
    )
    assert (
        meta["budget"] == "max"
        and meta["router_version"] is not None
        and meta["predicted_quality"] is not None
    )
    text = runner.invoke(app, ["inspect", str(pngs[0])])
    assert text.exit_code == 0 and "prompt" in text.output and first["prompt"] in text.output
    # a second run into the same folder never overwrites, and --resume makes nothing new
    again = runner.invoke(app, gen_args(setup, out, "--seed", "3", "--budget", "max", "--resume"))
    assert again.exit_code == 0, again.output
    assert "6 skipped" in again.output and len(list(out.glob("*.png"))) == 6


def test_dry_run_loads_and_writes_nothing(
    setup: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(setup["hub"]))
    res = runner.invoke(app, gen_args(setup, tmp_path / "o", "--dry-run", "--seed", "1"))
    assert res.exit_code == 0, res.output
    assert "plan: 6 prompt(s), 6 image(s)" in res.output and "dry run" in res.output
    assert not (tmp_path / "o").exists()


def test_missing_weights_replan(setup: dict[str, Path], tmp_path: Path) -> None:
    # HF_HUB_CACHE is the empty per-test cache: turbo is absent, so the plan uses the folder generators only
    res = runner.invoke(app, gen_args(setup, tmp_path / "o", "--dry-run", "--budget", "max", "--seed", "1"))
    assert res.exit_code == 0, res.output
    assert (
        "weights not found for turbo; re-planned" in res.output
        and "hf download stabilityai/sdxl-turbo" in res.output
    )
    forced = runner.invoke(app, gen_args(setup, tmp_path / "o", "--dry-run", "--generator", "turbo"))
    assert isinstance(forced.exception, CatimgError) and "hf download stabilityai/sdxl-turbo" in str(
        forced.exception
    )


def test_stop_for_missing_weights_leaves_no_empty_out_folder(setup: dict[str, Path], tmp_path: Path) -> None:
    # HF_HUB_CACHE is the empty per-test cache: forcing turbo stops (exit 6) before any image is made
    out = tmp_path / "new" / "o"
    res = runner.invoke(app, gen_args(setup, out, "--generator", "turbo", "--seed", "1"))
    assert isinstance(res.exception, CatimgError) and res.exception.exit_code == 6
    assert "hf download stabilityai/sdxl-turbo" in str(res.exception)
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"  # a folder that was there before the run stays, even empty
    kept.mkdir()
    res = runner.invoke(app, gen_args(setup, kept, "--generator", "turbo", "--seed", "1"))
    assert isinstance(res.exception, CatimgError) and kept.is_dir()


def test_forced_generator_that_does_not_exist(setup: dict[str, Path], tmp_path: Path) -> None:
    res = runner.invoke(app, gen_args(setup, tmp_path / "o", "--dry-run", "--generator", "turb"))
    assert isinstance(res.exception, CatimgError) and 'did you mean "turbo"' in str(res.exception)


def test_corrupt_manifest_is_reported_at_once_and_resume_loses_no_work(
    setup: dict[str, Path], tmp_path: Path
) -> None:
    """Every bad line in one message; --resume sets them aside, adopts the PNG whose record was cut short (no
    -2 twin) and the PNG that has no record, and removes the .tmp file of a killed process, saying so."""
    from catimg.generation.output import MANIFEST, read_manifest

    out = tmp_path / "o"
    args = [
        "gen",
        "a red cube",
        "a blue ball",
        "a green tree",
        "--models",
        str(setup["models"]),
        "--router",
        str(setup["router"]),
        "--generator",
        "sd@2",
        "--seed",
        "4",
        "--out",
        str(out),
    ]
    assert runner.invoke(app, args).exit_code == 0
    man = out / MANIFEST
    lines = man.read_text().splitlines()
    assert len(lines) == 3
    # line 2 garbage, the third record's line lost (killed before it was written), a last line cut short
    man.write_text(lines[0] + "\nnot json\n" + lines[2][:40])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / f".0009-x-sd@2-1.png.{dead.pid}.tmp").write_bytes(b"half")
    with pytest.raises(InputError) as err:
        read_manifest(out)
    assert "lines 2, 3 are corrupt" in str(err.value) and "\n" not in str(err.value)
    res = runner.invoke(app, [*args, "--resume", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["summary"]["made"] == 0 and doc["summary"]["skipped"] == 3
    notes = " ".join(doc["notes"])
    assert "lines 2, 3 are corrupt" in notes and "set aside" in notes
    assert "recovered the record of 2 image(s) from their PNG metadata" in notes
    assert "removed 1 temporary file(s)" in notes
    assert (
        len(list(out.glob("*.png"))) == 3 and not list(out.glob("*-2.png")) and not list(out.glob(".*.tmp"))
    )
    assert len(read_manifest(out)) == 3 and (out / f"{MANIFEST}.corrupt").read_text().count("\n") == 2
    again = runner.invoke(app, [*args, "--resume"])  # repaired for good: nothing more to say or do
    assert again.exit_code == 0 and "note:" not in again.output and "3 skipped" in again.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--seed", "-1"], "--seed -1"),
        (["--width", "30"], "--width 30: must be a positive multiple of 8"),
        (["--images-per-prompt", "0"], "--images-per-prompt 0"),
        (["--negative-file", "/nonexistent/neg.txt"], "--negative-file /nonexistent/neg.txt: file not found"),
        (["--dtype", "fp17"], '--dtype "fp17"'),
    ],
)
def test_bad_input_is_one_line(args: list[str], needle: str, tmp_path: Path) -> None:
    res = runner.invoke(app, ["gen", "a cat", "--out", str(tmp_path / "o"), *args])
    assert isinstance(res.exception, InputError), res.output
    assert needle in str(res.exception) and "\n" not in str(res.exception)


def test_out_is_a_file_through_the_entry_point(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("")
    proc = subprocess.run(
        [sys.executable, "-m", "catimg", "gen", "a cat", "--out", str(f)],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=60,
    )
    assert proc.returncode != 0
    assert "is a file, not a folder" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_inspect_non_image(tmp_path: Path) -> None:
    p = tmp_path / "x.png"
    p.write_text("text")
    res = runner.invoke(app, ["inspect", str(p)])
    assert isinstance(res.exception, InputError) and "not an image" in str(res.exception)


def test_kill_9_loses_at_most_the_image_in_flight(setup: dict[str, Path], tmp_path: Path) -> None:
    """A `kill -9` of a local `catimg gen` mid-run: what is recorded is intact, `--resume` finishes the rest
    once.

    The run is killed at a known point: the test-only CATIMG_TEST_PAUSE_AFTER=3 stops it right after its third
    manifest record (no race between the kill and the run)."""
    import signal
    import time

    from PIL import Image

    from catimg.generation.output import TEST_PAUSE_ENV, read_manifest

    out = tmp_path / "out"
    args = gen_args(
        setup, out, "--seed", "5", "--budget", "max", "--images-per-prompt", "4", "--batch-size", "1"
    )
    env = dict(os.environ, HF_HUB_CACHE=str(setup["hub"]), OMP_NUM_THREADS="1", **{TEST_PAUSE_ENV: "3"})
    p = subprocess.Popen(
        [sys.executable, "-m", "catimg", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        man, hang_guard = out / "manifest.jsonl", time.monotonic() + 600
        while p.poll() is None and not (man.exists() and len(man.read_bytes().splitlines()) >= 3):
            assert time.monotonic() < hang_guard, "no third record after 10 minutes"
            time.sleep(0.02)  # the run pauses for good after its third record
        assert p.poll() is None, "the run ended instead of pausing after 3 images"
        p.send_signal(signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
    before = read_manifest(out)  # every recorded line parses: lines are written whole
    assert len(before) == 3
    for rec in before:  # every recorded image is a complete PNG
        with Image.open(out / rec["file"]) as im:
            im.verify()
    res = runner.invoke(app, [*args, "--resume"], env={"HF_HUB_CACHE": str(setup["hub"])})
    assert res.exit_code == 0, res.output
    after = read_manifest(out)
    assert after[: len(before)] == before  # nothing recorded was redone
    keys = {(r["index"], r.get("image", 0)) for r in after}
    assert len(after) == 24 and len(keys) == 24
    assert sorted(p.name for p in out.glob("*.png")) == sorted(
        r["file"] for r in after
    )  # no orphan, none twice


# ------------------------------------------------------------------------------ issue 10: a user's first hour


def test_forced_generator_needs_no_router_for_it(
    setup: dict[str, Path], tmp_path: Path, tiny_sd_dir: Path
) -> None:
    """--generator with a catalog no router knows (the bundled one, or one trained under other settings)."""
    own = tmp_path / "my.toml"  # the name of the setup router's generator, other settings (width/height)
    own.write_text(
        f'[generators.sd]\nsource = "{tiny_sd_dir}"\nsteps = 2\nguidance = 2.0\nwidth = 32\nheight = 32\n'
    )
    for router in ([], ["--router", str(setup["router"])]):
        routed = runner.invoke(app, ["explain", "a cat", "--models", str(own), *router])
        assert (
            isinstance(routed.exception, CatimgError) and routed.exception.exit_code == 3
        )  # routing needs one
        ex = runner.invoke(
            app, ["explain", "a cat", "--models", str(own), "--generator", "sd", "--json", *router]
        )
        assert ex.exit_code == 0, ex.output
        doc = json.loads(ex.output)
        assert doc["prompts"][0]["choice"] == "sd" and doc["statuses"]["sd"] == "forced"
        out = tmp_path / f"o{len(router)}"
        res = runner.invoke(
            app,
            [
                "gen",
                "a cat",
                "--models",
                str(own),
                "--generator",
                "sd",
                "--seed",
                "1",
                "--out",
                str(out),
                "--json",
                *router,
            ],
        )
        assert res.exit_code == 0, res.output
        made = json.loads(res.output)["images"]
        assert [i["status"] for i in made] == ["ok"] and Path(made[0]["file"]).is_file()
        text = runner.invoke(app, ["explain", "a cat", "--models", str(own), "--generator", "sd", *router])
        assert text.exit_code == 0 and "forced" in text.output


def test_resume_matches_images_by_what_they_are(setup: dict[str, Path], tmp_path: Path) -> None:
    """--resume after changing --seed, inserting a prompt, or changing -n: differences named, only the rest
    made."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red cube\na blue ball\n")
    out = tmp_path / "o"

    def run(*extra: str) -> dict:
        res = runner.invoke(
            app,
            [
                "gen",
                "-f",
                str(prompts),
                "--models",
                str(setup["models"]),
                "--router",
                str(setup["router"]),
                "--generator",
                "sd@2",
                "--out",
                str(out),
                "--json",
                *extra,
            ],
        )
        assert res.exit_code == 0, res.output
        return json.loads(res.output)["summary"]

    first = run("--seed", "7", "-n", "2")
    assert first["made"] == 4 and first["resume_differences"] == []
    same = run("--seed", "7", "-n", "2", "--resume")
    assert same["made"] == 0 and same["skipped"] == 4 and same["resume_differences"] == []
    other_seed = run("--seed", "99", "-n", "2", "--resume")  # other images: all made, and said why
    assert other_seed["made"] == 4 and other_seed["skipped"] == 0
    assert other_seed["resume_differences"] == ["--seed 99 (manifest: 7)"]
    prompts.write_text("a green tree\na red cube\na blue ball\n")  # a prompt inserted at the top
    inserted = run("--seed", "7", "-n", "2", "--resume")
    assert inserted["made"] == 2 and inserted["skipped"] == 4
    assert "1 prompt(s) not in the manifest" in inserted["resume_differences"]
    more = run("--seed", "7", "-n", "3", "--resume")  # one more image per prompt
    assert more["made"] == 3 and more["skipped"] == 6
    assert any(d.startswith("--images-per-prompt 3 (manifest: ") for d in more["resume_differences"])
    text = runner.invoke(
        app,
        [
            "gen",
            "-f",
            str(prompts),
            "--models",
            str(setup["models"]),
            "--router",
            str(setup["router"]),
            "--generator",
            "sd@2",
            "--out",
            str(out),
            "--seed",
            "7",
            "-n",
            "3",
            "--resume",
            "--width",
            "32",
            "--height",
            "32",
        ],
    )
    assert text.exit_code == 0, text.output
    line = next(ln for ln in text.output.splitlines() if ln.startswith("resume:"))
    assert "0 image(s) already done, 9 to make" in line and "size 32x32 (manifest: 64x64)" in line


def test_second_run_into_a_busy_folder_is_refused_and_a_dead_runs_lock_taken_over(
    setup: dict[str, Path], tmp_path: Path
) -> None:
    """Two runs into one folder: the second is refused, naming the live one; after a kill -9 the lock is taken
    over."""
    import signal
    import time

    from catimg.generation.output import LOCK, TEST_PAUSE_ENV, read_manifest

    out = tmp_path / "out"
    args = [
        "gen",
        "a red cube",
        "a blue ball",
        "a green tree",
        "--models",
        str(setup["models"]),
        "--router",
        str(setup["router"]),
        "--generator",
        "sd@2",
        "--seed",
        "2",
        "--out",
        str(out),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", **{TEST_PAUSE_ENV: "1"})
    p = subprocess.Popen(
        [sys.executable, "-m", "catimg", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        man, hang_guard = out / "manifest.jsonl", time.monotonic() + 600
        while p.poll() is None and not (man.exists() and man.read_bytes().count(b"\n") >= 1):
            assert time.monotonic() < hang_guard, "no first record after 10 minutes"
            time.sleep(0.02)  # the run pauses for good (holding the folder) after its first record
        assert p.poll() is None, "the run ended instead of pausing after its first image"
        busy = runner.invoke(app, args)
        assert isinstance(busy.exception, InputError), busy.output
        msg = str(busy.exception)
        assert f"another catimg run (PID {p.pid}: " in msg and "catimg" in msg.split(f"PID {p.pid}:")[1]
        assert (
            len(read_manifest(out)) == 1 and len(list(out.glob("*.png"))) == 1
        )  # the second run made nothing
        p.send_signal(signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
    assert (out / LOCK).is_file()  # left behind by the killed run
    res = runner.invoke(app, [*args, "--resume"])
    assert res.exit_code == 0, res.output
    assert f"took over the lock of a run that is no longer running (PID {p.pid})" in res.output
    assert len(read_manifest(out)) == 3 and len(list(out.glob("*.png"))) == 3 and not (out / LOCK).exists()
