"""Loading pipelines: Hub ids from the (fake) cache, local folders, fail-fast on missing weights, sharing."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from catimg import pipelines
from catimg.config import Generator
from catimg.device import cpu_device
from catimg.errors import ConfigError, WeightsMissingError


def gen(name: str, source: str | Path, steps: int = 2, model: str | None = None, **kw: object) -> Generator:
    return Generator(name=name, model=model or name.split("@")[0], source=str(source), family=str(kw.pop("family", "sd1")),
                     steps=steps, guidance=2.0, width=64, height=64, **kw)  # type: ignore[arg-type]


def test_missing_hub_weights_fail_fast_with_fetch_hint() -> None:
    g = gen("turbo", "stabilityai/sdxl-turbo")
    assert not pipelines.weights_available(g)
    t0 = time.perf_counter()
    with pytest.raises(WeightsMissingError) as err:
        pipelines.load_pipeline(g, cpu_device())
    assert time.perf_counter() - t0 < 1.0
    msg = str(err.value)
    assert '"turbo"' in msg and "stabilityai/sdxl-turbo" in msg and "hf download stabilityai/sdxl-turbo" in msg
    assert "\n" not in msg


def test_download_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not pipelines.downloads_allowed()
    assert pipelines.downloads_allowed(True)
    monkeypatch.setenv("CATIMG_ALLOW_DOWNLOAD", "1")
    assert pipelines.downloads_allowed()
    # what check_weights then does with an absent model depends on the Hub answering: see the test below


def test_local_folder_that_is_not_a_pipeline(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    with pytest.raises(ConfigError, match="not a diffusers pipeline"):
        pipelines.check_weights(gen("x", tmp_path / "x"))
    with pytest.raises(WeightsMissingError, match="does not exist"):
        pipelines.check_weights(gen("y", tmp_path / "nope"))


def test_hub_id_loads_offline_from_cache(fake_hub: dict[str, Path]) -> None:
    g = gen("turbo", "stabilityai/sdxl-turbo", family="sdxl-turbo")
    assert pipelines.weights_available(g)
    pipe = pipelines.load_pipeline(g, cpu_device())
    assert type(pipe).__name__ == "StableDiffusionXLPipeline"
    assert pipe._catimg_dtype == "fp32"


def test_step_variants_share_one_load(tiny_sd_dir: Path) -> None:
    cache = pipelines.PipelineCache(cpu_device())
    a = cache.get(gen("sd@2", tiny_sd_dir, 2, model="sd"))
    b = cache.get(gen("sd@4", tiny_sd_dir, 4, model="sd"))
    assert a is b and cache.loads == ["sd"]
    cache.release_all()
    assert cache.pipes == {} and cache.releases == ["sd"]


def test_scheduler_by_name(tiny_sd_dir: Path) -> None:
    bad = gen("sd", tiny_sd_dir, scheduler="EulerDiscreteSchedular")
    with pytest.raises(ConfigError, match='did you mean "EulerDiscreteScheduler"'):
        pipelines.check_scheduler(bad)
    pipe = pipelines.load_pipeline(gen("sd", tiny_sd_dir), cpu_device())
    assert pipelines.apply_scheduler(pipe, gen("sd", tiny_sd_dir, scheduler="EulerDiscreteScheduler")) == "EulerDiscreteScheduler"
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    assert pipelines.apply_scheduler(pipe, gen("sd", tiny_sd_dir)) == "DDIMScheduler"


def test_dtype_by_device_unless_set(tiny_sd_dir: Path) -> None:
    cpu = cpu_device()
    assert pipelines.resolve_dtype(gen("a", tiny_sd_dir), cpu) == "fp32"
    assert pipelines.resolve_dtype(gen("a", tiny_sd_dir, dtype="bf16"), cpu) == "bf16"
    assert pipelines.resolve_dtype(gen("a", tiny_sd_dir, dtype="bf16"), cpu, "fp32") == "fp32"


def test_safety_checker_off_by_default(tiny_sd_dir: Path) -> None:
    kw = pipelines._load_kwargs(tiny_sd_dir, gen("a", tiny_sd_dir), "fp32")
    assert kw["safety_checker"] is None and kw["requires_safety_checker"] is False
    kw = pipelines._load_kwargs(tiny_sd_dir, gen("a", tiny_sd_dir, safety_checker=True), "fp32")
    assert "safety_checker" not in kw


def test_downloads_allowed_but_hub_unreachable_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """--allow-download on an offline machine: one line within about a second, not the Hub's retry loop."""
    import socket
    import time

    from catimg.config import Generator
    from catimg.errors import WeightsMissingError
    from catimg.pipelines import check_weights

    for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(k, raising=False)
    with socket.socket() as s:  # a local port that nothing listens on: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    gen = Generator(name="far", model="far", source="org/not-cached", family="sd1", steps=2, guidance=2.0,
                    width=64, height=64)
    t = time.monotonic()
    with pytest.raises(WeightsMissingError, match=r'generator "far".*Hub is unreachable \(127\.0\.0\.1:\d+'):
        check_weights(gen, allow_download=True)
    assert time.monotonic() - t < 2.0
    with socket.socket() as srv:  # a Hub host that answers: the download is left to diffusers
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{srv.getsockname()[1]}")
        assert check_weights(gen, allow_download=True) is None
