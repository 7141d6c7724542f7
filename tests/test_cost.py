"""Cost model: precedence explicit > measured > estimated, memory feasibility, bad input, and estimated vs
measured."""

from __future__ import annotations

from pathlib import Path

import pytest

from catimg.config import parse_catalog
from catimg.costs.bench import measure
from catimg.costs.model import DEVICE_THROUGHPUT, catalog_costs, device_throughput, generator_cost
from catimg.device import DeviceInfo, detect_device
from catimg.errors import ConfigError

CPU = detect_device("cpu")


def gpu(name: str, gb: float) -> DeviceInfo:
    return DeviceInfo("cuda", 0, name, gb, gb * 0.97, (8, 9), True, "cuda:0")


HUB = """
[generators.sdxl]
source = "stabilityai/stable-diffusion-xl-base-1.0"
steps = [10, 50]
[generators.turbo]
source = "stabilityai/sdxl-turbo"
steps = 1
guidance = 0
width = 512
height = 512
[generators.pixart]
source = "PixArt-alpha/PixArt-XL-2-1024-MS"
steps = 20
guidance = 4.5
[generators.fixed]
source = "someone/secret-model"
steps = 30
cost_seconds = 4.0
cost_tflops = 90
"""


@pytest.fixture
def hub_catalog(tmp_path: Path):
    return parse_catalog(HUB, tmp_path / "models.toml")


def test_estimates_for_known_families_without_weights(hub_catalog) -> None:
    h100 = gpu("NVIDIA H100 80GB HBM3", 79.2)
    costs = catalog_costs(hub_catalog.generators, h100)
    s10, s50, turbo = costs["sdxl@10"], costs["sdxl@50"], costs["turbo"]
    assert s10.kind == s50.kind == turbo.kind == "estimated" and "H100" in s10.note
    # 40 more SDXL steps at 1024² with guidance: 40 × 13.5 TFLOPs
    assert s50.tflops - s10.tflops == pytest.approx(40 * 13.52, rel=0.01)
    assert turbo.seconds < s10.seconds < s50.seconds
    assert 1.0 < s50.seconds < 10.0  # SDXL, 50 steps, on an H100: a few seconds
    assert s10.load_seconds > 0 and s10.peak_memory_gb and 6 < s10.peak_memory_gb < 12
    assert all(c.feasible and not c.offload for c in costs.values())


def test_explicit_cost_wins_and_needs_no_flops(hub_catalog) -> None:
    c = generator_cost(hub_catalog.get("fixed"), CPU)
    assert (c.kind, c.seconds, c.tflops) == ("explicit", 4.0, 90.0)


def test_missing_flop_estimate_says_cost_must_be_given(tmp_path: Path) -> None:
    cat = parse_catalog('[generators.mystery]\nsource = "someone/mystery"\n', tmp_path / "models.toml")
    with pytest.raises(ConfigError, match=r"give cost_seconds .* for \[generators.mystery\]"):
        generator_cost(cat.get("mystery"), CPU)


@pytest.mark.parametrize("value", ["-1", "0", '"fast"'])
def test_non_positive_explicit_cost_is_rejected(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_catalog(f'[generators.x]\nsource = "a/b"\ncost_seconds = {value}\n', tmp_path / "models.toml")
    msg = str(err.value)
    assert "[generators.x]" in msg and "cost_seconds" in msg and "positive number" in msg and "\n" not in msg


def test_memory_offload_and_infeasible(hub_catalog) -> None:
    pixart = hub_catalog.get("pixart")  # T5-XXL + DiT: ~11 GB in fp16
    big = generator_cost(pixart, gpu("NVIDIA GeForce RTX 4090", 23.6))
    assert big.feasible and not big.offload
    mid = generator_cost(pixart, gpu("NVIDIA GeForce RTX 3060", 12.0))
    assert mid.feasible and mid.offload and mid.seconds > big.seconds
    assert "CPU offload" in mid.note and "GB" in mid.note
    small = generator_cost(pixart, gpu("NVIDIA GeForce RTX 3050", 6.0))
    assert not small.feasible and "cannot run here" in small.note


def test_throughput_table_matches_common_gpus() -> None:
    for name, label in [
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA A100-SXM4-40GB", "A100"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("NVIDIA GeForce RTX 3060", "RTX 3060"),
        ("Tesla T4", "T4"),
        ("Tesla V100-SXM2-16GB", "V100"),
        ("NVIDIA L40S", "L40S"),
    ]:
        assert device_throughput(gpu(name, 16)).label == label
    mps = DeviceInfo("mps", None, "Apple M2 Max", 32, None, None, False, "mps")
    assert device_throughput(mps).label == "Apple M-series Max"
    assert device_throughput(gpu("Some Future GPU", 16)).label == "unknown CUDA GPU"
    assert all(r.effective_tflops > 0 for r in DEVICE_THROUGHPUT)


RANKED = """
[generators.a]
source = "{sd}"
steps = 2
guidance = 0
width = 64
height = 64
[generators.b]
source = "{sd}"
steps = 6
width = 64
height = 64
[generators.c]
source = "{sdxl}"
steps = 10
width = 64
height = 64
[generators.d]
source = "{sd}"
steps = 6
width = 128
height = 128
"""


def test_estimated_ranking_matches_measured(tmp_path: Path, tiny_sd_dir: Path, tiny_sdxl_dir: Path) -> None:
    """Tiny generators of different sizes and step counts: the cheapest estimate is the fastest measured,
    etc."""
    import torch

    cat = parse_catalog(RANKED.format(sd=tiny_sd_dir, sdxl=tiny_sdxl_dir), tmp_path / "models.toml")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # steadier timings on a shared 2-core machine
    try:
        estimated = {g.name: generator_cost(g, CPU, use_measured=False).seconds for g in cat.generators}
        measured = {}
        for g in cat.generators:
            r = measure(g, CPU, repeats=2, warmup=1)
            measured[g.name] = min(r.image_seconds) if g.steps >= 3 else r.seconds_per_image(g.steps)
    finally:
        torch.set_num_threads(threads)
    assert sorted(estimated, key=estimated.get) == ["a", "b", "c", "d"]
    assert sorted(measured, key=measured.get) == sorted(estimated, key=estimated.get), (estimated, measured)
