"""Reading long-format measurements (CSV and JSONL) and converting the shared data sets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from catimg.errors import MeasurementsError
from catimg.measurements import read_measurements, write_measurements

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_averages_repeats_and_marks_missing(tmp_path: Path) -> None:
    f = _csv(
        tmp_path / "m.csv",
        "prompt,generator,score,seconds,seed\n"
        "a cat,fast,2,1.0,0\n"
        "a cat,fast,4,3.0,1\n"
        "a dog,slow,5,10,0\n"
        '"a red, round ball",fast,3,2.0,0\n',
    )
    t = read_measurements(f, known_generators=["fast", "slow"])
    assert t.prompts == ["a cat", "a dog", "a red, round ball"]
    assert t.generators == ["fast", "slow"]
    assert t.Y[0, 0] == 3.0 and t.counts[0, 0] == 2
    assert np.isnan(t.Y[0, 1]) and t.Y[1, 1] == 5.0
    assert t.seconds == {"fast": 2.0, "slow": 10.0}
    assert t.metric == "score"
    assert t.n_measured() == {"fast": 2, "slow": 1}


def test_jsonl_with_metric_filter(tmp_path: Path) -> None:
    f = tmp_path / "m.jsonl"
    rows = [
        {"prompt": "p1", "generator": "g", "score": 0.5, "metric": "clip"},
        {"prompt": "p1", "generator": "g", "score": 4, "metric": "human"},
        {"prompt": "p2", "generator": "g", "score": 0.7, "metric": "clip", "source": "mine"},
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    t = read_measurements(f, metric="clip")
    assert t.metric == "clip" and t.prompts == ["p1", "p2"] and t.sources == ["mine"]
    assert t.seconds == {"g": None}
    with pytest.raises(
        MeasurementsError, match=r"mixes metrics clip \(2 rows\), human \(1 rows\); choose one with --metric"
    ):
        read_measurements(f)
    with pytest.raises(MeasurementsError, match='no rows with metric "clap" \\(did you mean "clip"\\?\\)'):
        read_measurements(f, metric="clap")


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    rows = [{"prompt": "x", "generator": "a", "score": 1.5, "metric": "m", "seconds": 2.0}]
    for name in ("r.csv", "r.jsonl"):
        assert write_measurements(rows, tmp_path / name) == 1
        t = read_measurements(tmp_path / name)
        assert t.Y.tolist() == [[1.5]] and t.metric == "m" and t.seconds == {"a": 2.0}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"m.csv: the measurements file is empty"),
        ("prompt,generator,score\n", r"m.csv: no measurement rows after the header"),
        (
            "prompt,model,value\na,b,1\n",
            r"m.csv: line 1: missing columns generator, score; the header has prompt, model, value",
        ),
        ("prompt,generatr,score\na,b,1\n", r'missing column generator \(did you mean "generatr"\?\)'),
        (
            "prompt,generator,score\na,fast,1\nb,fast,good\n",
            r"m.csv: line 3, column score: 'good' is not a number",
        ),
        ("prompt,generator,score\na,fast,\n", r"m.csv: line 2, column score: empty; give a number"),
        (
            "prompt,generator,score\na,fsat,1\n",
            r'line 2, column generator: unknown generator "fsat" \(did you mean "fast"\?\)',
        ),
        ("prompt,generator,score\n,fast,1\n", r"line 2, column prompt: empty prompt"),
        (
            "prompt,generator,score,seconds\na,fast,1,-2\n",
            r"line 2, column seconds: -2.0 must be a positive number",
        ),
        ("prompt,generator,score\na,fast,1,extra\n", r"line 2: 4 fields but the header has 3"),
        ("prompt,generator,score\na,fast,nan\n", r"line 2, column score: 'nan' is not a finite number"),
    ],
)
def test_bad_csv(tmp_path: Path, text: str, message: str) -> None:
    f = _csv(tmp_path / "m.csv", text)
    with pytest.raises(MeasurementsError, match=message) as exc:
        read_measurements(f, known_generators=["fast", "slow"])
    assert "\n" not in exc.value.message


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(MeasurementsError, match=r"nope.csv: measurements file not found"):
        read_measurements(tmp_path / "nope.csv")
    with pytest.raises(MeasurementsError, match=r"is a folder"):
        read_measurements(tmp_path)
    bad = tmp_path / "b.jsonl"
    bad.write_text('{"prompt": "a", "generator": "g", "score": 1}\n{"prompt": \n', encoding="utf-8")
    with pytest.raises(MeasurementsError, match=r"b.jsonl: line 2: invalid JSON"):
        read_measurements(bad)
    bad.write_text('{"prompt": "a", "score": 1}\n', encoding="utf-8")
    with pytest.raises(MeasurementsError, match=r"b.jsonl: line 1: missing column generator"):
        read_measurements(bad)
    latin = tmp_path / "l.csv"
    latin.write_bytes("prompt,generator,score\ncaf\xe9,g,1\n".encode("latin-1"))
    with pytest.raises(MeasurementsError, match=r"l.csv: not UTF-8 text"):
        read_measurements(latin)


def test_select_and_subset(tmp_path: Path) -> None:
    f = _csv(tmp_path / "m.csv", "prompt,generator,score\na,x,1\na,y,2\nb,y,3\n")
    t = read_measurements(f)
    s = t.select(["x"])
    assert s.prompts == ["a"] and s.Y.tolist() == [[1.0]]
    assert t.subset([1]).prompts == ["b"]
    with pytest.raises(MeasurementsError, match=r'no generator "z"'):
        t.select(["z"])


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
def test_shared_data_sets_convert(tmp_path: Path) -> None:
    from catimg.benchmarks import datasets

    assert datasets.main(["genai_bench", "--data", str(SHARED), "--out", str(tmp_path / "g.csv")]) == 0
    t = read_measurements(tmp_path / "g.csv")
    assert t.n_prompts == 527 and t.metric == "genai_bench_alignment"
    assert set(t.generators) == {"sdxl-turbo", "sdxl", "sd21", "deepfloyd-if"}
    i = t.prompts.index("A baker pulling freshly baked bread out of an oven in a bakery.")
    assert t.Y[i, t.generators.index("sd21")] == pytest.approx(7 / 3)  # SDXL_2_1 ratings [3, 2, 2]
    for name, gens in (
        ("agiqa3k", {"sd15", "sd15-lowstep", "sd15-lowcfg", "sd15-highcfg"}),
        ("tifa", {"sd11", "sd15", "sd21"}),
        ("dsg", {"sd11", "sd15", "sd21"}),
    ):
        assert datasets.main([name, "--data", str(SHARED), "--out", str(tmp_path / f"{name}.csv")]) == 0
        t = read_measurements(tmp_path / f"{name}.csv")
        assert set(t.generators) == gens and t.n_prompts >= 150
    assert datasets.main(["tifa", "--data", str(tmp_path), "--out", str(tmp_path / "x.csv")]) == 2


def test_rows_round_trip_through_both_formats(tmp_path: Path) -> None:
    from catimg.measurements import Measurement, read_rows

    rows = [
        Measurement('a cat, "quoted"', "g@2", 1.25, "clip", 0.5, 3, "mine"),
        Measurement("z ☕", "h", -2.0),
    ]
    for name in ("r.csv", "r.jsonl", "r.ndjson", "r.txt"):
        assert write_measurements(rows, tmp_path / name) == 2
        assert read_rows(tmp_path / name) == rows  # `line` is where the row was read, not part of the row
        assert not list(tmp_path.glob("*.tmp"))
    assert (tmp_path / "r.txt").read_text(encoding="utf-8").startswith("prompt,generator,score,")  # CSV
    assert (tmp_path / "r.jsonl").read_text(encoding="utf-8").startswith("{")


def test_write_to_a_folder_or_unwritable_place_is_one_line(tmp_path: Path) -> None:
    from catimg.errors import InputError

    with pytest.raises(InputError, match="is a folder; give a file name ending in .csv or .jsonl"):
        write_measurements([], tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match=r"out.csv: cannot write \(.*\); choose another file"):
        write_measurements([{"prompt": "p", "generator": "g", "score": 1.0}], tmp_path / "file" / "out.csv")


def test_pivot_orders_columns_merges_spellings_and_drops_empty_generators() -> None:
    from catimg.measurements import Measurement, pivot

    rows = [
        Measurement("A  cat", "b", 1.0, seconds=2.0),
        Measurement("a cat", "b", 3.0, seconds=4.0),
        Measurement("a dog", "a", 5.0, source="s1"),
    ]
    t = pivot(rows, "m", columns=["a", "unused", "b"])
    assert t.generators == ["a", "b"] and t.prompts == ["A  cat", "a dog"]  # first spelling kept
    assert t.Y[0, 1] == 2.0 and t.counts[0, 1] == 2 and np.isnan(t.Y[0, 0])
    assert t.seconds == {"a": None, "b": 3.0} and t.sources == ["s1"] and t.metric == "m"


def test_metric_if_present_reads_a_file_without_that_metric_as_is(tmp_path: Path) -> None:
    """`train -M a -M b --metric m`: --metric applies to a file only where it has rows of it, in one read."""
    one = tmp_path / "one.csv"
    one.write_text("prompt,generator,score,metric\na,x,1,other\nb,x,2,other\n", encoding="utf-8")
    t = read_measurements(one, metric="clipscore", metric_if_present=True)
    assert t.metric == "other" and t.Y[:, 0].tolist() == [1.0, 2.0]
    with pytest.raises(MeasurementsError, match='no rows with metric "clipscore"'):
        read_measurements(one, metric="clipscore")
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("prompt,generator,score,metric\na,x,1,other\na,x,30,clipscore\n", encoding="utf-8")
    assert read_measurements(mixed, metric="clipscore", metric_if_present=True).Y[0, 0] == 30.0
    with pytest.raises(MeasurementsError, match="mixes metrics"):
        read_measurements(mixed, metric="aesthetic", metric_if_present=True)
