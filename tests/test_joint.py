"""Training on several measurement sets at once: the joint scale, per-set numbers and the errors of bad
sets."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from harness import run_cli
from test_router import MODELS_TOML, SUBJECTS

from catimg.errors import MeasurementsError
from catimg.measurements import MeasurementTable
from catimg.training.joint import JOINT_METRIC, compare_sets, join, parse_scales


def _table(prompts: list[str], Y: np.ndarray, metric: str, source: str) -> MeasurementTable:
    return MeasurementTable(
        prompts=prompts,
        generators=["cheap", "dear"],
        Y=Y,
        counts=np.ones(Y.shape, int),
        seconds={"cheap": None, "dear": None},
        metric=metric,
        sources=[source],
    )


def test_join_maps_each_set_by_its_metric_range_and_stacks_rows() -> None:
    a = _table(
        ["p1", "p2"], np.array([[1.0, 5.0], [3.0, 3.0]]), "genai_bench_alignment", "genai_bench"
    )  # 1..5
    b = _table(["p1"], np.array([[-1.0, 2.0]]), "pqpp_score", "pqpp")  # -1..2
    j = join([a, b])
    assert j.table.metric == JOINT_METRIC and j.table.prompts == [
        "p1",
        "p2",
        "p1",
    ]  # a prompt in two sets: two rows
    np.testing.assert_allclose(j.table.Y, [[0.0, 1.0], [0.5, 0.5], [0.0, 1.0]])
    assert list(j.row_set) == [0, 0, 1] and [s.name for s in j.sets] == ["genai_bench", "pqpp"]
    np.testing.assert_allclose(j.sets[1].from_joint(j.table.Y[2]), [-1.0, 2.0])
    assert j.n_measured_by_set() == {
        "cheap": {"genai_bench": 2, "pqpp": 1},
        "dear": {"genai_bench": 2, "pqpp": 1},
    }


def test_join_refuses_an_unknown_metric_without_a_range_and_a_one_generator_set() -> None:
    a = _table(["p1", "p2"], np.array([[1.0, 5.0], [3.0, 3.0]]), "genai_bench_alignment", "genai_bench")
    odd = _table(["q1", "q2"], np.array([[0.2, 0.3], [0.1, 0.4]]), "clipscore_x", "mine")
    with pytest.raises(
        MeasurementsError, match=r'metric "clipscore_x" has no known range.*--scale clipscore_x=LO:HI'
    ):
        join([a, odd])
    assert join([a, odd], scales=parse_scales(["clipscore_x=0:1"])).sets[1].hi == 1.0
    one = _table(["q1", "q2"], np.array([[1.0, np.nan], [2.0, np.nan]]), "tifa_faithfulness", "tifa")
    with pytest.raises(MeasurementsError, match=r"measures one generator only \(cheap\)"):
        join([a, one])


def test_compare_sets_flags_sets_that_disagree() -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(2, 4, size=(60, 1))
    agree = _table([f"a{i}" for i in range(60)], np.hstack([base, base + 1.0]), "tifa_faithfulness", "tifa")
    same = _table(
        [f"b{i}" for i in range(60)],
        np.hstack([base, base + 1.0 + rng.normal(0, 0.1, (60, 1))]),
        "dsg_consistency",
        "dsg",
    )
    flipped = _table(
        [f"c{i}" for i in range(60)], np.hstack([base + 1.0, base]), "genai_bench_alignment", "genai_bench"
    )
    (ok,) = compare_sets(join([agree, same]))
    assert not ok.disagree and ok.by_set["tifa"][0] == pytest.approx(-0.25)
    (bad,) = compare_sets(join([agree, flipped]))
    assert bad.disagree and "cheap - dear on the joint scale: tifa: -0.250" in bad.line()


def test_parse_scales_names_a_malformed_value() -> None:
    from catimg.errors import InputError

    for bad in ("clip", "clip=1", "clip=2:1", "=0:1"):
        with pytest.raises(InputError, match="METRIC=LO:HI"):
            parse_scales([bad])


def _write(
    path: Path, metric: str, lo: float, hi: float, invert: bool, source: str, dear: float = 0.9
) -> Path:
    """A set where the cheap generator fails on busy scenes (or, ``invert``, on simple ones), on [lo, hi]; the
    dear one scores ``dear`` (as a share of the range) everywhere."""
    rng = np.random.default_rng(len(source))
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["prompt", "generator", "score", "metric", "source"])
        for s in SUBJECTS:
            for p, bad in (
                (f"{s} on a white background", invert),
                (f"{s} in a crowded street full of people", not invert),
            ):
                cheap = 0.3 if bad else 0.85
                for g, q in (("cheap", cheap), ("dear", dear)):
                    w.writerow([p, g, f"{lo + (hi - lo) * (q + rng.normal(0, 0.03)):.4f}", metric, source])
    return path


def test_train_on_two_sets_then_explain(tmp_path: Path) -> None:
    models = tmp_path / "models.toml"
    models.write_text(MODELS_TOML, encoding="utf-8")
    a = _write(tmp_path / "a.csv", "genai_bench_alignment", 1, 5, False, "genai_bench")
    b = _write(tmp_path / "b.csv", "tifa_faithfulness", 1, 5, False, "tifa")
    code, out, err = run_cli("train", "-M", a, "-M", b, "--models", models, "--out", tmp_path / "r", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["metric"]["name"] == JOINT_METRIC and doc["metric"]["scale"] == [0.0, 1.0]
    card = doc["data_card"]
    assert [s["name"] for s in card["sets"]] == ["genai_bench", "tifa"]
    for name in ("genai_bench", "tifa"):
        ho = card["held_out_by_set"][name]
        router, oracle, _ = ho["summaries"]
        assert ho["n_test"] == 2 * len(SUBJECTS) and router["apgr"] > 0.5  # learned from both sets, held out
    assert {g["name"]: g["n_measured_by_set"] for g in doc["generators"]}["cheap"] == {
        "genai_bench": 44,
        "tifa": 44,
    }
    assert card["set_comparisons"] and not any(c["disagree"] for c in card["set_comparisons"])
    from catimg.routing.encoder import PromptEncoder
    from catimg.routing.router import load_router

    r = load_router(tmp_path / "r")
    assert r.sources("dear") == {"genai_bench": 44, "tifa": 44} and [s["name"] for s in r.sets] == [
        "genai_bench",
        "tifa",
    ]
    (near,) = r.neighbours_by_set(
        PromptEncoder().encode(["a cactus in a crowded street full of people"]), k=1
    )
    assert list(near) == ["genai_bench", "tifa"]
    assert all(
        hits[0][0] == "a cactus in a crowded street full of people" and hits[0][1] > 0.99
        for hits in near.values()
    )
    code, out, err = run_cli(
        "explain",
        "a cactus in a crowded street full of people",
        "--router",
        tmp_path / "r",
        "--models",
        models,
        "--budget",
        "low",
        "--json",
        "--device",
        "cpu",
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["prompts"][0]["choice"] == "dear" and doc["learned_from"]["dear"] == {
        "genai_bench": 44,
        "tifa": 44,
    }
    assert set(doc["prompts"][0]["neighbours_by_set"]) == {"genai_bench", "tifa"}
    code, out, err = run_cli(
        "explain",
        "a cactus in a crowded street full of people",
        "--router",
        tmp_path / "r",
        "--models",
        models,
        "--budget",
        "low",
        "--device",
        "cpu",
    )
    assert code == 0, err
    assert "predictions learned from: cheap (genai_bench 44, tifa 44); dear (genai_bench 44, tifa 44)" in out
    assert (
        "most similar training prompt per set: genai_bench: "
        '"a cactus in a crowded street full of people" (1.00); tifa:' in out
    )


def test_a_set_without_complete_prompts_gets_the_out_of_fold_check(tmp_path: Path) -> None:
    """One set scored on both generators, the other on one generator a prompt (as gen --score collects): the
    second has no routing numbers, but its held-out section checks the router against the mean scores."""
    models = tmp_path / "models.toml"
    models.write_text(MODELS_TOML, encoding="utf-8")
    a = _write(tmp_path / "a.csv", "genai_bench_alignment", 1, 5, False, "genai_bench")
    b = _write(tmp_path / "b.csv", "tifa_faithfulness", 1, 5, False, "tifa")
    with b.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    prompts = list(dict.fromkeys(r[0] for r in rows[1:]))
    one = {p: ("cheap", "dear")[i // 2 % 2] for i, p in enumerate(prompts)}  # each on both kinds of prompt
    with b.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([rows[0], *(r for r in rows[1:] if one[r[0]] == r[1])])
    code, out, err = run_cli("train", "-M", a, "-M", b, "--models", models, "--out", tmp_path / "r")
    assert code == 0, err
    assert "held-out on tifa: too few prompts measured on all of its generators" in out
    assert f"out of fold on {len(prompts)} scores: RMS error" in out
    card = json.loads((tmp_path / "r" / "config.json").read_text())["data_card"]
    check = card["held_out_by_set"]["tifa"]["sparse_check"]
    assert check["n_scores"] == len(prompts) and check["n_pairs"] == 0 and check["order"] is None
    assert 0 < check["rmse"] < 4 and 0 < check["rmse_means"] < 4  # in tifa's own units (1-5)
    assert ("on tifa, out of fold, the router is worse" in err) == check["worse"]
    assert "summaries" in card["held_out_by_set"]["genai_bench"]


def test_train_warns_when_sets_disagree_and_errors_name_the_file(tmp_path: Path) -> None:
    models = tmp_path / "models.toml"
    models.write_text(MODELS_TOML, encoding="utf-8")
    a = _write(tmp_path / "a.csv", "genai_bench_alignment", 1, 5, False, "genai_bench")
    worse = _write(
        tmp_path / "b.csv", "tifa_faithfulness", 1, 5, False, "tifa", dear=0.4
    )  # dear worse than cheap here
    code, out, err = run_cli(
        "train", "-M", a, "-M", worse, "--models", models, "--out", tmp_path / "r", "--json"
    )
    assert code == 0, err
    assert (
        "warning: the sets disagree on how two generators compare: cheap - dear on the joint scale: "
        "genai_bench: -0.3" in err
    )
    (pair,) = json.loads(out)["data_card"]["set_comparisons"]
    assert pair["disagree"] and pair["by_set"]["tifa"]["mean"] > 0 > pair["by_set"]["genai_bench"]["mean"]
    odd = _write(tmp_path / "c.csv", "my_metric", 0, 1, False, "mine")
    code, out, err = run_cli("train", "-M", a, "-M", odd, "--models", models, "--out", tmp_path / "r2")
    assert code == 4 and f'{odd}: metric "my_metric" has no known range' in err and "Traceback" not in err
    code, out, err = run_cli(
        "train",
        "-M",
        a,
        "-M",
        odd,
        "--scale",
        "my_metric=0:1",
        "--models",
        models,
        "--out",
        tmp_path / "r2",
        "--json",
    )
    assert code == 0, err
    code, out, err = run_cli(
        "train", "-M", a, "-M", odd, "--scale", "my_metric", "--models", models, "--out", tmp_path / "r3"
    )
    assert code == 2 and "--scale my_metric: expected METRIC=LO:HI" in err


def test_train_on_a_file_next_to_the_store(tmp_path: Path) -> None:
    """`train -M FILE --db STORE`: the store is one more set, named after it, on its metric's known range."""
    models = tmp_path / "models.toml"
    models.write_text(MODELS_TOML, encoding="utf-8")
    a = _write(tmp_path / "a.csv", "genai_bench_alignment", 1, 5, False, "genai_bench")
    mine = _write(tmp_path / "mine.csv", "clipscore", 0, 100, False, "calibrate")
    db = tmp_path / "cal.sqlite"
    code, _, err = run_cli(
        "measurements", "import", mine, "--db", db, "--models", models, "--metric", "clipscore"
    )
    assert code == 0, err
    code, out, err = run_cli(
        "train",
        "-M",
        a,
        "--db",
        db,
        "--metric",
        "clipscore",
        "--models",
        models,
        "--out",
        tmp_path / "r",
        "--json",
    )
    assert code == 0, err
    card = json.loads(out)["data_card"]
    assert [(s["name"], s["metric"], s["range"]) for s in card["sets"]] == [
        ("genai_bench", "genai_bench_alignment", [1.0, 5.0]),
        ("store:cal.sqlite", "clipscore", [0.0, 100.0]),
    ]
    assert card["held_out_by_set"]["store:cal.sqlite"]["n_test"] == 2 * len(SUBJECTS)


