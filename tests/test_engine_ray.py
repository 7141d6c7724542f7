"""The Ray engine on a small local Ray instance with tiny real pipelines.

Skipped when Ray is not installed (``pip install -e ".[dev,ray]"`` runs them); the no-Ray message is tested
without Ray in a subprocess where ``import ray`` fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tiny
from tiny import generator, run_options

from catimg.generation.events import Event, ImageDone, Replanned, RunStarted, WorkerLost, WorkersStarted
from catimg.generation.generate import PlanItem, build_plan, run_plan
from catimg.generation.output import read_manifest

ROOT = Path(__file__).resolve().parents[1]
try:
    import ray  # noqa: F401

    HAVE_RAY = True
except ImportError:  # pragma: no cover - CI without the extra
    HAVE_RAY = False
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason='Ray is not installed (pip install -e ".[ray]")')

# Timings and worker ids differ between engines; everything else in a manifest line must match.
VOLATILE = {"measured_seconds", "time", "worker"}


def two_generator_plan(a: Path, b: Path, n: int = 12) -> list[PlanItem]:
    ga, gb = generator("tiny-a", a), generator("tiny-b", b, steps=3)
    routed = [
        (i, f"prompt number {i}", ga if i % 3 else gb, 0.5, 1.0 if i % 3 else 2.0, 0.1) for i in range(n)
    ]
    return build_plan(routed, seed=7)


def key(rec: dict[str, Any]) -> tuple[int, int]:
    return int(rec["index"]), int(rec["image"])


def pixels(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).copy()


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[Any]:
    if not HAVE_RAY:
        pytest.skip("Ray is not installed")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=40)
    yield ray
    ray.shutdown()


# ------------------------------------------------------------------------------------------------ no Ray


def test_engine_ray_without_ray_says_how_to_install(tmp_path: Path) -> None:
    # sys.modules["ray"] = None makes `import ray` fail, as if Ray were not installed
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['ray'] = None\n")
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for args in (
        ["gen", "a lighthouse at dusk", "--engine", "ray", "--out", str(tmp_path / "o")],
        ["calibrate", "--engine", "ray", "--db", str(tmp_path / "c.sqlite")],
    ):
        r = subprocess.run(
            [sys.executable, "-m", "catimg", *args], env=env, capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 5, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and 'pip install "catimg[ray]"' in lines[0]
        assert "Traceback" not in r.stderr


def test_unreachable_address_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from catimg.errors import DeviceError
    from catimg.generation import ray_engine as engine_ray
    from catimg.generation.ray_engine import check_address

    real_connect = socket.create_connection
    probes: list[tuple[object, object]] = []

    def connect(
        address: tuple[str, int], timeout: float | None = None, *args: object, **kw: object
    ) -> socket.socket:
        probes.append((address, timeout))
        return real_connect(address, timeout, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(engine_ray.socket, "create_connection", connect)
    with pytest.raises(DeviceError, match="--ray-address 127.0.0.1:1: cannot reach"):
        check_address("127.0.0.1:1", timeout=2.0)
    assert probes == [(("127.0.0.1", 1), 2.0)]  # one probe, bounded by the caller's timeout
    # something listens but never answers like a Ray head (asking it needs Ray's own client)
    import socket

    if not HAVE_RAY:
        return
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        with pytest.raises(DeviceError, match="not a Ray cluster's head"):
            check_address(f"127.0.0.1:{port}", timeout=1.0)
    assert probes[1:] == [(("127.0.0.1", port), 1.0)]


def test_cluster_without_resources_is_one_line() -> None:
    from catimg.errors import DeviceError
    from catimg.generation.ray_engine import cluster_workers

    assert cluster_workers({"CPU": 2.0}, None, None, 1.0) == (2, 1.0, 0.0)
    assert cluster_workers({"CPU": 16.0, "GPU": 4.0}, None, None, 1.0) == (4, 1.0, 1.0)
    with pytest.raises(DeviceError, match="no resources for any generator"):
        cluster_workers({"CPU": 0.5, "memory": 1e9}, None, None, 1.0)
    with pytest.raises(DeviceError, match="has no GPU"):
        cluster_workers({"CPU": 8.0}, "cuda", None, 1.0)


# ------------------------------------------------------------------------------------------------ with Ray


@needs_ray
def test_same_images_and_manifest_as_local_each_once(
    ray_instance: Any, tmp_path: Path, tiny_sd_dir: Path, tiny_sd2_dir: Path
) -> None:
    from catimg.generation.ray_engine import RayRun, run_plan_ray

    plan = two_generator_plan(tiny_sd_dir, tiny_sd2_dir)
    local = run_plan(plan, run_options(tmp_path / "local", batch_size=2))
    stats = RayRun()
    events: list[Event] = []
    # loads predicted dear (100 s): a worker whose queue empties does not steal the other model's last chunks
    res = run_plan_ray(
        plan,
        run_options(tmp_path / "ray", batch_size=2),
        events.append,
        workers=2,
        load_seconds={"tiny-a": 100.0, "tiny-b": 100.0},
        stats=stats,
    )
    assert len(res.made) == len(plan) == len(local.made)
    assert len(stats.workers) == 2
    lm = {key(r): r for r in read_manifest(tmp_path / "local")}
    rm = read_manifest(tmp_path / "ray")
    assert len(rm) == len(plan) and len({key(r) for r in rm}) == len(plan)  # each image exactly once
    for r in rm:
        assert r["worker"].startswith("ray-")
        a = {k: v for k, v in lm[key(r)].items() if k not in VOLATILE}
        b = {k: v for k, v in r.items() if k not in VOLATILE}
        assert a == b
        assert np.array_equal(pixels(tmp_path / "local" / r["file"]), pixels(tmp_path / "ray" / r["file"]))
    assert sorted(p.name for p in (tmp_path / "ray").glob("*.png")) == sorted(r["file"] for r in rm)
    assert sum(isinstance(e, ImageDone) for e in events) == len(plan)
    # two models, two actors: each loads its own model once (cost-proportional, no switch dearer than it
    # saves)
    assert sorted(res.loads) == ["tiny-a", "tiny-b"]
    # --resume reads either engine's manifest: nothing left to do in either folder
    for folder in ("local", "ray"):
        again = run_plan_ray(plan, run_options(tmp_path / folder, batch_size=2, resume=True), workers=2)
        assert again.skipped == len(plan) and not again.records


def png_text(path: Path) -> dict[str, Any]:
    """A PNG's catimg metadata chunks, less the measured time (which differs between any two runs)."""
    from PIL import Image

    with Image.open(path) as im:
        text = dict(im.text)
    whole = json.loads(text.pop("catimg"))
    whole.pop("measured_seconds")
    return {
        "chunks": [k for k in text if k != "catimg:measured_seconds"],
        "record": whole,
        **{k: v for k, v in text.items() if k != "catimg:measured_seconds"},
    }


