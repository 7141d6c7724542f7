"""Issue 10 ("a user's first hour") through the real entry point (``python -m catimg`` in a subprocess): JSON
errors on stdout, Ctrl-C at any moment, missing weights named at once, the smaller CLI items."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def _cli(*args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "catimg", *args], capture_output=True, text=True, timeout=timeout, input=stdin
    )


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
    assert (
        doc == {"error": {"code": code, "message": doc["error"]["message"]}}
        and needle in doc["error"]["message"]
    )
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "Traceback" not in proc.stderr


def test_without_json_stdout_stays_empty_on_error() -> None:
    proc = _cli("explain", "")
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.startswith("error:")


def test_dry_run_json_with_missing_weights_is_still_one_document(tmp_path: Path) -> None:
    models = tmp_path / "models.toml"
    models.write_text('[generators.x]\nsource = "org/not-downloaded"\nsteps = 4\ncost_seconds = 1.0\n')
    proc = _cli(
        "gen",
        "a cat",
        "--models",
        str(models),
        "--generator",
        "x",
        "--dry-run",
        "--json",
        "--out",
        str(tmp_path / "o"),
    )
    assert proc.returncode == 6, proc.stderr
    doc = json.loads(proc.stdout)
    assert (
        doc["plan"][0]["generator"] == "x"
        and doc["error"]["code"] == 6
        and "org/not-downloaded" in doc["error"]["message"]
    )


def _interrupt_models(tmp_path: Path, tiny_sd_dir: Path) -> Path:
    models = tmp_path / "models.toml"
    models.write_text(
        f'[generators.sd]\nsource = "{tiny_sd_dir}"\nsteps = 2\nguidance = 2.0\nwidth = 64\nheight = 64\n'
    )
    return models


@pytest.mark.parametrize("delay", [0.3, 1.0, 2.0])
def test_ctrl_c_at_start_up_ends_with_130_and_one_line(
    delay: float, tmp_path: Path, tiny_sd_dir: Path
) -> None:
    """SIGINT while the command is still importing, loading or routing: exit 130, one line, no traceback.

    ``delay`` counts from the moment catimg's own code runs (the test-only ready file): earlier, in the
    interpreter's first milliseconds, no program can act on Ctrl-C, and on a loaded machine that window alone
    can exceed 0.3 s."""
    import os
    import signal
    import time

    from catimg.interrupts import TEST_READY_ENV

    models = _interrupt_models(tmp_path, tiny_sd_dir)
    ready = tmp_path / "ready"
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "catimg",
            "gen",
            "a cat",
            "--models",
            str(models),
            "--generator",
            "sd",
            "-n",
            "400",
            "--out",
            str(tmp_path / "o"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, TEST_READY_ENV: str(ready)},
    )
    hang_guard = time.monotonic() + 120
    while not ready.exists():
        assert p.poll() is None and time.monotonic() < hang_guard, p.communicate()[1]
        time.sleep(0.005)
    time.sleep(delay)
    assert p.poll() is None, "the run ended before the interrupt"  # 400 images take far longer than 2 s
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted"), err
    assert "Traceback" not in err and "Exception ignored" not in err


_NESTED_EVAL = """
import ctypes, sys
from catimg import interrupts
from catimg.cli import main

run = ctypes.pythonapi.PyRun_String
run.restype = ctypes.py_object
run.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.py_object, ctypes.py_object]
armed = interrupts.arm


def arm_then_interrupt_inside_nested_eval():
    armed()
    scope = {"__builtins__": __builtins__}
    # what an extension does while it is imported: Python code run through PyRun_String;
    # Ctrl-C arrives inside it
    code = b"import os, signal\\nos.kill(os.getpid(), signal.SIGINT)\\nfor _ in range(10**6): pass\\n"
    run(code, 257, scope, scope)


