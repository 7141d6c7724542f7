"""`catimg doctor`'s use case called directly (catimg.routing.diagnose), without the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from catimg.config import load_catalog
from catimg.routing.diagnose import PACKAGES, diagnose


def test_the_shipped_setup_routes_offline_and_names_the_missing_weights() -> None:
    diag = diagnose(device="cpu")
    assert diag.ok and diag.problems == ()
    assert diag.catalog is not None and diag.router is not None and diag.device is not None
    assert [c.generator.name for c in diag.generators] == diag.catalog.names
    # the per-test Hugging Face cache is empty: no weights, yet routing works (not a problem)
    assert not any(c.weights_local for c in diag.generators)
    assert all(c.router_knows for c in diag.generators if c.generator.enabled)
    assert diag.hub.offline and not diag.hub.downloads_allowed
    assert list(diag.versions)[:2] == ["catimg", "python"] and set(PACKAGES) <= set(diag.versions)
    assert diag.encoder_path is not None and Path(diag.encoder_path).exists()
    assert diag.encoder_precision in ("fp32", "bf16")


def test_a_bad_encoder_precision_override_is_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATIMG_ENCODER_PRECISION", "int4")
    diag = diagnose(device="cpu")
    assert diag.encoder_precision is None
    assert diag.problems == (
        "CATIMG_ENCODER_PRECISION='int4' is not a precision: use fp32, bf16 or auto (the default)",
    )


def test_a_broken_catalog_is_a_problem_and_a_local_folder_has_its_weights(
    tmp_path: Path, tiny_sd_dir: Path
) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[generators.x\n")
    diag = diagnose(models=broken, device="cpu")
    assert not diag.ok and diag.catalog is None and diag.generators == ()
    assert diag.catalog_path == broken and diag.catalog_origin == "--models"
    assert any(str(broken) in p for p in diag.problems)
    models = tmp_path / "models.toml"
    models.write_text(
        f'[generators.sd]\nsource = "{tiny_sd_dir}"\nsteps = 2\nwidth = 64\nheight = 64\n'
        '[generators.hub]\nsource = "org/not-downloaded"\nsteps = 2\n'
    )
    diag = diagnose(models=models, device="cpu")
    assert diag.catalog is not None and diag.catalog.names == load_catalog(models).names
    local = {c.generator.name: c.weights_local for c in diag.generators}
    assert local == {"sd": True, "hub": False}
    # the shipped router knows neither: said per generator, and its check against the catalog is a problem
    assert not any(c.router_knows for c in diag.generators)
    assert any("knows none of the enabled generators" in p for p in diag.problems)


def test_doctor_reads_the_hub_switches_as_gen_does(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`CATIMG_ALLOW_DOWNLOAD=false` means no downloads for gen, so doctor says the same; the cache is the one
    gen looks in (read at call time)."""
    from catimg.routing.diagnose import hub_state

    monkeypatch.setenv("CATIMG_ALLOW_DOWNLOAD", "false")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    state = hub_state()
    assert not state.downloads_allowed and not state.offline and state.cache == str(tmp_path / "hub")
    monkeypatch.setenv("CATIMG_ALLOW_DOWNLOAD", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "true")
    assert hub_state().downloads_allowed and hub_state().offline
