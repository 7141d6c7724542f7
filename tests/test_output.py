"""Output files: names, atomic never-overwrite writes, PNG metadata, the locked manifest."""

from __future__ import annotations

import errno
import json
import multiprocessing as mp
from pathlib import Path

import pytest
from PIL import Image

from catimg.errors import GenerationError, InputError
from catimg.generation import output


def test_names_are_predictable_and_safe() -> None:
    assert output.slugify("A Lighthouse, at dusk!") == "a-lighthouse-at-dusk"
    assert output.slugify("日本") == "prompt"
    assert len(output.slugify("word " * 40)) <= 40
    assert output.image_filename(3, "a red cube", "sdxl@10", 42) == "0003-a-red-cube-sdxl@10-42.png"


def test_never_overwrites(tmp_path: Path) -> None:
    a = output.write_new_file(tmp_path, "x.png", b"first")
    b = output.write_new_file(tmp_path, "x.png", b"second")
    assert a.name == "x.png" and b.name == "x-2.png"
    assert a.read_bytes() == b"first" and b.read_bytes() == b"second"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_png_metadata_round_trip(tmp_path: Path) -> None:
    meta = {
        "prompt": "a red cube",
        "negative_prompt": "blurry",
        "seed": 7,
        "steps": 2,
        "guidance": 2.0,
        "width": 32,
        "height": 32,
        "generator": "tiny",
        "source": "/x",
        "predicted_quality": 0.5,
        "lambda": None,
    }
    p = output.save_image(tmp_path, "a.png", Image.new("RGB", (32, 32), "red"), meta)
    got = output.read_image_metadata(p)
    assert got["catimg"] == meta
    assert got["parameters"].startswith("a red cube\nNegative prompt: blurry\nSteps: 2,")
    assert "Seed: 7" in got["parameters"]
    assert got["text"]["catimg:seed"] == "7"
    plain = output.save_image(tmp_path, "b.png", Image.new("RGB", (32, 32)), None)
    assert output.read_image_metadata(plain)["catimg"] is None


def test_read_metadata_of_non_image(tmp_path: Path) -> None:
    bad = tmp_path / "x.png"
    bad.write_text("not a png")
    with pytest.raises(InputError, match="not an image"):
        output.read_image_metadata(bad)
    with pytest.raises(InputError, match="no such image"):
        output.read_image_metadata(tmp_path / "missing.png")


def test_manifest_append_read_and_corrupt_line(tmp_path: Path) -> None:
    output.append_manifest(tmp_path, {"index": 0, "status": "ok", "file": "a.png", "prompt": "p", "image": 0})
    output.append_manifest(
        tmp_path, {"index": 1, "status": "failed", "file": None, "prompt": "q", "image": 0}
    )
    (tmp_path / "a.png").write_bytes(b"x")
    assert [r["index"] for r in output.read_manifest(tmp_path)] == [0, 1]
    assert output.done_keys(tmp_path) == {(0, 0, "p")}
    with open(tmp_path / output.MANIFEST, "a") as f:
        f.write('{"index": 2, "trunc\n')
    with pytest.raises(InputError, match="line 3 is corrupt"):
        output.read_manifest(tmp_path)


def _appender(folder: str, who: int) -> None:
    for i in range(100):
        output.append_manifest(Path(folder), {"who": who, "i": i, "pad": "x" * 3000})


def test_two_writers_never_clobber_the_manifest(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_appender, args=(str(tmp_path), w)) for w in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    lines = (tmp_path / output.MANIFEST).read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    assert sorted((r["who"], r["i"]) for r in recs) == sorted((w, i) for w in (1, 2) for i in range(100))


def test_disk_full_while_saving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(output, "_write_all", full)
    with pytest.raises(GenerationError, match="disk full while saving"):
        output.write_new_file(tmp_path, "x.png", b"data")
    assert list(tmp_path.iterdir()) == []


def test_prepare_out_dir(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(InputError, match="is a file"):
        output.prepare_out_dir(f)
    with pytest.raises(InputError, match="cannot create"):
        output.prepare_out_dir(f / "sub")
    assert output.prepare_out_dir(tmp_path / "new" / "dir").is_dir()


def test_new_out_folders_left_empty_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    with output.removed_if_left_empty(out):
        output.prepare_out_dir(out)
        assert out.is_dir()
    assert not (tmp_path / "a").exists()
    with output.removed_if_left_empty(out):  # an image was written: everything stays
        output.write_new_file(output.prepare_out_dir(out), "x.png", b"png")
    assert (out / "x.png").is_file()
    (out / "x.png").unlink()
    with (
        pytest.raises(KeyboardInterrupt),
        output.removed_if_left_empty(out),
    ):  # existed before: kept, even empty
        raise KeyboardInterrupt
    assert out.is_dir()
    with (
        pytest.raises(InputError),
        output.removed_if_left_empty(tmp_path / "c" / "d"),
    ):  # removed on errors too
        output.prepare_out_dir(tmp_path / "c" / "d")
        raise InputError("stop")
    assert not (tmp_path / "c").exists()


def test_a_line_cut_short_is_never_extended_and_every_bad_line_is_named(tmp_path: Path) -> None:
    (tmp_path / output.MANIFEST).write_text('{"index": 0}\ngarbage\n{"index": 2, "tru')  # a crash mid-line
    output.append_manifest(tmp_path, {"index": 3})
    with pytest.raises(InputError) as err:
        output.read_manifest(tmp_path)
    assert "lines 2, 3 are corrupt" in str(err.value)  # both at once; the new record stayed whole
    notes = output.repair_out_dir(tmp_path)
    assert [r["index"] for r in output.read_manifest(tmp_path)] == [0, 3] and "set aside" in notes[0]
