"""Tables at every width (issue 10, item 13): models, explain (compact and per prompt), doctor and plan
rendered through the real CLI at 60 to 160 columns never cut a column header, a generator name or a number
with an ellipsis, never print scientific notation or ``-0.000``, and header lines break between fields; plus
the one number format."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from harness import run_cli

from catimg.cli.render import fmt_fixed, fmt_number, fmt_tflops, fmt_value
from catimg.config import PACKAGED_MODELS

WIDTHS = (60, 80, 100, 110, 120, 160)
NAMES = ("sdxl-turbo", "sd21", "sdxl", "sd15", "pixart", "sdxl-lightning-4step")
PROMPTS = [
    "a white and empty wall",
    (
        "a colourful park with a crowd of people flying kites, a brass band and a dog chasing pigeons "
        "on a sunny day"
    ),
    "a red cube on a blue sphere",
    "three cats sitting on a windowsill at sunset, oil painting",
    "a lighthouse at dusk",
    "an astronaut reading a newspaper in a crowded Tokyo subway car",
] * 3  # 18 prompts: the compact table


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """The default catalog plus a generator with a long name and a long Hub id (needs calibration)."""
    text = PACKAGED_MODELS.read_text(encoding="utf-8")
    text += (
        '\n[generators.sdxl-lightning-4step]\nsource = "some-organisation/a-rather-long-model-name-v2"\n'
        'family = "sd1"\nsteps = 25\n'
    )
    path = tmp_path / "models.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _check(out: str, width: int, what: str, prompt_rows: bool = False) -> None:
    lines = out.splitlines()
    assert lines, what
    for line in lines:
        if "/tmp/" not in line:  # a path longer than the console is printed whole (soft wrap), to be copied
            assert len(line) <= width, f"{what} at {width}: line longer than the console: {line!r}"
        cut = line
        if prompt_rows and re.match(r"^\s*\d+ │", line):  # the compact table: only the prompt cell may be cut
            cells = [c.strip() for c in line.split("│")]
            assert cells[2] in NAMES, f"{what} at {width}: generator cut in {line!r}"
            cut = "│".join(cells[:1] + cells[2:])
        assert "…" not in cut, f"{what} at {width}: cut with an ellipsis: {line!r}"
        assert not re.search(r"\d[eE][+-]\d", line), f"{what} at {width}: scientific notation: {line!r}"
        assert "-0.00" not in line, f"{what} at {width}: negative zero: {line!r}"


@pytest.mark.parametrize("width", WIDTHS)
def test_tables_fit_every_width(
    width: int, catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CATIMG_WIDTH", str(width))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"{p} #{i}" for i, p in enumerate(PROMPTS)) + "\n", encoding="utf-8")

    code, out, err = run_cli("models", "--models", catalog)
    assert code == 0, err
    _check(out, width, "models")
    for name in NAMES:  # every name whole, in a row of its own
        assert re.search(rf"^{re.escape(name)} ", out, re.M), f"models at {width}: {name} missing or cut"
    header = next(line for line in out.splitlines() if line.startswith("name "))
    assert "router" in header and "weights" in header and "seconds" in header  # never the columns that go
    assert "needs calibration" in out.replace("\n", " ").replace("  ", " ") or "needs" in out

    code, out, err = run_cli("explain", "-f", prompts, "--no-detail", "--models", catalog)
    assert code == 0, err
    _check(out, width, "explain --no-detail", prompt_rows=True)
    assert re.search(r"^\s*#\s*┃ prompt\s+┃ generator\s+┃\s+quality ┃\s+seconds\s*$", out, re.M), out
    for field in (
        "device: ",
        "budget: ",
        "λ: ",
        "catalog: ",
        "router: ",
        "metric: ",
    ):  # whole fields on a line
        assert any(line.startswith(field) or f"   {field}" in line for line in out.splitlines()), (field, out)

    code, out, err = run_cli("explain", *PROMPTS[:2], "--models", catalog)
    assert code == 0, err
    _check(out, width, "explain")
    assert "predicted quality" in out and "➜ sdxl-turbo" in out.replace("➜ sd21", "➜ sdxl-turbo")

    code, out, err = run_cli("doctor", "--models", catalog)
    assert code == 0, err
    _check(out, width, "doctor")
    for name in NAMES:
        assert re.search(rf"^{re.escape(name)} ", out, re.M), f"doctor at {width}: {name} missing or cut"
    assert "some-organisation/a-rather-long-model-name-v2" in out  # in the table or listed below it, whole

    code, out, err = run_cli(
        "plan",
        "-f",
        prompts,
        "--models",
        catalog,
        "--gpu",
        "H100",
        "--scale-to",
        "1000000",
        "--gpus",
        "1,8,64",
    )
    assert code == 0, err
    _check(out, width, "plan")
    assert "per image" in out and "makespan" in out


def test_one_number_format() -> None:
    assert fmt_number(0.07961377280000001) == "0.0796"
    assert fmt_number(1.72e4) == "17,200" and fmt_number(17213.4) == "17,213"
    assert fmt_number(7.5) == "7.5" and fmt_number(5.0) == "5" and fmt_number(0) == "0"
    assert fmt_number(-1e-12) == "0" and fmt_number(float("nan")) == "-" and fmt_number(None) == "-"
    assert fmt_tflops(0.000412) == "0.000412" and fmt_tflops(4.2133) == "4.21" and fmt_tflops(687.2) == "687"
    assert fmt_tflops(0) == "-"  # unknown, not "0.00"
    assert fmt_fixed(-0.0001, 3) == "0.000" and fmt_fixed(0.1234, 3, signed=True) == "+0.123"
    assert (
        fmt_value({"quality": 0.07961377280000001, "seed": 7, "size": [512, 512]})
        == "quality: 0.0796138, seed: 7, size: 512, 512"
    )
