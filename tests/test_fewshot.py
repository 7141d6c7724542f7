"""The learning benchmarks' cores on a small table. Few-shot: a generator measured on few prompts is routed
with a wider uncertainty of its own that shrinks as it is measured on more, and an unmeasured one is not
routed. Learning curve: predictors fitted on subsets of the training prompts, scored on unseen ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from catimg.benchmarks import learning_curve
from catimg.benchmarks.fewshot import run
from catimg.benchmarks.routing import Table

SUBJECTS = ["a cat", "a dog", "a red car", "a lighthouse", "two people", "a bowl of fruit"]
PLACES = ["on a beach", "in a city street", "at night", "in a snowy forest", "in a kitchen"]
STYLES = ["photo", "oil painting", "sketch", "watercolour"]


def _table() -> Table:
    prompts = [f"{st} of {su} {pl}" for su in SUBJECTS for pl in PLACES for st in STYLES]
    rng = np.random.default_rng(3)
    people = np.array([p.count("people") for p in prompts], float)
    base = rng.normal(0.0, 0.3, len(prompts))
    Y = np.column_stack(
        [
            base + rng.normal(0, 0.1, len(prompts)),  # cheap
            base + 0.3 + rng.normal(0, 0.1, len(prompts)),  # middle
            base + 0.2 + 1.0 * people + rng.normal(0, 0.1, len(prompts)),  # dear: pays off on people only
        ]
    )
    return Table(prompts, Y, ["cheap", "middle", "dear"], np.array([1.0, 5.0, 20.0]), "score")


def test_new_generator_uncertainty_shrinks_and_unmeasured_is_never_routed() -> None:
    out = run(_table(), "dear", (0, 10, -1), repeats=2, predictor="auto", test_share=0.3, seed=0)
    assert out["n_test"] == 36 and out["n_train"] == 84
    res = out["results"]
    assert [r["measured"] for r in res[0]] == [0.0, 0.0]
    assert [r["measured"] for r in res[10]] == [10.0, 10.0]
    assert [r["measured"] for r in res[-1]] == [84.0, 84.0]
    # not measured: never chosen, no uncertainty to report
    assert all(r["share"] == 0.0 and np.isnan(r["own"]) for r in res[0])
    # the own std is held against an error: the deviation's distance to the all-prompt fit (none at all)
    assert all(np.isnan(r["own_err"]) for r in res[-1] + res[0])
    assert all(r["own_err"] > 0 for r in res[10])
    own10 = np.mean([r["own"] for r in res[10]])
    own_all = np.mean([r["own"] for r in res[-1]])
    assert own10 > 1.2 * own_all > 0  # 1.3-1.5 times over seeds 0-2; below it before the pooled noise
    # measured on every training prompt, it is routed to where it pays off: the router beats not having it
    assert np.mean([r["auc"] for r in res[-1]]) > np.mean([r["auc"] for r in res[0]])


def _part(table: Table, rows: np.ndarray) -> Table:
    return Table([table.prompts[i] for i in rows], table.Y[rows], table.generators, table.costs, table.metric)


def test_learning_curve_scores_subsets_on_unseen_prompts() -> None:
    table = _table()
    perm = np.random.default_rng(0).permutation(len(table.prompts))
    train, test = _part(table, perm[36:]), _part(table, perm[:36])
    curve = learning_curve.run(train, test, (12, -1), repeats=2, predictors=["knn", "auto"], seed=0)
    assert (curve.n_train, curve.n_test) == (84, 36)
    assert all(len(curve.apgr[s][p]) == 2 for s in (12, -1) for p in ("knn", "auto"))
    small, full = curve.apgr[12]["auto"], curve.apgr[-1]["auto"]
    assert small[0] != small[1]  # two random subsets of 12 prompts
    assert full[0] == full[1]  # all 84: the same fit in every repeat
    # the dear generator pays off on "people" prompts only: with every training prompt the router finds them
    assert np.mean(full) > 0.5
    assert np.mean(full) > np.mean(small)
    text = learning_curve.render(curve, "title")
    assert "auto - knn" in text and "\n      84  " in text and "\n      12  " in text


def test_learning_curve_cli_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert learning_curve.main(["--data", str(tmp_path), "--sizes", "0,100"]) == 2
    assert "--sizes" in capsys.readouterr().err
    assert learning_curve.main(["--data", str(tmp_path), "--sizes", "1e3"]) == 2
    assert learning_curve.main(["--data", str(tmp_path), "--predictors", "knn,forest"]) == 2
    assert "'forest'" in capsys.readouterr().err
    assert learning_curve.main(["--data", str(tmp_path), "--one-score", "1.5"]) == 2
    assert "--one-score" in capsys.readouterr().err
    assert learning_curve.main(["--data", str(tmp_path / "absent")]) == 2


def test_learning_curve_one_score_design() -> None:
    table = _table()
    sparse = learning_curve._one_score(table, 0.5, np.random.default_rng(0))
    scores = (~np.isnan(sparse.Y)).sum(1)
    assert set(scores.tolist()) == {1, 3} and 40 < (scores == 1).sum() < 80
    kept = ~np.isnan(sparse.Y)
    np.testing.assert_array_equal(sparse.Y[kept], table.Y[kept])  # the kept scores are the measured ones
    assert not np.isnan(table.Y).any()  # the table itself is untouched
    perm = np.random.default_rng(1).permutation(len(table.prompts))
    train, test = _part(table, perm[36:]), _part(table, perm[:36])
    curve = learning_curve.run(train, test, (-1,), 2, ["knn", "auto"], seed=0, one_score=1.0)
    full = curve.apgr[-1]["auto"]
    assert full[0] != full[1]  # a new draw of the kept scores in every repeat
    assert np.mean(full) > 0.3  # one score a prompt still finds where the dear generator pays off
