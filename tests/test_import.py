"""Nothing heavy at import time: the CLI module and `catimg --help` leave torch, diffusers and transformers out."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "diffusers", "transformers", "safetensors", "ray")


def test_importing_cli_leaves_heavy_modules_unimported() -> None:
    code = (
        "import sys, catimg.cli\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported at CLI import time: {out.stdout.strip()}"


def test_help_runs_without_heavy_imports() -> None:
    code = (
        "import sys\n"
        "from catimg.cli import app\n"
        "from typer.testing import CliRunner\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_python_dash_m_entry_point() -> None:
    out = subprocess.run([sys.executable, "-m", "catimg", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("catimg ")
