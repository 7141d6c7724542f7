"""Progress on every long step (issue 10, item 11), off a terminal: real runs of a few hundred prompts through
the real CLI with the line interval at 0 (``CATIMG_PROGRESS_EVERY=0``: a line on every update) print periodic
one-line progress on stderr and nothing on stdout but the --json document."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import tiny
from harness import run_cli

LINE = re.compile(r"^(?P<label>[a-z][^:]*): (?P<done>[\d,]+)/(?P<total>[\d,]+) \((?P<pct>\d+)%\), .+ elapsed")


def _lines(err: str, label: str) -> list[tuple[int, int]]:
    out = []
    for line in err.splitlines():
        m = LINE.match(line)
        if m and m["label"].startswith(label):
            out.append((int(m["done"].replace(",", "")), int(m["total"].replace(",", ""))))
    return out


def _prompts(n: int, offset: int = 0) -> list[str]:
    from catimg.benchmarks.cli_speed import make_prompts

    return make_prompts(offset + n)[offset:]


@pytest.fixture(autouse=True)
def _fresh_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new default encoder, so its embedding cache is this test's (CATIMG_CACHE_DIR), not an earlier
    test's."""
    monkeypatch.setattr("catimg.routing.encoder._DEFAULT", None)


def test_explain_embedding_progress_lines_off_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CATIMG_PROGRESS_EVERY", "0")
    f = tmp_path / "prompts.txt"
    f.write_text("\n".join(_prompts(300)) + "\n", encoding="utf-8")
    code, out, err = run_cli("explain", "-f", f, "--json")
    assert code == 0, err
    assert len(json.loads(out)["prompts"]) == 300  # stdout is the one JSON document
    lines = _lines(err, "embedding prompts")
    assert lines and all(total == 300 for _, total in lines), err
    done = [d for d, _ in lines]
    assert done == sorted(done) and done[0] < 300 and done[-1] == 300 and len(done) >= 5  # batches of 64
    assert "about" in err and "left" in err  # an ETA while it runs
    assert re.search(r"^embedding prompts: 300/300 done in ", err, re.M)

    code, out, err = run_cli(
        "explain", "-f", f, "--json"
    )  # all cached now: nothing to embed, nothing printed
    assert code == 0 and not _lines(err, "embedding prompts") and "embedding" not in err


def test_train_and_eval_progress_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATIMG_PROGRESS_EVERY", "0")
    scores = {"sdxl-turbo": (3.5, 2.5, 0.4), "sd21": (3.4, 3.3, 4.0), "sdxl": (3.6, 3.5, 12.0)}
    train_csv = tiny.write_measurements(tmp_path / "train.csv", scores, n=300)
    code, out, err = run_cli("train", "-M", train_csv, "--out", tmp_path / "router", "--json")
    assert code == 0, err
    assert json.loads(out)["router"].endswith("router")
    lines = _lines(err, "embedding prompts")
    assert lines and lines[-1] == (300, 300) and all(t == 300 for _, t in lines), err

    both = tiny.write_measurements(tmp_path / "eval.csv", scores, n=500)  # 200 prompts the router never saw
    code, out, err = run_cli("eval", "--router", tmp_path / "router", "-M", both)
    assert code == 0, err
    lines = _lines(err, "embedding prompts")
    assert lines and lines[-1] == (200, 200), err  # only the prompts not embedded before
    # item 15: prompts seen in training are not called held-out
    assert "300 of the 500 prompts are in the router's training data" in err
    assert "held-out prompts" not in out and "500 prompts of" in out and "not held out" in out


def test_calibrate_progress_lines(
    tmp_path: Path, tiny_sd_dir: Path, tiny_clip_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CATIMG_PROGRESS_EVERY", "0")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"a red cube number {i}" for i in range(6)) + "\n", encoding="utf-8")
    models = tmp_path / "models.toml"
    models.write_text(
        f'[generators.fast]\nsource = "{tiny_sd_dir}"\nsteps = 1\nguidance = 1.0\nwidth = 64\n'
        "height = 64\ncost_seconds = 0.05\n",
        encoding="utf-8",
    )
    code, out, err = run_cli(
        "calibrate",
        "--prompts",
        prompts,
        "--models",
        models,
        "--db",
        tmp_path / "cal.sqlite",
        "--scorer-model",
        tiny_clip_dir,
        "--out",
        tmp_path / "imgs",
        "--device",
        "cpu",
        "--json",
    )
    assert code == 0, err
    assert json.loads(out)["recorded"] == 6
    done = [d for d, t in _lines(err, "calibrating") if t == 6]
    assert done and done[-1] == 6 and done == sorted(done), err
    assert re.search(r"^calibrating[^:]*: 6/6 done in ", err, re.M)


def test_quiet_when_off_or_quick(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from catimg.cli.progress import StepProgress

    monkeypatch.setenv("CATIMG_PROGRESS", "0")
    with StepProgress("working", 10, tty=False) as p:
        for _ in range(10):
            p.advance()
    monkeypatch.delenv("CATIMG_PROGRESS")
    with StepProgress("working", 10, tty=False) as p:  # default: a line every 10 s; this takes far less
        for _ in range(10):
            p.advance()
    monkeypatch.setattr("catimg.cli.progress.TTY_AFTER_S", 0.0)
    monkeypatch.setattr("sys.stderr", io.StringIO())  # a "terminal" bar: drawn on stderr, never stdout
    with StepProgress("working", 10, tty=True) as p:
        for _ in range(10):
            p.advance()
        assert p._bar is not None
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_gen_dry_run_embedding_progress_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATIMG_PROGRESS_EVERY", "0")
    f = tmp_path / "prompts.txt"
    f.write_text("\n".join(_prompts(200, offset=300)) + "\n", encoding="utf-8")
    code, out, err = run_cli("gen", "-f", f, "--dry-run", "--json", "--out", tmp_path / "o")
    doc = json.loads(out)  # stdout is the one JSON document
    assert len(doc["routing"]["prompts"]) == 200, (code, err)
    lines = _lines(err, "embedding prompts")
    assert lines and lines[-1] == (200, 200), err
