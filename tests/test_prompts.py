"""Prompt files, single prompts and the built-in reference prompt sets."""

from __future__ import annotations

from pathlib import Path

import pytest

from catimg.errors import InputError
from catimg.prompts import list_reference_sets, read_prompt_file, reference_set, validate_prompt


def test_read_prompt_file_skips_blank_and_comment_lines(tmp_path: Path) -> None:
    f = tmp_path / "p.txt"
    f.write_text(
        "# header\n\na red cube\n   \n  # indented comment\n  a blue sphere  \nnaïve café ☕\n",
        encoding="utf-8",
    )
    assert read_prompt_file(f) == ["a red cube", "a blue sphere", "naïve café ☕"]


def test_read_prompt_file_handles_bom_and_crlf(tmp_path: Path) -> None:
    f = tmp_path / "p.txt"
    f.write_bytes(b"\xef\xbb\xbfone\r\ntwo\r\n")
    assert read_prompt_file(f) == ["one", "two"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found") as e:
        read_prompt_file(tmp_path / "nope.txt")
    assert "\n" not in str(e.value) and "nope.txt" in str(e.value)


def test_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a folder"):
        read_prompt_file(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    f = tmp_path / "e.txt"
    f.write_text("# only a comment\n\n", encoding="utf-8")
    with pytest.raises(InputError, match="no prompts"):
        read_prompt_file(f)


def test_not_utf8_names_byte_offset(tmp_path: Path) -> None:
    f = tmp_path / "latin1.txt"
    f.write_bytes("abc\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match="offset 7"):
        read_prompt_file(f)


def test_validate_prompt() -> None:
    assert validate_prompt("  hi  ") == "hi"
    with pytest.raises(InputError, match="empty prompt"):
        validate_prompt("   ")


def test_reference_sets_ship_and_read() -> None:
    names = list_reference_sets()
    assert "parti-geneval-200" in names
    prompts = reference_set("parti-geneval-200")
    assert len(prompts) == 200
    assert len(set(prompts)) == 200
    assert all(p.strip() == p and p for p in prompts)


def test_unknown_reference_set_suggests() -> None:
    with pytest.raises(InputError, match='did you mean "parti-geneval-200"'):
        reference_set("parti-geneval-20")
