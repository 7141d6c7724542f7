"""`catimg train` and `catimg eval` through the real CLI, including the contract outside checks rely on."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from harness import run_cli
from test_router import SUBJECTS, write_case
from typer.testing import CliRunner

from catimg.cli import app
from catimg.config import load_catalog
from catimg.errors import ConfigError
from catimg.measurements import read_measurements
from catimg.training.train import train_router

runner = CliRunner()


def run(*args: str) -> tuple[int, str]:
    """(exit code, stdout + stderr) of the real entry point (tests/harness.py)."""
    code, out, err = run_cli(*args)
    return code, out + err


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli")


def test_contract_train_then_explain(case: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    models, m = write_case(case)  # prompt,generator,score,seconds for Hub ids that are not downloaded
    code, out = run("train", "--measurements", str(m), "--models", str(models), "--out", str(case / "r"))
    assert code == 0, out
    assert "Trained a lexical router on 44 prompts" in out and "Budget levels" in out and "oracle" in out
    from catimg.routing.router import load_router

    r = load_router(case / "r")
    assert r.generators == ["cheap", "dear"]
    prompts = tmp_path / "p.txt"
    prompts.write_text(
        "# two prompts\na zebra on a white background\n\na zebra in a crowded street full of people\n",
        encoding="utf-8",
    )
    code, out = run(
        "explain",
        "-f",
        str(prompts),
        "--router",
        str(case / "r"),
        "--models",
        str(models),
        "--budget",
        "low",
        "--json",
        "--device",
        "cpu",
    )
    assert code == 0, out
    doc = json.loads(out)
    assert [p["prompt"] for p in doc["prompts"]] == [
        "a zebra on a white background",
        "a zebra in a crowded street full of people",
    ]
    for p in doc["prompts"]:
        assert p["choice"] in ("cheap", "dear")
        assert {g["name"] for g in p["generators"]} == {"cheap", "dear"}
        assert all(
            isinstance(g["predicted_quality"], float) and g["cost_seconds"] > 0 for g in p["generators"]
        )


def test_train_json_and_knn(case: Path, tmp_path: Path) -> None:
    models, m = write_case(tmp_path, seconds=False)
    code, out = run(
        "train",
        "-M",
        str(m),
        "--models",
        str(models),
        "--out",
        str(tmp_path / "k"),
        "--predictor",
        "knn",
        "--json",
    )
    assert code == 0, out
    doc = json.loads(out)
    assert doc["predictor"]["name"] == "knn" and doc["cost_unit"] == "tflops"
    assert doc["budget"]["levels"]["max"] == 0.0


def test_train_costs_from_explicit_seconds_or_a_clear_error(tmp_path: Path) -> None:
    """Without a seconds column: every generator's cost_seconds from models.toml (what explain routes by),
    even for a source with no FLOP estimate; one such source without it is an error before any embedding."""
    models, m = write_case(tmp_path, seconds=False)
    unknown = models.read_text(encoding="utf-8").replace("stabilityai/sdxl-turbo", "someone/own-model")
    models.write_text(
        unknown.replace("[generators.dear]", "cost_seconds = 2.0\n\n[generators.dear]")
        + "cost_seconds = 10.0\n",
        encoding="utf-8",
    )
    code, out = run("train", "-M", str(m), "--models", str(models), "--out", str(tmp_path / "r"), "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["cost_unit"] == "seconds"
    assert [(g["cost"], g["cost_kind"]) for g in doc["generators"]] == [
        (2.0, "explicit seconds"),
        (10.0, "explicit seconds"),
    ]
    # the unknown source's cost_seconds alone: the dear generator is in TFLOPs, the cheap one has none
    models.write_text(
        unknown.replace("[generators.dear]", "cost_seconds = 2.0\n\n[generators.dear]"), "utf-8"
    )
    code, out = run("train", "-M", str(m), "--models", str(models), "--out", str(tmp_path / "r2"))
    assert code == 2 and "Traceback" not in out
    assert "[generators.cheap]: no FLOP estimate" in out and "cost_tflops" in out
    assert not (tmp_path / "r2").exists()
    # and before the prompts are embedded: no training stage has begun
    cat = load_catalog(models)
    stages: list[str] = []
    with pytest.raises(ConfigError, match="no FLOP estimate"):
        train_router(
            read_measurements(m, known_generators=cat.names), cat, tmp_path / "r3", progress=stages.append
        )
    assert stages == []


def test_train_on_prompts_scored_by_one_generator_each(tmp_path: Path) -> None:
    """Measurements as gen --score collects them: the router trains and its data card says why there are no
    held-out numbers."""
    models, m = write_case(tmp_path)
    with m.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    prompts = list(dict.fromkeys(r[0] for r in rows[1:]))
    keep = {p: ("cheap", "dear")[i % 2] for i, p in enumerate(prompts)}  # alternate prompts, one score each
    with m.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([rows[0], *(r for r in rows[1:] if keep[r[0]] == r[1])])
    code, out, err = run_cli(
        "train", "-M", str(m), "--models", str(models), "--out", str(tmp_path / "r"), "--json"
    )
    assert code == 0, out + err
    card = json.loads(out)["data_card"]
    held_out = card["held_out"]
    assert "(0 < 20)" in held_out["note"] and "the KNN share is 0.40" in held_out["note"]
    # what can be checked without a prompt scored twice: the out-of-fold error on every score, no pairs; a
    # router that clearly misses the scores by more than the generators' mean scores says so (stderr, card)
    check = held_out["sparse_check"]
    assert check["n_scores"] == len(prompts) and check["n_pairs"] == 0 and check["order"] is None
    assert check["rmse"] > 0 and check["rmse_means"] > 0
    warned = [w for w in card["warnings"] if "has not learned from these prompts yet" in w]
    assert len(warned) == int(check["worse"])
    assert all(w in err for w in warned)


def test_train_with_few_complete_prompts_checks_pairs_out_of_fold(tmp_path: Path) -> None:
    """12 prompts scored on both generators (too few for routing numbers), the rest on one: the data card
    and the output say how the router orders the pairs it can check, against the generators' mean scores."""
    models, m = write_case(tmp_path)
    with m.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    prompts = list(dict.fromkeys(r[0] for r in rows[1:]))
    keep = {p: ("cheap", "dear", "both")[2 if i < 12 else i % 2] for i, p in enumerate(prompts)}
    with m.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([rows[0], *(r for r in rows[1:] if keep[r[0]] in (r[1], "both"))])
    code, out = run("train", "-M", str(m), "--models", str(models), "--out", str(tmp_path / "r"))
    assert code == 0, out
    assert "(12 < 20)" in out and "pairs of generators on a prompt ordered as measured" in out
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    check = cfg["data_card"]["held_out"]["sparse_check"]
    assert check["n_scores"] == len(prompts) + 12 and 0 < check["n_pairs"] <= 12
    assert 0.0 <= check["order"] <= 1.0 and 0.0 <= check["order_means"] <= 1.0


