"""`catimg calibrate`'s use case called directly (catimg.calibration.calibrate.open_campaign), no CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from catimg.calibration.calibrate import CampaignRequest, open_campaign
from catimg.errors import InputError

PROMPTS = ("a red cube", "a blue sphere", "a red cube", "a green cone")


@pytest.fixture
def models(tmp_path: Path, tiny_sd_dir: Path) -> Path:
    """sd (weights in a folder), off (disabled), hub (a Hub id whose weights are not in the cache)."""
    path = tmp_path / "models.toml"
    path.write_text(
        f'[generators.sd]\nsource = "{tiny_sd_dir}"\nsteps = 2\nwidth = 64\nheight = 64\n'
        f'[generators.off]\nsource = "{tiny_sd_dir}"\nsteps = 3\nenabled = false\n'
        '[generators.hub]\nsource = "org/not-downloaded"\nsteps = 2\n'
    )
    return path


def request(models: Path, tmp_path: Path, **kw: Any) -> CampaignRequest:
    return CampaignRequest(
        prompts=PROMPTS, origin="test prompts", models=models, db=tmp_path / "m.sqlite", device="cpu", **kw
    )


def test_dry_run_plans_every_enabled_generator_and_says_what_a_real_run_leaves_out(
    models: Path, tmp_path: Path
) -> None:
    with open_campaign(request(models, tmp_path, dry_run=True, seeds=2)) as camp:
        plan = camp.plan
        assert [g.name for g in plan.generators] == ["sd", "hub"]  # a dry run does not check weights
        assert plan.images == 2 * 3 * 2  # generators x distinct prompts x seeds
        assert any("repeated prompt(s) measured once" in n for n in plan.notes)
        assert any(n.startswith("weights missing for hub (org/not-downloaded)") for n in plan.notes)
        assert "disabled in models.toml" in plan.skipped_generators["off"]
        assert camp.scorer_note.startswith("missing: ")  # no CLIP weights in the per-test cache
        assert camp.out_dir == tmp_path / "images"
    assert not (tmp_path / "m.sqlite").exists()  # a dry run creates no database


def test_a_real_run_leaves_out_missing_weights_and_named_generators_are_measured(
    models: Path, tmp_path: Path
) -> None:
    with open_campaign(request(models, tmp_path, limit=2)) as camp:
        assert [g.name for g in camp.plan.generators] == ["sd"] and camp.plan.images == 2
        assert "hub" in camp.plan.skipped_generators and "off" in camp.plan.skipped_generators
    with open_campaign(request(models, tmp_path, generators=("off",), out=tmp_path / "imgs")) as camp:
        assert [g.name for g in camp.plan.generators] == ["off"] and "off" not in camp.plan.skipped_generators
        assert camp.out_dir == tmp_path / "imgs"
    with pytest.raises(InputError, match="--limit 0"):
        with open_campaign(request(models, tmp_path, limit=0)):
            pass
