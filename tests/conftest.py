"""Shared pytest fixtures for catimg.

Every test runs with its user dirs and Hugging Face cache pointed at a temporary folder, offline, without
colour and at a fixed console width (autouse ``_isolated_env``). Tiny real diffusers pipelines are built once
per session. Tests marked ``gpu`` need a CUDA device and are skipped without one.
Helpers: add your fixtures below in a section of their own, keep this file tidy.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

# One intra-op thread for torch in this process too (read when torch is first imported, so set before any test
# imports it): tiny models gain nothing from a second thread, and two threads spinning against a machine that
# is already busy made whole runs stall (the suite must pass with both cores loaded).
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
# Ray starts its workers at niceness 15 by default: on a machine kept busy by other work they starve, and the
# two-engine tests crawl for tens of minutes. Tests run them at normal priority (read by the raylet at start).
os.environ.setdefault("RAY_worker_niceness", "0")

import pytest  # noqa: E402
import tiny  # noqa: E402  (tests/tiny.py: pyproject's pytest `pythonpath` puts tests/ on sys.path)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the ``gpu`` tests where torch sees no CUDA device (torch is imported only when there are some)."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in gpu_items:
        item.add_marker(skip)


# ------------------------------------------------------------------------------------------------------------
# Environment: never touch the real home dirs, never reach the Hub, pin rendering.
# ------------------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _isolated_env(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("env")
    hub = root / "hf-hub"
    hub.mkdir()
    monkeypatch.setenv("CATIMG_CACHE_DIR", str(root / "cache"))
    monkeypatch.setenv("CATIMG_DATA_DIR", str(root / "data"))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("CATIMG_WIDTH", "200")
    monkeypatch.setenv(
        "OMP_NUM_THREADS", "1"
    )  # subprocesses: tiny models run fastest (and stable) on one thread
    monkeypatch.delenv("CATIMG_MODELS", raising=False)
    monkeypatch.delenv("CATIMG_ALLOW_DOWNLOAD", raising=False)
    monkeypatch.delenv("CATIMG_DEBUG", raising=False)
    yield root


@pytest.fixture
def hf_cache() -> Path:
    """The (empty, per-test) Hugging Face cache that HF_HUB_CACHE points at."""
    import os

    return Path(os.environ["HF_HUB_CACHE"])


# ------------------------------------------------------------------------------------------------------------
# Tiny real diffusers pipelines (built once per session; treat the folders as read-only).
# ------------------------------------------------------------------------------------------------------------


def _one_thread() -> None:
    """Tiny models are fastest on one torch thread; on a busy 2-core machine, 2 threads can be 30x slower."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny StableDiffusionPipeline folder (64 px)."""
    _one_thread()
    return tiny.build_tiny_sd(tmp_path_factory.mktemp("tiny") / "tiny-sd", seed=0)


@pytest.fixture(scope="session")
def tiny_sd2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny SD pipeline with other random weights (a different model)."""
    _one_thread()
    return tiny.build_tiny_sd(tmp_path_factory.mktemp("tiny") / "tiny-sd-b", seed=1)


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny StableDiffusionXLPipeline folder (64 px)."""
    _one_thread()
    return tiny.build_tiny_sdxl(tmp_path_factory.mktemp("tiny") / "tiny-sdxl", seed=0)


@pytest.fixture(scope="session")
def tiny_pixart_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny PixArtAlphaPipeline folder (64 px)."""
    _one_thread()
    return tiny.build_tiny_pixart(tmp_path_factory.mktemp("tiny") / "tiny-pixart", seed=0)


@pytest.fixture
def fake_hub(hf_cache: Path, tiny_sd_dir: Path, tiny_sdxl_dir: Path) -> dict[str, Path]:
    """Hub ids that load offline from the per-test HF cache: returns {repo_id: snapshot path}."""
    return {
        "runwayml/stable-diffusion-v1-5": tiny.install_fake_hub(
            hf_cache, "runwayml/stable-diffusion-v1-5", tiny_sd_dir
        ),
        "stabilityai/sdxl-turbo": tiny.install_fake_hub(hf_cache, "stabilityai/sdxl-turbo", tiny_sdxl_dir),
    }


# ------------------------------------------------------------------------------------------------------------
# Calibration (calibration helper): a tiny real CLIP checkpoint for the scorers.
# ------------------------------------------------------------------------------------------------------------


def build_tiny_clip(path: Path, seed: int = 0) -> Path:
    """A tiny CLIPModel (random weights from configs) + byte-level tokenizer + image processor,
    save_pretrained."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    text = dict(
        vocab_size=514,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=77,
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        image_size=32,
        patch_size=8,
    )
    torch.manual_seed(seed)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval().save_pretrained(
        path
    )
    tiny.tiny_tokenizer().save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        path
    )
    return path


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CLIP checkpoint folder usable as --scorer-model (treat as read-only)."""
    return build_tiny_clip(tmp_path_factory.mktemp("tiny") / "tiny-clip")