def test_joint_cross_validation_holds_a_prompt_out_of_every_set_in_one_pass() -> None:
    """One out-of-fold pass over a joint table: a prompt two sets measured is left out of both in its fold, so
    a 1-nearest-neighbour predictor cannot copy its twin's score (with a leak every prediction would be
    exact)."""
    from catimg.training.crossval import cv_rows, fit_predictor, plain_fitter
    from catimg.training.train import joint_set_out_of_fold, prompt_keys

    rng = np.random.default_rng(0)
    prompts = [f"prompt {i}" for i in range(40)]
    scores = rng.uniform(1, 5, size=(40, 2))
    a = _table(prompts, scores, "genai_bench_alignment", "genai_bench")
    b = _table(prompts, scores, "tifa_faithfulness", "tifa")  # the same prompts and scores in a second set
    joint = join([a, b])
    X = np.vstack([rng.normal(size=(40, 8))] * 2)  # a prompt's two rows embed identically
    keys = prompt_keys(joint.table.prompts)
    oof = fit_predictor("knn", X, joint.table.Y, {"k": 1}, keys=keys, fit_on_all=True).oof
    assert oof is not None
    rows, pred = oof.rows, oof.at(None)
    assert list(rows) == list(cv_rows(80, 0)) and pred.shape == (80, 2)
    assert not np.any(np.isclose(pred, joint.table.Y[rows]).all(axis=1))
    set_rows, set_pred = joint_set_out_of_fold(plain_fitter("knn", {"k": 1}), X, joint, 1)
    assert list(set_rows) == list(range(40, 80))
    assert not np.any(np.isclose(set_pred, joint.table.Y[set_rows]).all(axis=1))