@needs_ray
def test_both_engines_same_records_and_pixels_with_faults(
    ray_instance: Any, tmp_path: Path, tiny_sd_dir: Path, tiny_sd2_dir: Path
) -> None:
    """One plan with every status through both engines: the same manifest records, field by field (timing and
    the Ray worker's name aside), the same pixels and the same PNG metadata."""
    from dataclasses import replace

    from catimg.generation.ray_engine import run_plan_ray

    ok, euler = (
        generator("tiny-a", tiny_sd_dir),
        generator("tiny-a@3", tiny_sd_dir, 3, "tiny-a", scheduler="EulerDiscreteScheduler"),
    )
    odd = replace(generator("odd", tiny_sd2_dir), width=60)  # not a multiple of 8: the pipeline raises
    routed = [(i, f"a {tiny.WORDS[i]} on a table", (odd, ok, euler)[i % 3], 0.5, 1.0, 0.2) for i in range(6)]
    plan = build_plan(routed, seed=11, images_per_prompt=1, negative="blurry", fallbacks={0: (ok,)})
    local = run_plan(plan, run_options(tmp_path / "local", batch_size=2, base_seed=11, images_per_prompt=1))
    ray_res = run_plan_ray(
        plan, run_options(tmp_path / "ray", batch_size=2, base_seed=11, images_per_prompt=1), workers=1
    )
    lm = {key(r): r for r in read_manifest(tmp_path / "local")}
    rm = {key(r): r for r in read_manifest(tmp_path / "ray")}
    assert {r["status"] for r in lm.values()} == {"ok", "fallback", "failed"}  # index 0 fell back, 3 failed
    assert lm[(3, 0)]["error"].startswith("ValueError") and lm[(3, 0)]["attempts"] == 2
    assert sorted(lm) == sorted(rm) == [(i, 0) for i in range(6)]
    for k, a in lm.items():
        b = rm[k]
        assert set(b) == set(a) | {"worker"}
        assert {f: v for f, v in a.items() if f not in VOLATILE} == {
            f: v for f, v in b.items() if f not in VOLATILE
        }
        if a["file"] is not None:
            assert np.array_equal(
                pixels(tmp_path / "local" / a["file"]), pixels(tmp_path / "ray" / b["file"])
            )
            assert png_text(tmp_path / "local" / a["file"]) == png_text(tmp_path / "ray" / b["file"])
    assert lm[(2, 0)]["scheduler"] == "EulerDiscreteScheduler" and lm[(1, 0)]["scheduler"] == "DDIMScheduler"
    assert [r.status for r in sorted(ray_res.records, key=lambda r: r.item.index)] == [
        r.status for r in sorted(local.records, key=lambda r: r.item.index)
    ]


