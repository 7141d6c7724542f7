"""catimg.errors: the exit statuses, first_line on awkward exceptions, one dtype list, shared CLI options."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from catimg import errors
from catimg.errors import CatimgError, ExitStatus, first_line


def test_every_error_class_exits_with_its_documented_status() -> None:
    expected = {
        "CatimgError": 1,
        "ConfigError": 2,
        "InputError": 2,
        "RouterError": 3,
        "MeasurementsError": 4,
        "DeviceError": 5,
        "WeightsMissingError": 6,
        "GenerationError": 7,
        "StoreError": 8,
    }
    classes = {n: c for n, c in vars(errors).items() if isinstance(c, type) and issubclass(c, CatimgError)}
    assert {n: int(c.exit_code) for n, c in classes.items()} == expected
    assert all(isinstance(c.exit_code, ExitStatus) for c in classes.values())


def test_readme_exit_code_table_lists_every_status() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Exit codes", 1)[1].split("\n#", 1)[0]
    documented = {int(m) for m in re.findall(r"^\| (\d+) \|", section, flags=re.M)}
    assert documented == {int(s) for s in ExitStatus if s != ExitStatus.OK}


class _Silent(Exception):
    pass


class _BrokenStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


@pytest.mark.parametrize(
    ("exc", "plain", "typed"),
    [
        (OSError("disk full\nmore detail"), "disk full", "OSError: disk full"),
        (ValueError("\n\n  bad value  \nsecond"), "bad value", "ValueError: bad value"),
        (_Silent(), "_Silent", "_Silent"),  # empty message: the class name, not an IndexError
        (KeyError(""), "''", "KeyError: ''"),
        (RuntimeError("   \n  "), "RuntimeError", "RuntimeError"),
        (_BrokenStr(), "_BrokenStr", "_BrokenStr"),
    ],
)
def test_first_line(exc: BaseException, plain: str, typed: str) -> None:
    assert first_line(exc) == plain
    assert first_line(exc, typed=True) == typed


def test_first_line_cuts_to_the_limit() -> None:
    exc = RuntimeError("x" * 500 + "\nsecond line")
    assert first_line(exc, limit=120) == "x" * 120
    assert first_line(exc, typed=True, limit=5) == "RuntimeError: xxxxx"


def test_one_dtype_list_for_catalog_cli_and_device() -> None:
    from catimg.cli import common
    from catimg.device import DTYPES, cpu_device, default_dtype

    assert all(default_dtype(cpu_device(), d) in DTYPES for d in DTYPES)
    help_text = common.DTYPE_OPT.help or ""
    assert all(d in help_text for d in DTYPES)


def test_check_choice_names_the_option_value_and_closest_choice() -> None:
    from catimg.cli.common import ENGINES, check_choice
    from catimg.errors import InputError

    check_choice("--engine", None, ENGINES)
    check_choice("--engine", "ray", ENGINES)
    with pytest.raises(
        InputError, match=r'--engine "rya" is unknown \(did you mean "ray"\?\); use local or ray'
    ):
        check_choice("--engine", "rya", ENGINES)


@pytest.mark.parametrize("command", ["gen", "calibrate"])
def test_unknown_dtype_is_bad_input_in_every_command(command: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from catimg.cli import app
    from catimg.errors import InputError

    res = CliRunner().invoke(
        app,
        [command, "--dtype", "fp61", "--out", str(tmp_path / "o"), *(["a cat"] if command == "gen" else [])],
    )
    assert isinstance(res.exception, InputError), res.output
    assert res.exception.exit_code == ExitStatus.BAD_INPUT
    assert str(res.exception).startswith('--dtype "fp61" is unknown (did you mean "fp16"?)')


def test_run_cli_is_the_console_entry_point() -> None:
    """tests/harness.run_cli gives what the installed `catimg` script gives: exit code, stdout, stderr."""
    import os
    import shutil
    import subprocess
    import sys

    from harness import run_cli

    script = shutil.which("catimg", path=os.path.dirname(sys.executable)) or shutil.which("catimg")
    if script is None:
        pytest.skip("the catimg console script is not installed (pip install -e .)")

    for args in (
        ["explain"],
        ["gen", "a cat", "--engine", "rya"],
        ["explain", "x", "--budget", "cheap"],
        ["models", "--bogus-option"],
        ["--version"],
    ):
        code, out, err = run_cli(*args)
        proc = subprocess.run(
            [script, *args], capture_output=True, text=True, env=os.environ.copy(), timeout=120
        )
        assert (code, out, err) == (proc.returncode, proc.stdout, proc.stderr), args
    assert run_cli("explain")[0] == ExitStatus.BAD_INPUT
    assert run_cli("--version")[0] == ExitStatus.OK