def test_joint_cross_validation_predicts_every_cell_of_a_rarely_measured_generator() -> None:
    """A generator measured on one prompt only is missing from every fold that holds that prompt out: the
    out-of-fold pass still gives a prediction in every cell (its mean), so the budget levels can be set."""
    from catimg.training.crossval import fit_predictor
    from catimg.training.train import prompt_keys

    rng = np.random.default_rng(1)
    prompts = [f"prompt {i}" for i in range(30)]
    Y = np.column_stack([rng.uniform(1, 5, 30), rng.uniform(1, 5, 30), np.full(30, np.nan)])
    Y[0, 2] = 4.0
    a = MeasurementTable(
        prompts=prompts,
        generators=["cheap", "dear", "rare"],
        Y=Y,
        counts=np.ones(Y.shape, int),
        seconds={"cheap": None, "dear": None, "rare": None},
        metric="genai_bench_alignment",
        sources=["genai_bench"],
    )
    b = _table(prompts[:10], rng.uniform(1, 5, (10, 2)), "tifa_faithfulness", "tifa")
    joint = join([a, b])
    keys = prompt_keys(joint.table.prompts)
    oof = fit_predictor("ridge", rng.normal(size=(40, 8)), joint.table.Y, keys=keys, fit_on_all=True).oof
    assert oof is not None and len(oof.rows) == 40 and not np.isnan(oof.at(None)).any()
