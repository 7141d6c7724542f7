"""Loading pipelines: Hub ids from the (fake) cache, local folders, fail-fast on missing weights, sharing."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny import generator

from catimg import pipelines
from catimg.device import cpu_device
from catimg.errors import ConfigError, WeightsMissingError


def test_missing_hub_weights_fail_fast_with_fetch_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    g = generator("turbo", "stabilityai/sdxl-turbo")
    assert not pipelines.weights_available(g)
    tried: list[
        object
    ] = []  # fail fast = before any connection and before diffusers is asked to load anything
    monkeypatch.setattr(socket.socket, "connect", lambda self, addr: tried.append(addr))
    monkeypatch.setattr(pipelines, "quiet_hf", lambda: tried.append("diffusers"))
    with pytest.raises(WeightsMissingError) as err:
        pipelines.load_pipeline(g, cpu_device())
    assert tried == []
    msg = str(err.value)
    assert (
        '"turbo"' in msg and "stabilityai/sdxl-turbo" in msg and "hf download stabilityai/sdxl-turbo" in msg
    )
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
        pipelines.check_weights(generator("x", tmp_path / "x"))
    with pytest.raises(WeightsMissingError, match="does not exist"):
        pipelines.check_weights(generator("y", tmp_path / "nope"))


def test_hub_id_loads_offline_from_cache(fake_hub: dict[str, Path]) -> None:
    g = generator("turbo", "stabilityai/sdxl-turbo", family="sdxl-turbo")
    assert pipelines.weights_available(g)
    pipe = pipelines.load_pipeline(g, cpu_device())
    assert type(pipe).__name__ == "StableDiffusionXLPipeline"
    assert str(pipe.unet.dtype) == "torch.float32"
    assert pipelines.PipelineCache(cpu_device()).get(g).dtype == "fp32"


def test_step_variants_share_one_load(tiny_sd_dir: Path) -> None:
    cache = pipelines.PipelineCache(cpu_device())
    a = cache.get(generator("sd@2", tiny_sd_dir, 2, model="sd"))
    b = cache.get(generator("sd@4", tiny_sd_dir, 4, model="sd"))
    assert a is b and cache.loads == ["sd"]
    assert cache.holds("sd") and cache.peek(generator("sd@9", tiny_sd_dir, 9, model="sd")) is a
    cache.release_all()
    assert cache.pipes == {} and cache.releases == ["sd"]


def test_scheduler_by_name(tiny_sd_dir: Path) -> None:
    bad = generator("sd", tiny_sd_dir, scheduler="EulerDiscreteSchedular")
    with pytest.raises(ConfigError, match='did you mean "EulerDiscreteScheduler"'):
        pipelines.check_scheduler(bad)
    loaded = pipelines.PipelineCache(cpu_device()).get(generator("sd", tiny_sd_dir))
    euler = generator("sd", tiny_sd_dir, scheduler="EulerDiscreteScheduler")
    assert loaded.use_scheduler(euler) == "EulerDiscreteScheduler" == loaded.scheduler_name(euler)
    assert type(loaded.pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    assert (
        loaded.use_scheduler(generator("sd", tiny_sd_dir)) == "DDIMScheduler"
    )  # the pipeline's own, back again
    assert type(loaded.pipe.scheduler).__name__ == "DDIMScheduler"
    assert not any(
        name.startswith("_catimg") for name in vars(loaded.pipe)
    )  # nothing stuck on diffusers' object


def test_dtype_by_device_unless_set(tiny_sd_dir: Path) -> None:
    cpu = cpu_device()
    assert pipelines.resolve_dtype(generator("a", tiny_sd_dir), cpu) == "fp32"
    assert pipelines.resolve_dtype(generator("a", tiny_sd_dir, dtype="bf16"), cpu) == "bf16"
    assert pipelines.resolve_dtype(generator("a", tiny_sd_dir, dtype="bf16"), cpu, "fp32") == "fp32"


def test_safety_checker_off_by_default(tiny_sd_dir: Path) -> None:
    kw = pipelines._load_kwargs(tiny_sd_dir, generator("a", tiny_sd_dir), "fp32")
    assert kw["safety_checker"] is None and kw["requires_safety_checker"] is False
    kw = pipelines._load_kwargs(tiny_sd_dir, generator("a", tiny_sd_dir, safety_checker=True), "fp32")
    assert "safety_checker" not in kw


def test_downloads_allowed_but_hub_unreachable_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """--allow-download on an offline machine: one line after one short probe, not the Hub's retry loop."""
    import socket

    from catimg.errors import WeightsMissingError
    from catimg.pipelines import check_weights

    for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(k, raising=False)
    with socket.socket() as s:  # a local port that nothing listens on: connection refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    gen = generator("far", "org/not-cached")
    real_connect = socket.create_connection
    attempts: list[tuple[object, object]] = []

    def connect(
        address: tuple[str, int], timeout: float | None = None, *args: object, **kw: object
    ) -> socket.socket:
        attempts.append((address, timeout))
        return real_connect(address, timeout, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "create_connection", connect)
    with pytest.raises(WeightsMissingError, match=r'generator "far".*Hub is unreachable \(127\.0\.0\.1:\d+'):
        check_weights(gen, allow_download=True)
    assert attempts == [(("127.0.0.1", port), 1.0)]  # one short probe, no retry loop
    attempts.clear()
    with socket.socket() as srv:  # a Hub host that answers: the download is left to diffusers
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{srv.getsockname()[1]}")
        assert check_weights(gen, allow_download=True) is None
    assert len(attempts) == 1
