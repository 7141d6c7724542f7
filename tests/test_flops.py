"""Analytic FLOPs (catimg.flops) against torch's own FLOP counter on the same forward pass of real tiny
models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from catimg.config import parse_catalog
from catimg.errors import ConfigError
from catimg.flops import (
    FAMILY_TABLE,
    count_from_configs,
    count_pipeline,
    estimate_flops,
    family_configs,
    scale_count,
)


def _torch_count(fn) -> float:
    """TFLOPs torch counts for ``fn`` on real CPU tensors, attention run as plain matmuls so it is counted
    too."""
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops() / 1e12


@pytest.fixture(scope="module")
def sd_pipe(tiny_sd_dir: Path):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(tiny_sd_dir)


def test_denoiser_vae_text_match_torch_counter(tiny_sd_dir: Path, sd_pipe) -> None:
    c = count_pipeline(tiny_sd_dir, 64, 64)
    latent = torch.randn(1, 4, 32, 32)  # the tiny VAE downsamples by 2
    ctx = torch.randn(1, 77, 32)
    unet = _torch_count(lambda: sd_pipe.unet(latent, torch.tensor([10]), encoder_hidden_states=ctx))
    vae = _torch_count(lambda: sd_pipe.vae.decode(latent))
    text = _torch_count(lambda: sd_pipe.text_encoder(torch.zeros(1, 77, dtype=torch.long)))
    assert c.denoiser.tflops == pytest.approx(unet, rel=1e-6)
    assert c.vae_decode.tflops == pytest.approx(vae, rel=1e-6)
    assert c.text[0].tflops == pytest.approx(text, rel=1e-6)
    assert 0 < c.denoiser.attention_tflops < c.denoiser.tflops
    assert c.denoiser.params == sum(p.numel() for p in sd_pipe.unet.parameters())


def test_size_changes_counts_like_torch(tiny_sd_dir: Path, sd_pipe) -> None:
    c = count_pipeline(tiny_sd_dir, 96, 128)  # latents 64 x 48
    latent = torch.randn(1, 4, 64, 48)
    unet = _torch_count(
        lambda: sd_pipe.unet(latent, torch.tensor([10]), encoder_hidden_states=torch.randn(1, 77, 32))
    )
    assert c.denoiser.tflops == pytest.approx(unet, rel=1e-6)


def test_sdxl_denoiser_matches_torch(tiny_sdxl_dir: Path) -> None:
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_dir)
    c = count_pipeline(tiny_sdxl_dir, 64, 64)
    cfg = pipe.unet.config
    pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
    added = {"text_embeds": torch.randn(1, pooled), "time_ids": torch.randn(1, 6)}
    unet = _torch_count(
        lambda: pipe.unet(
            torch.randn(1, 4, 32, 32),
            torch.tensor([10]),
            encoder_hidden_states=torch.randn(1, 77, cfg.cross_attention_dim),
            added_cond_kwargs=added,
        )
    )
    assert c.denoiser.tflops == pytest.approx(unet, rel=1e-6)
    assert len(c.text) == 2


def test_estimate_doubles_denoiser_with_guidance(tiny_sd_dir: Path, tmp_path: Path) -> None:
    text = f"""
[generators.cfg]
source = "{tiny_sd_dir}"
steps = [2, 8]
width = 64
height = 64
[generators.nocfg]
source = "{tiny_sd_dir}"
steps = 8
guidance = 0
width = 64
height = 64
"""
    cat = parse_catalog(text, tmp_path / "models.toml")
    a, b, n = (estimate_flops(cat.get(x)) for x in ("cfg@2", "cfg@8", "nocfg"))
    assert a.passes == 2 and n.passes == 1
    assert b.total_tflops - a.total_tflops == pytest.approx(6 * 2 * a.denoiser_tflops)
    assert b.step_tflops == pytest.approx(2 * n.step_tflops)
    assert b.text_tflops == pytest.approx(2 * n.text_tflops)  # the negative prompt is encoded too
    assert b.vae_tflops == n.vae_tflops


def test_family_table_is_reproducible() -> None:
    configs, w, h = family_configs()["sd1"]
    fresh = count_from_configs(configs, w, h)
    assert fresh == FAMILY_TABLE["sd1"]


def test_published_figures() -> None:
    sdxl = FAMILY_TABLE["sdxl"].denoiser
    # CATImage counts SDXL at 11.97 TFLOPs per step at 1024² with guidance, attention products left out.
    assert 2 * (sdxl.tflops - sdxl.attention_tflops) == pytest.approx(11.97, rel=0.01)
    assert sdxl.params == pytest.approx(2.567e9, rel=0.01)
    sd1 = FAMILY_TABLE["sd1"].denoiser
    # BK-SDM (Kim et al. 2023): the SD v1 U-Net is 339 G multiply-accumulates per forward at 512².
    assert (sd1.tflops - sd1.attention_tflops) / 2 == pytest.approx(0.339, rel=0.01)
    assert sd1.params == pytest.approx(859.5e6, rel=0.001)


def test_scaling_a_family_to_another_size_is_close_to_counting() -> None:
    scaled = scale_count(FAMILY_TABLE["sdxl"], 512, 512)
    counted = FAMILY_TABLE["sdxl-turbo"]
    assert scaled.denoiser.tflops == pytest.approx(counted.denoiser.tflops, rel=0.05)
    assert scaled.vae_decode.tflops == pytest.approx(counted.vae_decode.tflops, rel=0.05)


def test_unknown_family_on_the_hub_is_a_config_error(tmp_path: Path) -> None:
    cat = parse_catalog('[generators.x]\nsource = "someone/mystery-model"\n', tmp_path / "models.toml")
    with pytest.raises(ConfigError, match="no FLOP estimate"):
        estimate_flops(cat.get("x"))


def test_unreadable_folder_config_names_the_file(tiny_sd_dir: Path, tmp_path: Path) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_sd_dir, bad)
    (bad / "unet" / "config.json").write_text("{not json", encoding="utf-8")
    cat = parse_catalog(f'[generators.bad]\nsource = "{bad}"\n', tmp_path / "models.toml")
    with pytest.raises(ConfigError, match=r"unet/config\.json"):
        estimate_flops(cat.get("bad"))


def test_counts_are_cached_on_disk(tiny_sd_dir: Path, tmp_path: Path) -> None:
    import os

    cat = parse_catalog(
        f'[generators.a]\nsource = "{tiny_sd_dir}"\nwidth = 64\nheight = 64\n', tmp_path / "m.toml"
    )
    first = estimate_flops(cat.get("a"))
    cache = Path(os.environ["CATIMG_CACHE_DIR"]) / "flops.json"
    doc = json.loads(cache.read_text())
    assert len(doc) == 1
    assert estimate_flops(cat.get("a")) == first


def test_unknown_family_counted_from_the_hub_cache(tmp_path: Path, tiny_sd_dir: Path, hf_cache: Path) -> None:
    import tiny

    tiny.install_fake_hub(hf_cache, "someone/mystery-model", tiny_sd_dir)
    cat = parse_catalog(
        '[generators.x]\nsource = "someone/mystery-model"\nwidth = 64\nheight = 64\n',
        tmp_path / "models.toml",
    )
    est = estimate_flops(cat.get("x"))
    assert est.denoiser_tflops == pytest.approx(count_pipeline(tiny_sd_dir, 64, 64).denoiser.tflops)
