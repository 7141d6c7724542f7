"""Issue 10, item 15 (the smaller ones), through the real CLI: help without ``<bool>`` and without sentences
broken by the docstring's line breaks, examples for `measurements`, ``-f -`` (prompts from stdin), an empty
prompt, doctor's fetch commands, import counts, and a generator renamed in models.toml."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny
from harness import run_cli

from catimg.config import PACKAGED_MODELS


@pytest.mark.parametrize(
    "command", [["gen"], ["eval"], ["explain"], ["doctor"], ["train"], ["measurements", "import"]]
)
def test_help_has_no_bool_metavar_and_whole_sentences(
    command: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # wide enough that every paragraph fits on one line
    code, out, _ = run_cli(*command, "--help")
    assert code == 0
    assert "<bool>" not in out
    assert "--help" in out and "Show this message and exit." in out
    from catimg.cli import app
    from catimg.cli.lazy import load_command, reflow

    cmd = load_command(app, command[0])
    if len(command) > 1:
        cmd = cmd.commands[command[1]]
    for para in (reflow(cmd.help) or "").split("\n\n"):
        if para and not para.startswith("  ") and len(para) < 230:  # a prose paragraph: one line of the help
            assert any(para in line for line in out.splitlines()), f"broken paragraph in {command}: {para!r}"


def test_root_help_has_no_bool_metavar() -> None:
    code, out, _ = run_cli("--help")
    assert code == 0 and "<bool>" not in out and "--version" in out


def test_measurements_help_has_examples() -> None:
    code, out, _ = run_cli("measurements", "--help")
    assert code == 0 and "Examples:" in out
    assert "catimg measurements export scores.csv" in out and "catimg measurements import" in out


def test_prompts_from_stdin_for_explain_and_gen(tmp_path: Path) -> None:
    stdin = "# my prompts\na red cube\n\na lighthouse at dusk\n"
    code, out, err = run_cli("explain", "-f", "-", "--json", stdin=stdin)
    assert code == 0, err
    assert [p["prompt"] for p in json.loads(out)["prompts"]] == ["a red cube", "a lighthouse at dusk"]
    code, out, err = run_cli("gen", "-f", "-", "--dry-run", "--json", "--out", tmp_path / "o", stdin=stdin)
    doc = json.loads(out)
    assert len(doc["routing"]["prompts"]) == 2, (code, err)
    code, out, err = run_cli("explain", "-f", "-", stdin="# nothing\n\n")
    assert code == 2 and "standard input (-f -): no prompts" in err and err.count("\n") == 1


@pytest.mark.parametrize("command", ["explain", "gen"])
def test_empty_prompt_says_so(command: str) -> None:
    code, _out, err = run_cli(command, "")
    assert code == 2 and "the prompt is empty" in err and "catimg gen" not in err
    code, _out, err = run_cli(command, "a cat", "  ")
    assert code == 2 and "prompt 2 of 2 is empty" in err


def test_doctor_prints_the_fetch_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    code, out, err = run_cli("doctor")
    assert code == 0, err
    assert "offline: cannot generate" not in out
    flat = " ".join(out.split())
    assert "downloads are off, so `catimg gen` will not fetch them (--allow-download does)" in flat
    for source in (
        "stabilityai/sdxl-turbo",
        "stabilityai/stable-diffusion-2-1",
        "stabilityai/stable-diffusion-xl-base-1.0",
    ):
        assert f"  hf download {source}\n" in out  # one command a line, ready to copy
    assert (
        "hf download stable-diffusion-v1-5/stable-diffusion-v1-5" not in out
    )  # disabled: gen does not need it
    monkeypatch.setenv("CATIMG_ALLOW_DOWNLOAD", "1")
    code, out, _ = run_cli("doctor")
    assert "downloads are allowed, so `catimg gen` fetches them when first used" in " ".join(out.split())
    monkeypatch.delenv("CATIMG_ALLOW_DOWNLOAD")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, _ = run_cli("doctor")
    assert "HF_HUB_OFFLINE is set" in " ".join(out.split()) and "hf download stabilityai/sdxl-turbo" in out


def test_import_reports_new_updated_unchanged(tmp_path: Path) -> None:
    csv = tiny.write_measurements(tmp_path / "m.csv", {"a": (3.0, 2.0, 0.5), "b": (3.5, 3.4, 4.0)}, n=60)
    db = tmp_path / "m.sqlite"
    code, out, err = run_cli("measurements", "import", csv, "--db", db)
    assert code == 0, err
    assert "120 scores: 120 new, 0 updated, 0 unchanged" in out
    code, out, _ = run_cli("measurements", "import", csv, "--db", db)
    assert "120 scores: 0 new, 0 updated, 120 unchanged (already in the database)" in out
    lines = csv.read_text().splitlines()
    lines[1] = lines[1].rsplit(",", 2)[0] + ",4.75," + lines[1].rsplit(",", 1)[1]  # one score changed
    csv.write_text("\n".join(lines) + "\n")
    code, out, _ = run_cli("measurements", "import", csv, "--db", db, "--json")
    assert {k: json.loads(out)[k] for k in ("scores", "new", "updated", "unchanged")} == {
        "scores": 120,
        "new": 0,
        "updated": 1,
        "unchanged": 119,
    }


def test_renamed_generator_is_recognised(tmp_path: Path) -> None:
    """sdxl-turbo renamed to turbo with the same settings: not silently "needs calibration"."""
    text = PACKAGED_MODELS.read_text(encoding="utf-8").replace(
        "[generators.sdxl-turbo]", "[generators.turbo]"
    )
    models = tmp_path / "models.toml"
    models.write_text(text, encoding="utf-8")
    code, out, err = run_cli("models", "--models", models)
    assert code == 0, err
    flat = " ".join(out.split())
    assert "known as sdxl-turbo" in flat
    assert (
        "turbo: known to the router as sdxl-turbo (same settings, another name), so it is not routed; "
        'rename it back to "sdxl-turbo" in'
        in flat
        and "or retrain the router (`catimg train`)" in flat
    )
    code, out, _ = run_cli("doctor", "--models", models, "--json")
    row = next(g for g in json.loads(out)["generators"] if g["name"] == "turbo")
    assert row["router_name"] == "sdxl-turbo" and row["router_knows"] is False
    code, out, _ = run_cli("doctor", "--models", models)
    assert "known to the router as sdxl-turbo" in " ".join(out.split())
    code, out, err = run_cli("explain", "a red cube", "--models", models, "--json")
    assert code == 0, err
    assert json.loads(out)["renamed"] == {"turbo": "sdxl-turbo"}
    code, out, _ = run_cli("explain", "a red cube", "--models", models)
    assert "turbo: known to the router as sdxl-turbo" in " ".join(out.split())
