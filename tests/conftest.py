"""Shared pytest fixtures for catimg.

Every test runs with its user dirs and Hugging Face cache pointed at a temporary folder, offline, without colour
and at a fixed console width (autouse ``_isolated_env``). Tiny real diffusers pipelines are built once per session.
Helpers: add your fixtures below in a section of their own, keep this file tidy.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import tiny  # noqa: E402  (tests/tiny.py)

# ---------------------------------------------------------------------------------------------------------------
# Environment: never touch the real home dirs, never reach the Hub, pin rendering.
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("env")
    hub = root / "hf-hub"
    hub.mkdir()
    monkeypatch.setenv("CATIMG_CACHE_DIR", str(root / "cache"))
    monkeypatch.setenv("CATIMG_DATA_DIR", str(root / "data"))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("CATIMG_WIDTH", "200")
    monkeypatch.delenv("CATIMG_MODELS", raising=False)
    monkeypatch.delenv("CATIMG_ALLOW_DOWNLOAD", raising=False)
    monkeypatch.delenv("CATIMG_DEBUG", raising=False)
    yield root


@pytest.fixture
def hf_cache() -> Path:
    """The (empty, per-test) Hugging Face cache that HF_HUB_CACHE points at."""
    import os

    return Path(os.environ["HF_HUB_CACHE"])


# ---------------------------------------------------------------------------------------------------------------
# Tiny real diffusers pipelines (built once per session; treat the folders as read-only).
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny StableDiffusionPipeline folder (64 px)."""
    return tiny.build_tiny_sd(tmp_path_factory.mktemp("tiny") / "tiny-sd", seed=0)


@pytest.fixture(scope="session")
def tiny_sd2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny SD pipeline with other random weights (a different model)."""
    return tiny.build_tiny_sd(tmp_path_factory.mktemp("tiny") / "tiny-sd-b", seed=1)


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny StableDiffusionXLPipeline folder (64 px)."""
    return tiny.build_tiny_sdxl(tmp_path_factory.mktemp("tiny") / "tiny-sdxl", seed=0)


@pytest.fixture(scope="session")
def tiny_pixart_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny PixArtAlphaPipeline folder (64 px)."""
    return tiny.build_tiny_pixart(tmp_path_factory.mktemp("tiny") / "tiny-pixart", seed=0)


@pytest.fixture
def fake_hub(hf_cache: Path, tiny_sd_dir: Path, tiny_sdxl_dir: Path) -> dict[str, Path]:
    """Hub ids that load offline from the per-test HF cache: returns {repo_id: snapshot path}."""
    return {
        "runwayml/stable-diffusion-v1-5": tiny.install_fake_hub(hf_cache, "runwayml/stable-diffusion-v1-5", tiny_sd_dir),
        "stabilityai/sdxl-turbo": tiny.install_fake_hub(hf_cache, "stabilityai/sdxl-turbo", tiny_sdxl_dir),
    }
