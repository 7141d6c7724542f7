"""The routing benchmark's own pieces: the pivot of public rows, assumed costs and paired bootstrap errors."""

from __future__ import annotations

import numpy as np

from catimg.benchmarks import routing as bench


def _rows(prompts: list[str], gens: list[str], Y: np.ndarray) -> list[dict]:
    return [
        {"prompt": p, "generator": g, "score": float(Y[i, j]), "metric": "m"}
        for i, p in enumerate(prompts)
        for j, g in enumerate(gens)
    ]


def test_table_from_rows_averages_duplicates_and_keeps_complete_prompts() -> None:
    rows = _rows(["a", "b"], ["x", "y"], np.array([[1.0, 2.0], [3.0, 4.0]]))
    rows.append(
        {"prompt": "a", "generator": "x", "score": 3.0, "metric": "m"}
    )  # duplicate: averaged with 1.0
    rows.append({"prompt": "c", "generator": "x", "score": 5.0, "metric": "m"})  # no y score: left out
    rows.append({"prompt": "a", "generator": "z", "score": 9.0, "metric": "m"})  # unknown generator: ignored
    t = bench.table_from_rows(rows, ["x", "y"], np.array([1.0, 10.0]))
    assert t.prompts == ["a", "b"]
    np.testing.assert_allclose(t.Y, [[2.0, 2.0], [3.0, 4.0]])


def test_pqpp_costs_assume_glide_is_a_tenth_of_sdxl() -> None:
    names, costs = bench.set_costs(bench.SETS["pqpp"])
    assert names == ["sdxl", "glide"]
    assert costs[1] == costs[0] * bench.GLIDE_COST_SHARE


def test_bootstrap_errors_are_paired_against_the_reference() -> None:
    rng = np.random.default_rng(0)
    Y = rng.normal(size=(300, 2)) + np.array([0.0, 0.5])
    t = bench.Table([f"p{i}" for i in range(300)], Y, ["cheap", "dear"], np.array([1.0, 10.0]), "m")
    noisy = Y + rng.normal(scale=2.0, size=Y.shape)
    preds = {bench.REFERENCE: noisy, "oracle-like": Y.copy()}
    se = bench.bootstrap_se(preds, t, (-3.0, 3.5), b=30)
    # the reference minus itself is exactly zero on every resample
    assert se[bench.REFERENCE]["d_apgr"] == 0.0
    # perfect predictions recover all of the oracle's gain: clearly ahead of noisy ones, and the paired
    # error of the difference is smaller than the gap
    sums = bench.summaries_of(preds, t, (-3.0, 3.5))
    assert sums["oracle-like"].apgr - sums[bench.REFERENCE].apgr > 3 * se["oracle-like"]["d_apgr"] > 0
    text = bench.render(
        bench.SetResult(
            "toy",
            "cv",
            t,
            (-3.0, 3.5),
            {k: [v] for k, v in bench.summaries_of(preds, t, (-3.0, 3.5)).items()},
            se,
            {},
            240,
        ),
        1,
        5,
    )
    assert "APGR %" in text and "100.0" in text


def test_paired_column_is_the_mean_over_repeats_of_the_difference() -> None:
    """Δ APGR must equal the difference of the APGR columns (means over repeats), not the first repeat's."""
    rng = np.random.default_rng(1)
    Y = rng.normal(size=(200, 2)) + np.array([0.0, 0.4])
    t = bench.Table([f"p{i}" for i in range(200)], Y, ["cheap", "dear"], np.array([1.0, 10.0]), "m")
    scale = (-3.0, 3.5)
    runs = [
        {
            bench.REFERENCE: Y + rng.normal(scale=s, size=Y.shape),
            "model": Y + rng.normal(scale=1.0, size=Y.shape),
        }
        for s in (0.5, 3.0)  # the reference is good in repeat 0, poor in repeat 1
    ]
    summaries: dict = {}
    for preds in runs:
        for label, s in bench.summaries_of(preds, t, scale).items():
            summaries.setdefault(label, []).append(s)
    se = bench.bootstrap_se(runs[0], t, scale, b=20)
    res = bench.SetResult("toy", "cv", t, scale, summaries, se, {}, 160)
    want = np.mean(
        [m.apgr - r.apgr for m, r in zip(summaries["model"], summaries[bench.REFERENCE], strict=True)]
    )
    first = summaries["model"][0].apgr - summaries[bench.REFERENCE][0].apgr
    assert abs(want - first) > 0.02  # the two repeats disagree, so the test can tell them apart
    cell = bench._paired(res, "model", bench.REFERENCE, se["model"]["d_apgr"])
    assert cell.startswith(f"{100 * want:.1f} ± ")
    assert f"{100 * want:.1f}" in bench.render(res, 2, 5)
