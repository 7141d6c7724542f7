"""The SQLite measurement store: schema, ownership checks, locking, resumability keys, export/import."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from tiny import generator

from catimg.calibration.store import DB_FILENAME, SCHEMA_VERSION, Store, default_db_path
from catimg.errors import InputError, MeasurementsError, StoreError
from catimg.measurements import read_measurements, split_holdout


def test_default_path_honours_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CATIMG_DATA_DIR", str(tmp_path / "d"))
    assert default_db_path() == tmp_path / "d" / DB_FILENAME
    with Store.open() as s:
        assert s.path.is_file()
    with sqlite3.connect(tmp_path / "d" / DB_FILENAME) as c:
        meta = dict(c.execute("SELECT key, value FROM meta"))
    assert meta["application_id"] == "catimg" and meta["schema_version"] == str(SCHEMA_VERSION)


def test_record_done_and_changed_generator_is_new(tmp_path: Path) -> None:
    db = tmp_path / "m.sqlite"
    a = generator("a")
    with Store.open(db) as s:
        h = s.register_generator(a)
        s.record("a cat", h, 0, {"clipscore": 25.0}, seconds=0.5, path=tmp_path / "x.png", device="cpu")
        s.record("a dog", h, 0, {"clipscore": 21.0}, seconds=0.7)
        s.record("a dog", h, 1, {"clipscore": 23.0}, seconds=0.6)
    with Store.open(db) as s:  # reopened: persisted
        assert s.done("clipscore", [h]) == {(h, "a cat", 0), (h, "a dog", 0), (h, "a dog", 1)}
        assert s.done("pickscore", [h]) == set()
        a8 = replace(a, steps=8)
        h8 = s.register_generator(a8)
        assert h8 != h
        assert s.done("clipscore", [h8]) == set()
        s.record("a cat", h8, 0, {"clipscore": 30.0}, seconds=1.0)
        # current settings only for the catalog's generator object; the old ones stay in the store
        cur = s.measurements("clipscore", [a8])
        assert [(m.prompt, m.score) for m in cur] == [("a cat", 30.0)]
        allrows = s.measurements("clipscore")
        assert {m.generator for m in allrows} == {"a", f"a~{h[:8]}"}
        summ = s.summary("clipscore", [a])[0]
        assert summ.images == 3 and summ.prompts == 2 and summ.mean_score == pytest.approx(23.0)
        assert s.measured_seconds(a) == pytest.approx(0.6)
        assert s.metrics() == {"clipscore": 4}


def test_to_table_averages_seeds_and_keeps_unmeasured_as_nan(tmp_path: Path) -> None:
    a, b = generator("a"), generator("b")
    with Store.open(tmp_path / "m.sqlite") as s:
        ha, hb = s.register_generator(a), s.register_generator(b)
        s.record("p1", ha, 0, {"clipscore": 20.0}, seconds=1.0)
        s.record("p1", ha, 1, {"clipscore": 22.0}, seconds=3.0)
        s.record("p2", ha, 0, {"clipscore": 10.0}, seconds=2.0)
        s.record("p1", hb, 0, {"clipscore": 30.0}, seconds=4.0)
        t = s.to_table("clipscore", [a, b])
        assert t.generators == ["a", "b"] and t.prompts == ["p1", "p2"]
        assert t.Y[0, 0] == pytest.approx(21.0) and t.counts[0, 0] == 2
        assert np.isnan(t.Y[1, 1])
        assert t.seconds == {"a": pytest.approx(2.0), "b": pytest.approx(4.0)}
        with pytest.raises(
            MeasurementsError, match='no measurements of metric "pickscore".*clipscore \\(4 images\\)'
        ):
            s.to_table("pickscore", [a, b])


def test_export_import_round_trip_matches_measurements_reader(tmp_path: Path) -> None:
    a, b = generator("a"), generator("b")
    with Store.open(tmp_path / "one.sqlite") as s:
        ha, hb = s.register_generator(a), s.register_generator(b)
        for i, p in enumerate(["x, with comma", 'y "quoted"', "z ☕"]):
            s.record(p, ha, 0, {"clipscore": 20.0 + i}, seconds=1.0)
            s.record(p, hb, 0, {"clipscore": 25.0 - i, "other": 1.0}, seconds=2.0)
        n = s.export(tmp_path / "out.csv", metric="clipscore")
        assert n == 6
        s.export(tmp_path / "out.jsonl")
    table = read_measurements(tmp_path / "out.csv", known_generators=["a", "b"])
    assert table.metric == "clipscore" and table.Y.shape == (3, 2)
    with Store.open(tmp_path / "two.sqlite") as s2:
        first = s2.import_file(tmp_path / "out.jsonl", [a, b])
        assert (first.new, first.updated, first.unchanged) == (9, 0, 0)
        again = s2.import_file(tmp_path / "out.jsonl", [a, b])  # idempotent, and says so
        assert (again.new, again.updated, again.unchanged) == (0, 0, 9) and "9 unchanged" in again.describe()
        assert s2.metrics() == {"clipscore": 6, "other": 3}
        t2 = s2.to_table("clipscore", [a, b])
        np.testing.assert_allclose(t2.Y, table.Y)
        # imported rows under the catalog's hash count as done for a resumed campaign
        assert ("x, with comma", 0) in {(p, sd) for _, p, sd in s2.done("clipscore", [a.settings_hash()])}


def test_not_catimg_database(tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as c:
        c.execute("CREATE TABLE people (name TEXT)")
    with pytest.raises(StoreError, match="not a catimg measurement database") as e:
        Store.open(other)
    assert "\n" not in str(e.value) and "--db" in str(e.value)
    text = tmp_path / "notes.sqlite"
    text.write_text("hello, not sqlite")
    with pytest.raises(StoreError, match="not SQLite"):
        Store.open(text)
    with pytest.raises(StoreError, match="is a folder"):
        Store.open(tmp_path)
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as c:
        c.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        c.execute("INSERT INTO meta VALUES ('application_id', 'someone-else')")
    with pytest.raises(StoreError, match="someone-else"):
        Store.open(foreign)


def test_newer_schema(tmp_path: Path) -> None:
    db = tmp_path / "m.sqlite"
    Store.open(db).close()
    with sqlite3.connect(db) as c:
        c.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(StoreError, match=f"newer catimg \\(schema {SCHEMA_VERSION + 1}"):
        Store.open(db)


def test_missing_without_create(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="run `catimg calibrate` first"):
        Store.open(tmp_path / "none.sqlite", create=False)


def test_campaign_lock_held_by_another_process(tmp_path: Path) -> None:
    db = tmp_path / "m.sqlite"
    Store.open(db).close()
    code = (
        "import sys, time; from catimg.calibration.store import Store; s = Store.open(sys.argv[1]); "
        "s.acquire_campaign();"
        "print('locked', flush=True); sys.stdin.readline()"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:  # closes the pipes
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
            with Store.open(db) as s:
                with pytest.raises(
                    StoreError, match=f"another catimg calibrate is running on {db}; wait .* --db"
                ):
                    s.acquire_campaign()
        finally:
            assert proc.stdin is not None
            proc.stdin.write("\n")
            proc.stdin.flush()
            proc.wait(timeout=30)
    with Store.open(db) as s:  # released when the other process ends
        s.acquire_campaign()
        s.release_campaign()


def test_write_lock_busy_is_one_line(tmp_path: Path) -> None:
    db = tmp_path / "m.sqlite"
    Store.open(db).close()
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with Store.open(db, busy_timeout=0.1) as s:
            with pytest.raises(StoreError, match="locked by another catimg process; wait or pass --db"):
                s.register_generator(generator("a"))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


def test_holdout_split_is_stable_and_disjoint(tmp_path: Path) -> None:
    a, b = generator("a"), generator("b")
    prompts = [f"prompt number {i}" for i in range(60)]
    with Store.open(tmp_path / "m.sqlite") as s:
        ha, hb = s.register_generator(a), s.register_generator(b)
        for i, p in enumerate(prompts):
            s.record(p, ha, 0, {"m": float(i)})
            s.record(p, hb, 0, {"m": float(-i)})
        t = s.to_table("m", [a, b])
    train, test = split_holdout(t, 0.25)
    assert set(train.prompts).isdisjoint(test.prompts) and len(train.prompts) + len(test.prompts) == 60
    assert 5 <= len(test.prompts) <= 25
    again = split_holdout(t.subset(list(range(30, 60))), 0.25)[1]  # a prompt keeps its side in another table
    assert set(again.prompts) == set(test.prompts) & set(prompts[30:])
    with pytest.raises(InputError, match="--holdout 1.5"):
        split_holdout(t, 1.5)


def test_to_table_is_the_table_of_the_exported_file(tmp_path: Path) -> None:
    """One pivot: the store's table and the table read back from its export agree, spellings merged in
    both."""
    a, b = generator("a"), generator("b")
    with Store.open(tmp_path / "m.sqlite") as s:
        ha, hb = s.register_generator(a), s.register_generator(b)
        for i, p in enumerate(["A red cube", "a red  cube", "two cats", "Two cats "]):
            s.record(p, ha, 0, {"clipscore": 10.0 + i}, seconds=1.0 + i)
            s.record(p, hb, i, {"clipscore": 30.0 - i})
        t = s.to_table("clipscore", [b, a])
        assert s.export(tmp_path / "out.txt", metric="clipscore") == 8
    f = read_measurements(tmp_path / "out.txt")
    assert t.generators == ["b", "a"] and t.prompts == f.prompts == ["A red cube", "two cats"]
    np.testing.assert_allclose(t.Y[:, [1, 0]], f.Y)
    assert t.Y[:, 1].tolist() == [10.5, 12.5] and t.counts.tolist() == [[2, 2], [2, 2]]
    assert t.seconds == {"b": None, "a": 2.5} and f.seconds == {"a": 2.5, "b": None}
