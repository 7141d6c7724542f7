"""Issue 10 ("a user's first hour") through the real entry point (``python -m catimg`` in a subprocess): JSON
errors on stdout, Ctrl-C at any moment, missing weights named at once, the smaller CLI items."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def _cli(*args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "catimg", *args], capture_output=True, text=True, timeout=timeout,
                          input=stdin)


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["explain", "", "--json"], 2, "prompt"),  # a CatimgError
        (["gen", "a cat", "--json", "--dtype", "fp17"], 2, "--dtype"),  # a CatimgError found before any work
        (["explain", "a cat", "--json", "--neighbours", "99"], 2, "--neighbours"),  # a usage error from click
        (["explain", "a cat", "--json", "--router", "/nonexistent/router"], 3, "/nonexistent/router"),
    ],
)
def test_json_errors_are_one_json_object_on_stdout(args: list[str], code: int, needle: str) -> None:
    proc = _cli(*args)
    assert proc.returncode == code, proc.stderr
    doc = json.loads(proc.stdout)  # stdout is exactly one JSON document
    assert doc == {"error": {"code": code, "message": doc["error"]["message"]}} and needle in doc["error"]["message"]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "Traceback" not in proc.stderr


def test_without_json_stdout_stays_empty_on_error() -> None:
    proc = _cli("explain", "")
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.startswith("error:")


def test_dry_run_json_with_missing_weights_is_still_one_document(tmp_path: Path) -> None:
    models = tmp_path / "models.toml"
    models.write_text('[generators.x]\nsource = "org/not-downloaded"\nsteps = 4\ncost_seconds = 1.0\n')
    proc = _cli("gen", "a cat", "--models", str(models), "--generator", "x", "--dry-run", "--json",
                "--out", str(tmp_path / "o"))
    assert proc.returncode == 6, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["plan"][0]["generator"] == "x" and doc["error"]["code"] == 6 and "org/not-downloaded" in doc["error"]["message"]
