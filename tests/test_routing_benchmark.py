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
    assert se[bench.REFERENCE]["d_apgr"] == 0.0 and se[bench.REFERENCE]["d_apgr_mean"] == 0.0
    # perfect predictions recover all of the oracle's gain: clearly ahead of noisy ones
    assert se["oracle-like"]["d_apgr_mean"] > 3 * se["oracle-like"]["d_apgr"] > 0
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
