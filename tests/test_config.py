"""models.toml: lookup order, validation into frozen objects, and one-line errors for every bad input."""

from __future__ import annotations

import dataclasses
import filecmp
from pathlib import Path

import pytest

from catimg.config import PACKAGED_MODELS, find_catalog, load_catalog
from catimg.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

GOOD = """
[defaults]
dtype = "auto"

[generators.fast]
source = "stabilityai/sdxl-turbo"
steps = 1
guidance = 0.0
width = 512
height = 512

[generators.sdxl]
source = "stabilityai/stable-diffusion-xl-base-1.0"
steps = [10, 20, 50]
guidance = 5.0

[generators.local]
source = "./weights/tiny"
steps = 4
enabled = false
cost_seconds = 1.5
"""


def write(tmp_path: Path, text: str, name: str = "models.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_parses_and_expands_step_lists(tmp_path: Path) -> None:
    cat = load_catalog(write(tmp_path, GOOD))
    assert cat.names == ["fast", "sdxl@10", "sdxl@20", "sdxl@50", "local"]
    assert [g.name for g in cat.enabled] == ["fast", "sdxl@10", "sdxl@20", "sdxl@50"]
    s10, s50 = cat.get("sdxl@10"), cat.get("sdxl@50")
    assert s10.model == s50.model == "sdxl" and s10.source == s50.source
    assert (s10.steps, s50.steps) == (10, 50)
    assert s10.family == "sdxl" and (s10.width, s10.height) == (1024, 1024)
    assert cat.get("fast").family == "sdxl-turbo" and not cat.get("fast").uses_guidance
    assert s10.uses_guidance
    assert s10.settings_hash() != s50.settings_hash()
    local = cat.get("local")
    assert Path(local.source).is_absolute() and local.source == str((tmp_path / "weights" / "tiny").resolve())
    assert local.cost_seconds == 1.5 and local.enabled is False
    with pytest.raises(dataclasses.FrozenInstanceError):
        cat.get("fast").steps = 3  # type: ignore[misc]


def test_settings_hash_is_stable_and_ignores_cosmetic_keys(tmp_path: Path) -> None:
    a = load_catalog(write(tmp_path, GOOD)).get("fast")
    b = load_catalog(write(tmp_path, GOOD.replace("steps = 1\n", 'steps = 1\nnote = "hi"\n'), "b.toml")).get(
        "fast"
    )
    c = load_catalog(write(tmp_path, GOOD.replace("steps = 1\n", "steps = 2\n"), "c.toml")).get("fast")
    assert a.settings_hash() == b.settings_hash() != c.settings_hash()


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert find_catalog() == (PACKAGED_MODELS, "packaged default")
    user = tmp_path / "xdg" / "catimg" / "models.toml"
    user.parent.mkdir(parents=True)
    user.write_text(GOOD)
    from catimg.config import user_config_dir

    if user_config_dir() == user.parent:  # platformdirs honours XDG on Linux
        assert find_catalog() == (user, "user config")
    write(tmp_path, GOOD)
    assert find_catalog() == (tmp_path / "models.toml", "./models.toml")
    env = write(tmp_path, GOOD, "env.toml")
    monkeypatch.setenv("CATIMG_MODELS", str(env))
    assert find_catalog() == (env, "CATIMG_MODELS")
    assert find_catalog(tmp_path / "x.toml") == (tmp_path / "x.toml", "--models")


def test_packaged_default_matches_repository_catalog() -> None:
    assert filecmp.cmp(ROOT / "models.toml", PACKAGED_MODELS, shallow=False)
    cat = load_catalog(PACKAGED_MODELS)
    assert {g.name for g in cat.enabled} == {"sdxl-turbo", "sd21", "sdxl"}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[generators.a\nsource='x'", "invalid TOML"),
        ('[generators.a]\nsource = "x/y"\nstesp = 3\n', 'unknown key "stesp" (did you mean "steps"?)'),
        ('[generator.a]\nsource = "x/y"\n', 'unknown top-level key "generator" (did you mean "generators"?)'),
        ('[generators.a]\nsource = "x/y"\nsteps = "ten"\n', "steps = 'ten' must be a positive whole number"),
        ('[generators.a]\nsource = "x/y"\nsteps = 0\n', "steps = 0 must be a positive whole number"),
        ('[generators.a]\nsource = "x/y"\nwidth = -512\n', "width = -512 must be a positive whole number"),
        ('[generators.a]\nsource = "x/y"\nheight = 500\n', "height = 500 must be a multiple of 8"),
        ('[generators.a]\nsource = "x/y"\nguidance = "high"\n', "guidance = 'high' must be a number"),
        ('[generators.a]\nsource = "x/y"\ndtype = "fp8"\n', 'dtype = "fp8" is unknown'),
        ('[generators.a]\nsource = "x/y"\ncost_seconds = 0\n', "cost_seconds = 0 must be a positive number"),
        (
            '[generators.a]\nsource = "x/y"\ncost_tflops = "a lot"\n',
            "cost_tflops = 'a lot' must be a positive number",
        ),
        ('[generators.a]\nsource = "x/y"\nenabled = "no"\n', "enabled = 'no' must be true or false"),
        ("[generators.a]\nsteps = 3\n", 'missing key "source"'),
        ('[generators.a]\nsource = "x/y"\nsteps = [10, 10]\n', "repeats a value"),
        (
            '[generators.a]\nsource = "x/y"\nsteps = [10, 20]\n[generators."a@10"]\nsource = "x/y"\n',
            "contain '@' (it marks steps: sdxl@20)",
        ),
        ('[generators."sd,15"]\nsource = "x/y"\n', 'rename it, e.g. [generators."sd-15"]'),
        ('[generators." sd"]\nsource = "x/y"\n', "may not be empty, start or end with spaces"),
        (
            '[generators."SD 1.5"]\nsource = "x/y"\n[generators."SD_1.5"]\nsource = "x/z"\n',
            'generators "SD 1.5" and "SD_1.5" would name their image files alike ("SD_1.5")',
        ),
        ('[generators.a]\nsource = "x/y"\nenabled = false\n', "nothing can be routed"),
        ("", "no [generators.<name>] tables"),
        (
            '[generators.a]\nsource = "x/y"\nfamily = "sdxxl"\n',
            'family = "sdxxl" is unknown (did you mean "sdxl"?)',
        ),
    ],
)
def test_bad_catalogs_give_one_line_errors(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_catalog(path)
    msg = str(err.value)
    assert needle in msg
    assert str(path) in msg and "\n" not in msg


def test_invalid_toml_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, '[generators.a]\nsource = "x/y"\nsteps = = 3\n')
    with pytest.raises(ConfigError, match=r"line 3, column"):
        load_catalog(path)


def test_invalid_toml_at_end_of_file_still_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, '[generators.a]\nsource = "x/y"\nsteps = [\n')
    with pytest.raises(ConfigError, match=r"line 3, column 10"):
        load_catalog(path)


def test_missing_unreadable_and_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="models file not found"):
        load_catalog(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="is a folder"):
        load_catalog(tmp_path)
    bad = tmp_path / "latin1.toml"
    bad.write_bytes('[generators.caf\xe9]\nsource = "x/y"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_catalog(bad)


def test_unknown_generator_lookup_hints(tmp_path: Path) -> None:
    cat = load_catalog(write(tmp_path, GOOD))
    with pytest.raises(ConfigError, match='no generator named "sdxl@15" \\(did you mean "sdxl@\\d0"\\?\\)'):
        cat.get("sdxl@15")