@needs_ray
def test_png_bytes_returned_when_workers_do_not_share_the_folder(
    ray_instance: Any, tmp_path: Path, tiny_sd_dir: Path, tiny_sd2_dir: Path
) -> None:
    from catimg.generation.ray_engine import run_plan_ray

    plan = two_generator_plan(tiny_sd_dir, tiny_sd2_dir, n=4)
    res = run_plan_ray(
        plan, run_options(tmp_path / "o", batch_size=2), workers=1, shared_output=False, threads=1
    )
    assert len(res.made) == 4
    assert len(list((tmp_path / "o").glob("*.png"))) == 4
    assert not list((tmp_path / "o").glob(".catimg-ray-*"))


@needs_ray
def test_worker_killed_mid_run_each_image_once(
    ray_instance: Any, tmp_path: Path, tiny_sd_dir: Path, tiny_sd2_dir: Path
) -> None:
    from catimg.generation.ray_engine import RayRun, run_plan_ray

    plan = two_generator_plan(tiny_sd_dir, tiny_sd2_dir, n=8)
    stats = RayRun()
    pids: list[int] = []
    killed: list[int] = []

    def on_event(event: Event) -> None:
        if isinstance(event, WorkersStarted):
            pids.extend(w.pid for w in event.workers)
        elif isinstance(event, ImageDone) and not killed:
            killed.append(pids[0])
            os.kill(pids[0], signal.SIGKILL)  # a real kill -9 of a worker process, mid-run

    res = run_plan_ray(
        plan,
        run_options(tmp_path / "o", batch_size=1),
        on_event,
        workers=2,
        chunk_size=4,
        threads=1,
        stats=stats,
    )
    assert killed and stats.lost_workers == 1 and stats.requeued >= 1
    rm = read_manifest(tmp_path / "o")
    assert sorted(key(r) for r in rm) == sorted((it.index, it.image) for it in plan)
    assert all(r["status"] == "ok" for r in rm)
    assert len(res.made) == len(plan)
    assert len(list((tmp_path / "o").glob("*.png"))) >= len(plan)


@needs_ray
def test_generator_failing_to_load_is_replanned(ray_instance: Any, tmp_path: Path, tiny_sd_dir: Path) -> None:
    from catimg.generation.ray_engine import RayRun, run_plan_ray

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    good, bad = generator("good", tiny_sd_dir), generator("bad", broken)
    routed = [(i, f"p {i}", bad if i < 3 or i == 4 else good, None, 1.0, None) for i in range(5)]
    plan = build_plan(routed, seed=1, fallbacks={i: (good,) for i in range(3)})  # p 4 has no fallback
    stats = RayRun()
    events: list[Event] = []
    res = run_plan_ray(
        plan, run_options(tmp_path / "o", batch_size=2), events.append, workers=1, threads=1, stats=stats
    )
    assert "bad" in stats.replanned
    assert any(isinstance(e, Replanned) and e.model == "bad" for e in events)
    rm = read_manifest(tmp_path / "o")
    assert len(rm) == 5 and {r["generator"] for r in rm if r["index"] != 4} == {"good"}
    assert all("re-planned from bad" in r["note"] for r in rm if r["index"] < 3)
    assert len(res.made) == 4
    # the image with nowhere to go is one failed record, with the fields of every other record (the device it
    # would have run on: dtype and device were None before)
    failed = next(r for r in rm if r["index"] == 4)
    made = next(r for r in rm if r["index"] == 3)
    assert failed["status"] == "failed" and failed["file"] is None and "could not load" in failed["error"]
    assert set(failed) == set(made) | {"error"}
    assert failed["dtype"] == made["dtype"] == "fp32" and failed["device"] == made["device"] == "cpu"
    assert failed["device_name"] == made["device_name"]
    assert failed["settings_hash"] == bad.settings_hash() and failed["worker"] == made["worker"]


