"""Training a router artifact, loading it back, and every way an artifact can be wrong."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from catimg.config import load_catalog
from catimg.errors import MeasurementsError, RouterError
from catimg.measurements import read_measurements
from catimg.routing.encoder import ENCODER_ID, PromptEncoder
from catimg.routing.router import FORMAT_VERSION, load_router
from catimg.training.train import train_router

MODELS_TOML = """
[generators.cheap]
source = "stabilityai/sdxl-turbo"
steps = 1
guidance = 0.0
width = 512
height = 512

[generators.dear]
source = "stabilityai/stable-diffusion-xl-base-1.0"
steps = 30
guidance = 5.0
width = 1024
height = 1024
"""

SUBJECTS = [
    "a cat",
    "a teapot",
    "a bicycle",
    "a lighthouse",
    "an owl",
    "a violin",
    "a sailboat",
    "a cactus",
    "a robot",
    "a castle",
    "a fox",
    "a lamp",
    "a tractor",
    "a penguin",
    "a clock",
    "a mushroom",
    "a dragon",
    "a piano",
    "a tiger",
    "a kite",
    "a bridge",
    "a horse",
]


def prompts_and_scores() -> list[tuple[str, str, float, float]]:
    """Rows (prompt, generator, score, seconds): the cheap generator fails on crowded scenes, the dear one
    does not."""
    rng = np.random.default_rng(0)
    rows = []
    for s in SUBJECTS:
        simple = f"{s} on a white background"
        busy = f"{s} in a crowded street full of people, cars and colourful signs"
        for p, cheap in ((simple, 4.2), (busy, 2.0)):
            rows.append((p, "cheap", cheap + rng.normal(0, 0.2), 0.5))
            rows.append((p, "dear", 4.3 + rng.normal(0, 0.2), 8.0))
    return rows


def write_case(folder: Path, seconds: bool = True) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    models = folder / "models.toml"
    models.write_text(MODELS_TOML, encoding="utf-8")
    m = folder / "m.csv"
    with m.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["prompt", "generator", "score", "seconds"] if seconds else ["prompt", "generator", "score"]
        )
        for p, g, s, sec in prompts_and_scores():
            w.writerow([p, g, f"{s:.4f}", sec] if seconds else [p, g, f"{s:.4f}"])
    return models, m


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("router")
    models, m = write_case(root)
    cat = load_catalog(models)
    table = read_measurements(m, known_generators=cat.names)
    train_router(table, cat, root / "r", encoder=PromptEncoder(use_cache=False))
    return root


def test_artifact_describes_itself(trained: Path) -> None:
    cfg = json.loads((trained / "r" / "config.json").read_text())
    assert cfg["format_version"] == FORMAT_VERSION
    assert cfg["encoder"] == {"id": ENCODER_ID, "dim": 384}
    assert [g["name"] for g in cfg["generators"]] == ["cheap", "dear"]
    assert cfg["cost_unit"] == "seconds" and [g["cost"] for g in cfg["generators"]] == [0.5, 8.0]
    assert cfg["metric"]["name"] == "score"
    assert cfg["predictor"]["name"] == "lexical"
    assert "definition" in cfg["budget"] and cfg["data_card"]["n_prompts"] == 2 * len(SUBJECTS)
    assert "summaries" in cfg["data_card"]["held_out"]
    # the encoder ran (no cache), so the card says in which precision the embedding seconds were spent
    assert cfg["data_card"]["training_seconds"]["encoder_precision"] in ("fp32", "bf16")
    assert (trained / "r" / "weights.safetensors").is_file()


def test_loaded_router_predicts_and_routes(trained: Path) -> None:
    r = load_router(trained / "r")
    cat = load_catalog(trained / "models.toml")
    r.check(cat, ENCODER_ID)
    assert r.generators == ["cheap", "dear"] and all(r.knows(g) for g in cat.generators)
    lv = r.levels
    assert list(lv) == ["low", "medium", "high", "max"]
    assert lv["low"] > lv["medium"] > lv["high"] > lv["max"] == 0.0
    prompts = [
        "a giraffe on a white background",
        "a giraffe in a crowded street full of people, cars and colourful signs",
    ]
    emb = PromptEncoder(use_cache=False).encode(prompts)
    mean, std = r.predict(emb, prompts)
    assert mean.shape == std.shape == (2, 2) and (std > 0).all()
    assert mean[0, 0] > mean[1, 0] + 0.5  # the cheap generator is predicted worse on the crowded scene
    ch = [r.choose(mean, lam) for lam in (lv["low"], lv["max"])]
    assert ch[0][0] == 0 and ch[1][1] == 1
    nb = r.neighbours(
        emb, k=2
    )  # the neighbour index keeps the training prompts: explain can show the closest
    assert [len(x) for x in nb] == [2, 2] and all(-1.0 <= s <= 1.0 for row in nb for _, s in row)
    assert nb[0][0][1] >= nb[0][1][1]


def test_a_format_2_router_folder_still_loads_and_predicts_the_same(trained: Path, tmp_path: Path) -> None:
    """Format 2 kept every neighbour's deviations as ``R`` (NaN where not measured); this catimg reads it as
    one neighbour per prompt."""
    from safetensors.numpy import load_file, save_file

    d = _broken(trained, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["format_version"] = 2
    (d / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    arrays = load_file(str(d / "weights.safetensors"))
    S, N = arrays.pop("S"), arrays.pop("N")
    arrays["R"] = np.where(N > 0, S, np.nan).astype(np.float32)
    save_file(arrays, str(d / "weights.safetensors"))
    prompts = ["a giraffe on a white background", "a crowded market at noon"]
    emb = PromptEncoder(use_cache=False).encode(prompts)
    old, new = load_router(d), load_router(trained / "r")
    assert old.version == 2 and new.version == FORMAT_VERSION == 3
    np.testing.assert_allclose(old.predict(emb, prompts)[0], new.predict(emb, prompts)[0], rtol=1e-6)


def test_knn_router_shows_neighbours(tmp_path: Path) -> None:
    models, m = write_case(tmp_path, seconds=False)
    cat = load_catalog(models)
    r = train_router(
        read_measurements(m), cat, tmp_path / "k", predictor="knn", encoder=PromptEncoder(use_cache=False)
    )
    assert r.cost_unit == "tflops" and r.costs["cheap"] < r.costs["dear"]
    nb = r.neighbours(PromptEncoder(use_cache=False).encode(["a cat on a white background"]), k=2)
    assert nb[0][0][0] == "a cat on a white background" and nb[0][0][1] == pytest.approx(1.0, abs=1e-4)


def test_changed_settings_need_calibration(trained: Path, tmp_path: Path) -> None:
    r = load_router(trained / "r")
    changed = tmp_path / "models.toml"
    changed.write_text(MODELS_TOML.replace("steps = 30", "steps = 20"), encoding="utf-8")
    cat = load_catalog(changed)
    assert r.knows(cat.get("cheap")) and not r.knows(cat.get("dear"))
    assert "steps 30 -> 20" in (r.mismatch(cat.get("dear")) or "")
    r.check(cat, ENCODER_ID)  # one generator still known: fine
    other = tmp_path / "other.toml"
    other.write_text('[generators.flux]\nsource = "black-forest-labs/FLUX.1-schnell"\n', encoding="utf-8")
    with pytest.raises(
        RouterError, match=r"knows none of the enabled generators in .*other.toml \(flux: not in the router"
    ):
        r.check(load_catalog(other), ENCODER_ID)
    with pytest.raises(
        RouterError, match=r"trained on prompt encoder .*MiniLM.*but catimg uses other/encoder"
    ):
        r.check(cat, "other/encoder")


def _broken(trained: Path, tmp_path: Path) -> Path:
    d = tmp_path / "broken"
    shutil.copytree(trained / "r", d)
    return d


def test_bad_artifacts(trained: Path, tmp_path: Path) -> None:
    with pytest.raises(RouterError, match=r"nope: router folder not found"):
        load_router(tmp_path / "nope")
    d = _broken(trained, tmp_path)
    (d / "config.json").unlink()
    with pytest.raises(RouterError, match=r"no config.json in the router folder"):
        load_router(d)
    shutil.rmtree(d)
    d = _broken(trained, tmp_path)
    (d / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(RouterError, match=r"config.json: corrupt JSON .* line 1, column 2"):
        load_router(d)
    cfg = json.loads((trained / "r" / "config.json").read_text())
    for change, msg in (
        (dict(format_version=99), r"router format version 99, but this catimg reads versions 2 and 3"),
        (
            dict(format_version=1),
            r"router format version 1 \(catimg 0.1.0\).*retrain it from the same "
            r"measurements with `catimg train`",
        ),
        (dict(format="other"), r"not a catimg router config"),
        (dict(encoder={"id": "x"}), r'missing key "encoder.dim"'),
        (dict(generators=[]), r'"generators" must be a non-empty list'),
    ):
        (d / "config.json").write_text(json.dumps({**cfg, **change}), encoding="utf-8")
        with pytest.raises(RouterError, match=msg):
            load_router(d)
    (d / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    load_router(d)
    (d / "prompts.json").write_text(json.dumps(["only one"]), encoding="utf-8")
    with pytest.raises(RouterError, match=r"the neighbour index does not fit prompts.json"):
        load_router(d)
    (d / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(RouterError, match=r"weights.safetensors: corrupt router weights"):
        load_router(d)
    (d / "weights.safetensors").unlink()
    with pytest.raises(RouterError, match=r"weights.safetensors: router weights missing"):
        load_router(d)
    with pytest.raises(RouterError, match=r"trained on prompt encoder"):
        load_router(trained / "r", encoder_id="other/encoder")


def test_training_rejects_generators_outside_the_catalog(trained: Path, tmp_path: Path) -> None:
    m = tmp_path / "m.csv"
    m.write_text("prompt,generator,score\na,cheap,1\nb,deer,2\n", encoding="utf-8")
    table = read_measurements(m)
    with pytest.raises(
        MeasurementsError, match=r'generator "deer" is not in .*models.toml \(did you mean "dear"\?\)'
    ):
        train_router(
            table,
            load_catalog(trained / "models.toml"),
            tmp_path / "x",
            encoder=PromptEncoder(use_cache=False),
        )


def test_training_warns_about_one_shot_and_constant_generators(trained: Path, tmp_path: Path) -> None:
    models, m = write_case(tmp_path)
    table = read_measurements(m)
    j_cheap, j_dear = table.column("cheap"), table.column("dear")
    table.Y[:, j_cheap] = 3.0  # every score the same
    table.Y[1:, j_dear] = np.nan  # one measurement only
    r = train_router(table, load_catalog(models), tmp_path / "x", encoder=PromptEncoder(use_cache=False))
    warnings = " | ".join(r.data_card["warnings"])
    assert "cheap: every score is 3" in warnings and "dear: measured on 1 prompt only" in warnings
    emb = PromptEncoder(use_cache=False).encode(["a cat", "a crowded street"])
    mean, std = r.predict(emb, ["a cat", "a crowded street"])
    np.testing.assert_allclose(mean[:, j_cheap], 3.0, atol=1e-6)
    assert np.isfinite(mean).all()
    assert (std > 0).all()


def test_bundled_router_matches_default_catalog() -> None:
    from catimg.routing.router import PACKAGED_ROUTER

    if not (PACKAGED_ROUTER / "config.json").is_file():
        pytest.skip("bundled router not built yet")
    r = load_router(None)
    cat = load_catalog(Path(__file__).resolve().parents[1] / "catimg" / "data" / "models.toml")
    r.check(cat, ENCODER_ID)
    assert all(r.knows(g) for g in cat.enabled)
    # every other router column is a disabled reference column of a public set, never a catalog generator
    training = load_catalog(Path(__file__).resolve().parents[1] / "catimg" / "data" / "router-training.toml")
    others = [g for g in r.generators if g not in {x.name for x in cat.enabled}]
    assert others and all(g not in cat and not training.get(g).enabled for g in others)
    assert all(r.knows(training.get(g)) for g in r.generators)
    card = r.data_card
    assert card["licenses"] and card["n_prompts"] > 100
    assert all("license" in s and s.get("citations") for s in card["sources"])  # every source attributed
    assert (
        {s["id"] for s in card["sources"]}
        == {x["name"] for x in card["sets"]}
        == set(card["held_out_by_set"])
    )
    assert any("PQPP" in c for c in card["citations"]) and any("CC BY 4.0" in lic for lic in card["licenses"])
