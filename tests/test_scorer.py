"""Scorers: the registry, a tiny real CLIP through CLIPScore, and missing checkpoints failing fast."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from PIL import Image

from catimg.errors import InputError, WeightsMissingError
from catimg.scorer import SCORERS, available_metrics, check_scorer, load_scorer, resolve_checkpoint


def test_registry_has_clipscore_and_pickscore() -> None:
    assert {"clipscore", "pickscore"} <= set(available_metrics())
    assert SCORERS["clipscore"].default_model == "openai/clip-vit-large-patch14"
    with pytest.raises(InputError, match='unknown metric "clipscor".*did you mean "clipscore"'):
        load_scorer("clipscor")


def test_tiny_clip_scores_images(tiny_clip_dir: Path) -> None:
    s = load_scorer("clipscore", str(tiny_clip_dir))
    assert s.metric == "clipscore" and s.scale == (0.0, 100.0) and s.model_id == str(tiny_clip_dir)
    red, blue = Image.new("RGB", (64, 64), (255, 0, 0)), Image.new("RGB", (48, 64), (0, 0, 255))
    long_prompt = "a very long prompt " * 40  # beyond 77 tokens: truncated, not an error
    vals = s.score([red, blue, red], ["a red square", "a blue square", long_prompt])
    assert len(vals) == 3 and all(0.0 <= v <= 100.0 for v in vals)
    again = s.score([red], ["a red square"])
    assert again[0] == pytest.approx(vals[0], abs=1e-4)  # deterministic, batch independent
    # differing prompts give differing scores (the text side is really used)
    assert s.score([red, red], ["a red square", "zzzz qqqq"])[0] != pytest.approx(s.score([red], ["zzzz qqqq"])[0])


def test_pickscore_mode_uses_logit_scale(tiny_clip_dir: Path) -> None:
    s = load_scorer("pickscore", str(tiny_clip_dir))  # folder has its own processor: no LAION repo needed
    v = s.score([Image.new("RGB", (32, 32), (0, 255, 0))], ["green"])[0]
    import math

    assert abs(v) <= math.exp(2.6593) + 1e-3  # |cos| <= 1 times the initial logit scale


def test_missing_hub_checkpoint_fails_fast_and_names_it() -> None:
    t = time.perf_counter()
    with pytest.raises(WeightsMissingError) as e:
        check_scorer("clipscore")
    assert time.perf_counter() - t < 2.0
    msg = str(e.value)
    assert "openai/clip-vit-large-patch14" in msg and "hf download" in msg and "--scorer-model" in msg and "\n" not in msg


def test_missing_or_bad_folder(tmp_path: Path) -> None:
    with pytest.raises(WeightsMissingError, match="not found"):
        resolve_checkpoint(str(tmp_path / "nope"), "clipscore")
    with pytest.raises(WeightsMissingError, match="no config.json"):
        resolve_checkpoint(str(tmp_path), "clipscore")


def test_hub_id_from_fake_cache(tiny_clip_dir: Path, hf_cache: Path) -> None:
    import tiny  # tests/tiny.py

    tiny.install_fake_hub(hf_cache, "openai/clip-vit-large-patch14", tiny_clip_dir)
    s = load_scorer("clipscore")
    assert s.model_id == "openai/clip-vit-large-patch14"
    assert len(s.score([Image.new("RGB", (32, 32))], ["black"])) == 1