# -------------------------------------------------------------------------------------------- through the CLI


@pytest.fixture(scope="module")
def cli_setup(
    tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path, tiny_sd2_dir: Path
) -> dict[str, Path]:
    """models.toml with two tiny local generators and a router trained on made-up measurements."""
    from typer.testing import CliRunner

    from catimg.cli import app

    root = tmp_path_factory.mktemp("raycli")
    models = root / "models.toml"
    models.write_text(
        f'[generators.a]\nsource = "{tiny_sd_dir}"\nsteps = 2\nguidance = 2.0\nwidth = 64\nheight = 64\n'
        f'[generators.b]\nsource = "{tiny_sd2_dir}"\nsteps = 2\nguidance = 2.0\nwidth = 64\nheight = 64\n'
    )
    m = tiny.write_measurements(root / "m.csv", {"a": (0.6, 0.3, 0.05), "b": (0.62, 0.8, 0.1)})
    prompts = root / "prompts.txt"
    prompts.write_text(
        "".join(f"a {tiny.WORDS[i % 12]} in the {tiny.WORDS[-(i % 12) - 1]} {i}\n" for i in range(16))
    )
    res = CliRunner().invoke(
        app, ["train", "--measurements", str(m), "--models", str(models), "--out", str(root / "router")]
    )
    if res.exit_code != 0:
        pytest.skip(f"catimg train not usable: {res.output[-300:]}")
    return {"models": models, "router": root / "router", "prompts": prompts}


def cli_args(s: dict[str, Path], out: Path, *extra: str) -> list[str]:
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
        "--seed",
        "3",
        "--budget",
        "max",
        "--batch-size",
        "1",
        *extra,
    ]


