"""Scorers: the registry, a tiny real CLIP through CLIPScore, and missing checkpoints failing fast."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from catimg.calibration.scorer import (
    SCORERS,
    available_metrics,
    check_scorer,
    load_scorer,
    resolve_checkpoint,
)
from catimg.errors import InputError, WeightsMissingError


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
    assert s.score([red, red], ["a red square", "zzzz qqqq"])[0] != pytest.approx(
        s.score([red], ["zzzz qqqq"])[0]
    )


def _with_logit_scale(src: Path, dest: Path, scale: float) -> Path:
    """A copy of the CLIP folder ``src`` whose only change is ``logit_scale = ln(scale)``."""
    import math
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dest)
    weights = load_file(str(dest / "model.safetensors"))
    weights["logit_scale"] = torch.tensor(math.log(scale), dtype=weights["logit_scale"].dtype)
    save_file(weights, str(dest / "model.safetensors"), metadata={"format": "pt"})
    return dest


def test_pickscore_mode_uses_logit_scale(tiny_clip_dir: Path, tmp_path: Path) -> None:
    """PickScore is exp(logit_scale) x cosine: two checkpoints that differ only in logit_scale (ln 2, ln 10)
    score every pair exactly 5x apart (a raw cosine would not change; logit_scale itself would give
    ln 10 / ln 2)."""
    images = [Image.new("RGB", (32, 32), c) for c in ((0, 255, 0), (200, 30, 90), (10, 10, 240))]
    prompts = ["green", "a pink square", "deep blue sea"]
    low, high = (
        load_scorer("pickscore", str(_with_logit_scale(tiny_clip_dir, tmp_path / f"s{k}", k)))
        for k in (2.0, 10.0)
    )  # the folder has its own processor: no LAION repo needed
    a, b = low.score(images, prompts), high.score(images, prompts)
    assert all(abs(x) > 1e-4 for x in a)
    assert b == pytest.approx([5.0 * x for x in a], rel=1e-4)
    assert all(abs(x) <= 2.0 + 1e-5 for x in a)  # |cos| <= 1 times exp(ln 2)


def test_missing_hub_checkpoint_fails_fast_and_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    tried: list[object] = []  # fail fast: no connection, no download attempt
    monkeypatch.setattr(socket.socket, "connect", lambda self, addr: tried.append(addr))
    with pytest.raises(WeightsMissingError) as e:
        check_scorer("clipscore")
    assert tried == []
    msg = str(e.value)
    assert (
        "openai/clip-vit-large-patch14" in msg
        and "hf download" in msg
        and "--scorer-model" in msg
        and "\n" not in msg
    )


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