def test_sparse_held_out_warns_when_the_router_orders_worse_than_the_means() -> None:
    from catimg.routing.predictor import KNNPredictor
    from catimg.training.crossval import Fitted
    from catimg.training.train import _sparse_held_out

    y = np.array([[0.2, 0.8], [0.1, 0.9], [0.3, np.nan], [np.nan, 0.7]])
    fitted = Fitted(KNNPredictor(), None, 0.0)
    section, warnings = _sparse_held_out(fitted, np.nan_to_num(y[:, ::-1]), y, 2)
    assert section["sparse_check"]["order"] == 0.0 and section["sparse_check"]["order_means"] == 1.0
    assert len(warnings) == 1 and "orders 0 % of 2 pairs" in warnings[0]
    assert "mean scores 100 %" in warnings[0] and "route worse than ignoring the prompt" in warnings[0]
    assert _sparse_held_out(fitted, np.nan_to_num(y), y, 2)[1] == []


def test_train_knn_share_and_seed(tmp_path: Path) -> None:
    """--knn-share fixes lexical's share instead of fitting it; --seed makes runs repeatable; bad values are
    one-line errors (exit 2)."""
    models, m = write_case(tmp_path, seconds=False)
    base = ("train", "-M", str(m), "--models", str(models))
    code, out = run(*base, "--out", str(tmp_path / "fixed"), "--knn-share", "0.7", "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["predictor"]["params"]["weight"] == 0.7
    assert "was fitted" not in json.dumps(doc["data_card"]["held_out"])
    code, out = run(*base, "--out", str(tmp_path / "fitted"), "--json")
    assert code == 0, out
    fitted = json.loads(out)
    assert fitted["predictor"]["params"]["weight"] != 0.7
    assert "was fitted" in json.dumps(fitted["data_card"]["held_out"])
    runs = {}
    for seed, name in (("5", "s5a"), ("5", "s5b"), ("6", "s6")):
        code, out = run(*base, "--out", str(tmp_path / name), "--seed", seed, "--json")
        assert code == 0, out
        doc = json.loads(out)
        card = doc["data_card"]
        del doc["router"], card["training_seconds"], card["trained_at"]  # the folder and the clock
        runs[name] = doc
    # the seed picks the cross-validation folds: the same seed, the same router; another, other folds
    assert runs["s5a"] == runs["s5b"]
    assert runs["s6"]["data_card"]["held_out"] != runs["s5a"]["data_card"]["held_out"]
    code, out = run(*base, "--out", str(tmp_path / "bad"), "--knn-share", "1.5")
    assert code == 2 and "--knn-share 1.5: must be a share between 0 and 1" in out and "Traceback" not in out
    code, out = run(*base, "--out", str(tmp_path / "bad"), "--knn-share", "0.5", "-p", "ridge")
    assert code == 2 and "--predictor ridge has no nearest-neighbour part" in out
    assert not (tmp_path / "bad").exists()


def test_train_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    models, m = write_case(tmp_path, seconds=False)
    args = (
        "train",
        "-M",
        str(m),
        "--models",
        str(models),
        "--out",
        str(tmp_path / "k"),
        "--predictor",
        "knn",
    )
    assert run(*args)[0] == 0
    code, out = run(*args)
    assert code == 2 and "holds a router; pass --force to overwrite it" in out
    assert run(*args, "--force")[0] == 0
    (tmp_path / "file").write_text("x", encoding="utf-8")
    code, out = run("train", "-M", str(m), "--models", str(models), "--out", str(tmp_path / "file"))
    assert code == 2 and "is a file; pass a folder path" in out


def test_train_handles_messy_measurements(tmp_path: Path) -> None:
    """Rows whose prompt differs only in case or white space are the same prompt (averaged), not new ones."""
    models, m = write_case(tmp_path, seconds=False)
    rows = m.read_text(encoding="utf-8").splitlines()
    first = rows[1].split(",")
    extra = [f"{first[0].upper()},{first[1]},{first[2]}", f"  {first[0]}  ,{first[1]},{first[2]}"]
    m.write_text("\n".join([*rows, *extra]) + "\n", encoding="utf-8")
    code, out = run("train", "-M", str(m), "--models", str(models), "--out", str(tmp_path / "r"), "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["data_card"]["n_prompts"] == len({r.split(",")[0] for r in rows[1:]})


def test_eval_table_json_and_plot(case: Path, tmp_path: Path) -> None:
    if not (case / "r").is_dir():
        pytest.skip("needs the router of the contract test")
    m = case / "m.csv"
    code, out = run("eval", "--router", str(case / "r"), "--measurements", str(m))
    assert code == 0, out
    for text in (
        "Single generators (score)",
        "dear (best)",
        "Routing: best single generator dear",
        "router (lexical)",
        "oracle",
        "random",
        "Budget levels on these prompts",
        "low",
        "max",
    ):
        assert text in out
    res = runner.invoke(app, ["eval", "--router", str(case / "r"), "--measurements", str(m), "--json"])
    assert res.exit_code == 0
    doc = json.loads(res.stdout)  # stdout holds only the JSON; the warning below goes to stderr
    assert doc["n_prompts"] == 2 * len(SUBJECTS) and doc["best_single"] == "dear"
    # evaluated on its own training prompts: the numbers are not held-out, and eval says so
    assert doc["seen_in_training"] == doc["n_prompts"]
    assert "are in the router's training data" in " ".join(res.stderr.split())
    names = [s["name"] for s in doc["summaries"]]
    assert names == ["router (lexical)", "oracle", "random"]
    oracle = doc["summaries"][1]
    assert oracle["cost_to_match_pct"] < 100 and oracle["auc"] >= doc["summaries"][2]["auc"]
    assert [lv["name"] for lv in doc["levels"]] == ["low", "medium", "high", "max"]
    costs = [lv["cost"] for lv in doc["levels"]]
    assert costs == sorted(costs)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        code, msg = run(
            "eval", "--router", str(case / "r"), "--measurements", str(m), "--plot", str(tmp_path / "c.png")
        )
        assert code != 0 and "matplotlib is not installed" in msg
    else:
        code, _ = run(
            "eval", "--router", str(case / "r"), "--measurements", str(m), "--plot", str(tmp_path / "c.png")
        )
        assert code == 0 and (tmp_path / "c.png").stat().st_size > 1000


def test_eval_warns_unknown_generators(case: Path, tmp_path: Path) -> None:
    if not (case / "r").is_dir():
        pytest.skip("needs the router of the contract test")
    clean = runner.invoke(
        app, ["eval", "--router", str(case / "r"), "--measurements", str(case / "m.csv"), "--json"]
    )
    assert clean.exit_code == 0 and "not in the router" not in clean.stderr
    m = tmp_path / "typo.csv"
    lines = (case / "m.csv").read_text(encoding="utf-8").splitlines()
    extra = [line.replace(",cheap,", ",chep,") for line in lines[1:] if ",cheap," in line][:5]
    m.write_text("\n".join(lines + extra + ['"a lone prompt",zzz,0.5,1.0']) + "\n", encoding="utf-8")
    res = runner.invoke(app, ["eval", "--router", str(case / "r"), "--measurements", str(m), "--json"])
    assert res.exit_code == 0, res.output
    warned = [
        w.strip() for w in " ".join(res.stderr.split()).split("warning: ")[1:] if "not in the router" in w
    ]
    assert warned == [f'{m}: generators not in the router, ignored: chep (did you mean "cheap"?), zzz']

    doc = json.loads(res.stdout)
    assert doc["ignored"] == ["chep", "zzz"] and doc["generators"] == ["cheap", "dear"]
    assert doc["n_prompts"] == json.loads(clean.stdout)["n_prompts"]


@pytest.mark.parametrize(
    ("csv_text", "message"),
    [
        ("prompt,generator\na,cheap\n", "m.csv: line 1: missing column score"),
        ("prompt,generator,score\na,cheap,high\n", "m.csv: line 2, column score: 'high' is not a number"),
        (
            "prompt,generator,score\na,chaep,1\n",
            'line 2, column generator: unknown generator "chaep" (did you mean "cheap"?)',
        ),
        ("", "m.csv: the measurements file is empty"),
    ],
)
def test_train_bad_measurements(tmp_path: Path, csv_text: str, message: str) -> None:
    models, _ = write_case(tmp_path)
    (tmp_path / "m.csv").write_text(csv_text, encoding="utf-8")
    code, msg = run(
        "train", "-M", str(tmp_path / "m.csv"), "--models", str(models), "--out", str(tmp_path / "o")
    )
    assert code == 4 and message in msg and "\n" not in msg.strip()


def test_bad_router_and_options(tmp_path: Path) -> None:
    models, m = write_case(tmp_path)
    code, msg = run("eval", "--router", str(tmp_path / "missing"), "--measurements", str(m))
    assert code == 3 and "router folder not found" in msg
    code, msg = run(
        "train", "-M", str(m), "--models", str(models), "--out", str(tmp_path / "o"), "--predictor", "knm"
    )
    assert code != 0 and 'did you mean "knn"' in msg
    code, msg = run("train", "--models", str(models), "--out", str(tmp_path / "o"))
    assert code == 2 and "give --measurements FILE (CSV or JSONL, repeatable) and/or --db PATH" in msg


def test_main_prints_one_line_without_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    models, _ = write_case(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,generator,score\na,cheap,x\n", encoding="utf-8")
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "catimg",
            "train",
            "-M",
            str(bad),
            "--models",
            str(models),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 4
    assert p.stderr.strip() == f"error: {bad}: line 2, column score: 'x' is not a number"
    assert "Traceback" not in p.stderr


def test_generator_names_with_spaces_and_slashes_train_and_route(tmp_path: Path) -> None:
    """Public sets name generators "SD 1.5" or by their Hub id: such names work from models.toml through the
    measurements file to explain, and image files get a safe form of them."""
    from catimg.generation.output import image_filename

    models, m = write_case(tmp_path)
    names = {"cheap": "Cheap SD 1.5", "dear": "stabilityai/dear"}
    text = models.read_text(encoding="utf-8")
    for old, new in names.items():
        text = text.replace(f"[generators.{old}]", f'[generators."{new}"]')
    models.write_text(text, encoding="utf-8")
    with m.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    with m.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([rows[0], *([r[0], names[r[1]], *r[2:]] for r in rows[1:])])
    code, out = run("train", "-M", str(m), "--models", str(models), "--out", str(tmp_path / "r"))
    assert code == 0, out
    code, out, err = run_cli(
        "explain", "a cat on a bicycle", "--router", str(tmp_path / "r"), "--models", str(models), "--json"
    )
    assert code == 0, err
    got = json.loads(out)["prompts"][0]
    assert got["choice"] in names.values() and {g["name"] for g in got["generators"]} == set(names.values())
    assert image_filename(0, "a cat", "stabilityai/dear", 7) == "0000-a-cat-stabilityai_dear-7.png"