def _session_pids(sid: int) -> list[int]:
    """Processes of the session ``sid`` (the driver we started and the Ray processes it started)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:
            pids.append(int(d.name))
    return pids


@needs_ray
def test_gen_engine_ray_unreachable_address_is_one_line(tmp_path: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "catimg",
            "gen",
            "a lighthouse",
            "--out",
            str(tmp_path / "o"),
            "--engine",
            "ray",
            "--ray-address",
            "127.0.0.1:1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 5
    assert len(r.stderr.strip().splitlines()) == 1 and "--ray-address 127.0.0.1:1: cannot reach" in r.stderr
    assert "Traceback" not in r.stderr


@needs_ray
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the processes to clean up")
def test_driver_killed_then_resume_records_each_image_once(
    cli_setup: dict[str, Path], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from catimg.cli import app
    from catimg.generation.output import TEST_PAUSE_ENV

    out = tmp_path / "out"
    args = cli_args(cli_setup, out, "--engine", "ray", "--workers", "1")
    # test-only: the driver (the process that writes the manifest) pauses for good after its third record
    p = subprocess.Popen(
        [sys.executable, "-m", "catimg", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, TEST_PAUSE_ENV: "3"},
    )
    try:
        man, hang_guard = out / "manifest.jsonl", time.monotonic() + 600
        while p.poll() is None and not (man.exists() and len(man.read_bytes().splitlines()) >= 3):
            assert time.monotonic() < hang_guard, "no third record after 10 minutes"
            time.sleep(0.05)
        assert p.poll() is None, "the run ended instead of pausing after 3 images"
        os.kill(p.pid, signal.SIGKILL)  # kill -9 the driver
        p.wait()
    finally:
        for pid in _session_pids(p.pid):  # the local Ray instance that driver started
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    before = read_manifest(out)
    assert len(before) == 3
    # the worker may have saved a few more PNGs of its chunk before it was killed: --resume adopts them
    unrecorded = {p.name for p in out.glob("*.png")} - {r["file"] for r in before}
    res = CliRunner().invoke(app, cli_args(cli_setup, out, "--resume"))
    assert res.exit_code == 0, res.output
    assert f"{len(before) + len(unrecorded)} skipped" in res.output
    after = read_manifest(out)
    assert len(after) == 16 and len({key(r) for r in after}) == 16  # every image recorded exactly once
    assert after[: len(before)] == before  # nothing recorded was redone
    assert unrecorded <= {r["file"] for r in after}  # nothing saved was made again
    assert sorted(p.name for p in out.glob("*.png")) == sorted(r["file"] for r in after)  # no orphan, no twin


@needs_ray
def test_calibrate_on_ray_records_the_same_scores_as_local(
    ray_instance: Any, tmp_path: Path, tiny_sd_dir: Path, tiny_sd2_dir: Path, tiny_clip_dir: Path
) -> None:
    from typer.testing import CliRunner

    from catimg.calibration.store import Store
    from catimg.cli import app

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cube\na blue sphere on grass\ntwo cats\n", encoding="utf-8")
    models = tmp_path / "models.toml"
    models.write_text(
        "".join(
            f'[generators.{n}]\nsource = "{d}"\nsteps = 2\nguidance = 1.0\nwidth = 64\nheight = 64\n'
            f"cost_seconds = {c}\n"
            for n, d, c in (("fast", tiny_sd_dir, 0.05), ("slow", tiny_sd2_dir, 0.1))
        )
    )
    scores = {}
    for engine in ("local", "ray"):
        db = tmp_path / f"{engine}.sqlite"
        r = CliRunner().invoke(
            app,
            [
                "calibrate",
                "--prompts",
                str(prompts),
                "--models",
                str(models),
                "--db",
                str(db),
                "--scorer-model",
                str(tiny_clip_dir),
                "--out",
                str(tmp_path / f"img-{engine}"),
                "--device",
                "cpu",
                "--engine",
                engine,
                "--json",
            ],
        )
        assert r.exit_code == 0, r.output
        with Store.open(db) as st:
            scores[engine] = sorted(
                (m.prompt, m.generator, m.seed, m.score) for m in st.measurements("clipscore")
            )
    assert len(scores["local"]) == 6
    assert scores["ray"] == scores["local"]  # same pixels, so the same scores, each recorded once


@needs_ray
def test_no_resources_for_the_plan_is_one_line(
    ray_instance: Any, tmp_path: Path, tiny_sd_dir: Path, tiny_sd2_dir: Path
) -> None:
    from catimg.errors import DeviceError
    from catimg.generation.ray_engine import run_plan_ray

    plan = two_generator_plan(tiny_sd_dir, tiny_sd2_dir, n=2)
    with pytest.raises(DeviceError, match="no resources for any generator of the plan"):
        run_plan_ray(plan, run_options(tmp_path / "o"), cpus_per_worker=4.0)
    with pytest.raises(DeviceError, match="--workers 5: the Ray cluster has only 2 CPU"):
        run_plan_ray(plan, run_options(tmp_path / "o"), workers=5)
    with pytest.raises(DeviceError, match="--device cuda: the Ray cluster has no GPU"):
        run_plan_ray(plan, run_options(tmp_path / "o"), device="cuda")
    assert read_manifest(tmp_path / "o") == [] and not list((tmp_path / "o").iterdir())


def test_ray_only_events_are_said_in_one_line_each_and_all_events_reach_the_progress() -> None:
    from catimg.device import cpu_device
    from catimg.generation.ray_engine import WorkerInfo, cli_events

    cpu = cpu_device()
    workers = (
        WorkerInfo(label="ray-0", pid=1, host="node-a", device=cpu, shared=True, write_error=None),
        WorkerInfo(label="ray-1", pid=2, host="node-b", device=cpu, shared=False, write_error=None),
    )
    lines: list[str] = []
    seen: list[Event] = []
    handle = cli_events(seen.append, lines.append)
    events: list[Event] = [
        WorkersStarted(workers=workers),
        RunStarted(images=2),
        Replanned(model="bad", reason="no weights"),
        WorkerLost(worker="ray-1", images=3, error="x"),
    ]
    for e in events:
        handle(e)
    assert seen == events
    assert lines == [
        f"ray: 2 worker(s) on node-a ({cpu.name}), node-b ({cpu.name}); workers send PNGs to the driver",
        "note: bad failed to load on a Ray worker (no weights); its images are re-planned to the next "
        "cheaper generator each prompt allows",
        "ray: worker ray-1 died; 3 unfinished image(s) re-queued",
    ]