interrupts.arm = arm_then_interrupt_inside_nested_eval
sys.argv = ["catimg", "models"]
main()
"""


def test_ctrl_c_inside_an_extensions_nested_eval_still_exits_130(tmp_path: Path) -> None:
    """CPython marks a KeyboardInterrupt that left PyRun_String code as unhandled even after main caught it,
    and `python -m` then dies by SIGINT (-2): the intermittent start-up failure, made deterministic here."""
    pkg = tmp_path / "nested_eval"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(_NESTED_EVAL)
    p = subprocess.run(
        [sys.executable, "-m", "nested_eval"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 130, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted"), p.stderr


def test_ctrl_c_mid_run_says_what_was_made_and_how_to_resume(tmp_path: Path, tiny_sd_dir: Path) -> None:
    import signal
    import time

    from catimg.generation.output import TEST_PAUSE_ENV

    models = _interrupt_models(tmp_path, tiny_sd_dir)
    out = tmp_path / "o"
    env = dict(__import__("os").environ, **{TEST_PAUSE_ENV: "2"})
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "catimg",
            "gen",
            "a cat",
            "--models",
            str(models),
            "--generator",
            "sd",
            "-n",
            "5",
            "--batch-size",
            "1",
            "--seed",
            "3",
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    man, hang_guard = out / "manifest.jsonl", time.monotonic() + 600
    while p.poll() is None and not (man.exists() and man.read_bytes().count(b"\n") >= 2):
        assert time.monotonic() < hang_guard
        time.sleep(0.02)  # paused for good after its second record
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"interrupted: 2 image(s) made by this run are kept in {out}"
    )
    assert lines[0].split("resume with: ")[1].startswith("catimg gen") and "--resume" in lines[0]


def test_an_interrupt_swallowed_inside_del_is_not_lost(tmp_path: Path) -> None:
    """A KeyboardInterrupt raised inside __del__ is dropped by Python ("Exception ignored ..."): catimg keeps
    it."""
    script = tmp_path / "s.py"
    script.write_text(
        "import gc, os, signal, sys\n"
        "from catimg import interrupts\n"
        "interrupts.install(); interrupts.arm()\n"
        "class A:\n"
        "    def __del__(self):\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        for _ in range(1000): pass  # the handler runs here, inside __del__\n"
        "A(); gc.collect()\n"
        "print('still running', interrupts.requested())\n"
        "try:\n"
        "    interrupts.check()\n"
        "except KeyboardInterrupt:\n"
        "    print('raised again')\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.stdout.split("\n")[:2] == ["still running True", "raised again"], proc.stdout + proc.stderr
    assert "Exception ignored" not in proc.stderr and "KeyboardInterrupt" not in proc.stderr


def test_missing_weights_named_at_once_before_torch_is_imported(tmp_path: Path) -> None:
    """The packaged catalog with an empty cache: every model in one line, with its size and `hf download`."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\na crowded market street\n")
    script = (
        "import sys\nfrom catimg.cli import main\n"
        f"sys.argv = ['catimg', 'gen', '-f', {str(prompts)!r}, '--out', {str(tmp_path / 'o')!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n"
        "    print(e.code, 'torch' in sys.modules, 'diffusers' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["6", "False", "False"], proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    for model in ("stabilityai/sdxl-turbo", "stabilityai/stable-diffusion-xl-base-1.0"):
        assert f"`hf download {model}`" in lines[0]
    assert "weights of 3 models" in lines[0] and " GB" in lines[0] and "huggingface-cli" not in lines[0]
    assert not (tmp_path / "o").exists()


def test_forced_generator_with_missing_weights_stops_before_torch(tmp_path: Path) -> None:
    script = (
        "import sys\nfrom catimg.cli import main\n"
        f"sys.argv = ['catimg', 'gen', 'a cat', '--generator', 'sdxl', '--out', {str(tmp_path / 'o')!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    print(e.code, 'torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["6", "False"], proc.stdout + proc.stderr
    assert "`hf download stabilityai/stable-diffusion-xl-base-1.0`" in proc.stderr and "GB" in proc.stderr


def _dry_run_seconds(tmp_path: Path, *extra: str) -> tuple[float, float]:
    proc = _cli(
        "gen",
        "a cat",
        "--generator",
        "sdxl-turbo",
        "--dry-run",
        "--json",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "o"),
        *extra,
    )
    doc = json.loads(proc.stdout)  # the plan, with the missing-weights error in it (exit 6)
    assert proc.returncode == 6 and doc["error"]["code"] == 6
    cost = doc["routing"]["costs"]["sdxl-turbo"]
    assert doc["plan"][0]["predicted_seconds"] == cost["seconds"]  # the plan uses the cost routing used
    return cost["seconds"], cost["tflops"]


def test_costs_follow_the_size_and_batch_actually_used(tmp_path: Path) -> None:
    s512, t512 = _dry_run_seconds(tmp_path, "--width", "512")
    s1024, t1024 = _dry_run_seconds(tmp_path, "--width", "1024")
    square, _ = _dry_run_seconds(tmp_path, "--width", "1024", "--height", "1024")
    assert s1024 > s512 and t1024 > t512 and square > s1024
    batched, tb = _dry_run_seconds(tmp_path, "--width", "512", "--batch-size", "4")
    assert batched < s512 and tb == t512  # 4 images a call share the launch overhead, not the FLOPs
