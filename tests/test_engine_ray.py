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

from catimg.config import Generator
from catimg.device import cpu_device
from catimg.generate import PlanItem, RunOptions, build_plan, run_plan
from catimg.output import read_manifest

ROOT = Path(__file__).resolve().parents[1]
try:
    import ray  # noqa: F401

    HAVE_RAY = True
except ImportError:  # pragma: no cover - CI without the extra
    HAVE_RAY = False
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason='Ray is not installed (pip install -e ".[ray]")')

# Timings and worker ids differ between engines; everything else in a manifest line must match.
VOLATILE = {"measured_seconds", "time", "worker"}


def gen(name: str, source: Path, steps: int = 2, model: str | None = None) -> Generator:
    return Generator(name=name, model=model or name.split("@")[0], source=str(source), family="sd1", steps=steps,
                     guidance=2.0, width=64, height=64)  # type: ignore[call-arg]


def two_generator_plan(a: Path, b: Path, n: int = 12) -> list[PlanItem]:
    ga, gb = gen("tiny-a", a), gen("tiny-b", b, steps=3)
    routed = [(i, f"prompt number {i}", ga if i % 3 else gb, 0.5, 1.0 if i % 3 else 2.0, 0.1) for i in range(n)]
    return build_plan(routed, seed=7)


def opts(out: Path, **kw: Any) -> RunOptions:
    return RunOptions(out_dir=out, device=cpu_device(), base_seed=7, budget="test", **kw)


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

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


# ------------------------------------------------------------------------------------------------ no Ray


def test_engine_ray_without_ray_says_how_to_install(tmp_path: Path) -> None:
    # sys.modules["ray"] = None makes `import ray` fail, as if Ray were not installed
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['ray'] = None\n")
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    code = (
        "import sys\n"
        "from catimg.engine_ray import import_ray\n"
        "from catimg.errors import CatimgError\n"
        "try:\n    import_ray()\nexcept CatimgError as e:\n    print(e.args[0]); sys.exit(e.exit_code)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 5
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1 and 'pip install "catimg[ray]"' in lines[0]


def test_unreachable_address_fails_fast() -> None:
    from catimg.engine_ray import check_address
    from catimg.errors import DeviceError

    t0 = time.perf_counter()
    with pytest.raises(DeviceError, match="--ray-address 127.0.0.1:1: cannot reach"):
        check_address("127.0.0.1:1", timeout=2.0)
    # something listens but never answers like a Ray head
    import socket

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        with pytest.raises(DeviceError, match="not a Ray cluster's head"):
            check_address(f"127.0.0.1:{port}", timeout=1.0)
    assert time.perf_counter() - t0 < 10


def test_cluster_without_resources_is_one_line() -> None:
    from catimg.engine_ray import cluster_workers
    from catimg.errors import DeviceError

    assert cluster_workers({"CPU": 2.0}, None, None, 1.0) == (2, 1.0, 0.0)
    assert cluster_workers({"CPU": 16.0, "GPU": 4.0}, None, None, 1.0) == (4, 1.0, 1.0)
    with pytest.raises(DeviceError, match="no resources for any generator"):
        cluster_workers({"CPU": 0.5, "memory": 1e9}, None, None, 1.0)
    with pytest.raises(DeviceError, match="has no GPU"):
        cluster_workers({"CPU": 8.0}, "cuda", None, 1.0)


# ------------------------------------------------------------------------------------------------ with Ray


@needs_ray
def test_same_images_and_manifest_as_local_each_once(ray_instance: Any, tmp_path: Path, tiny_sd_dir: Path,
                                                      tiny_sd2_dir: Path) -> None:
    from catimg.engine_ray import RayRun, run_plan_ray

    plan = two_generator_plan(tiny_sd_dir, tiny_sd2_dir)
    local = run_plan(plan, opts(tmp_path / "local", batch_size=2))
    stats = RayRun()
    events: list[str] = []
    res = run_plan_ray(plan, opts(tmp_path / "ray", batch_size=2), lambda k, d: events.append(k), workers=2,
                       stats=stats)
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
    assert events.count("image") == len(plan)
    # two models, two actors: each loads its own model once (cost-proportional, no needless switches)
    assert sorted(res.loads) == ["tiny-a", "tiny-b"]


@needs_ray
def test_png_bytes_returned_when_workers_do_not_share_the_folder(ray_instance: Any, tmp_path: Path,
                                                                  tiny_sd_dir: Path, tiny_sd2_dir: Path) -> None:
    from catimg.engine_ray import run_plan_ray

    plan = two_generator_plan(tiny_sd_dir, tiny_sd2_dir, n=4)
    res = run_plan_ray(plan, opts(tmp_path / "o", batch_size=2), workers=1, shared_output=False)
    assert len(res.made) == 4
    assert len(list((tmp_path / "o").glob("*.png"))) == 4
    assert not list((tmp_path / "o").glob(".catimg-ray-*"))


@needs_ray
def test_worker_killed_mid_run_each_image_once(ray_instance: Any, tmp_path: Path, tiny_sd_dir: Path,
                                               tiny_sd2_dir: Path) -> None:
    from catimg.engine_ray import RayRun, run_plan_ray

    plan = two_generator_plan(tiny_sd_dir, tiny_sd2_dir, n=8)
    stats = RayRun()
    pids: list[int] = []
    killed: list[int] = []

    def on_event(kind: str, data: dict[str, Any]) -> None:
        if kind == "workers":
            pids.extend(int(w["pid"]) for w in data["workers"])
        elif kind == "image" and not killed:
            killed.append(pids[0])
            os.kill(pids[0], signal.SIGKILL)  # a real kill -9 of a worker process, mid-run

    res = run_plan_ray(plan, opts(tmp_path / "o", batch_size=1), on_event, workers=2, chunk_size=4, stats=stats)
    assert killed and stats.lost_workers == 1 and stats.requeued >= 1
    rm = read_manifest(tmp_path / "o")
    assert sorted(key(r) for r in rm) == sorted((it.index, it.image) for it in plan)
    assert all(r["status"] == "ok" for r in rm)
    assert len(res.made) == len(plan)
    assert len(list((tmp_path / "o").glob("*.png"))) >= len(plan)


@needs_ray
def test_generator_failing_to_load_is_replanned(ray_instance: Any, tmp_path: Path, tiny_sd_dir: Path) -> None:
    from catimg.engine_ray import RayRun, run_plan_ray

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    good, bad = gen("good", tiny_sd_dir), gen("bad", broken)
    routed = [(i, f"p {i}", bad if i < 3 else good, None, 1.0, None) for i in range(4)]
    plan = build_plan(routed, seed=1, fallbacks={i: (good,) for i in range(3)})
    stats = RayRun()
    events: list[tuple[str, dict[str, Any]]] = []
    res = run_plan_ray(plan, opts(tmp_path / "o", batch_size=2), lambda k, d: events.append((k, d)), workers=1,
                       stats=stats)
    assert "bad" in stats.replanned
    assert any(k == "replan" and d["model"] == "bad" for k, d in events)
    rm = read_manifest(tmp_path / "o")
    assert len(rm) == 4 and {r["generator"] for r in rm} == {"good"}
    assert all("re-planned from bad" in r["note"] for r in rm if r["index"] < 3)
    assert len(res.made) == 4
