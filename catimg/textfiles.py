"""Reading the user's text files (catalog, prompt files, negative prompts, measurements) with one-line
errors."""

from __future__ import annotations

from pathlib import Path

from catimg.errors import CatimgError


def read_user_text(
    path: str | Path, what: str, error: type[CatimgError], hint: str = "check the path", prefix: str = ""
) -> str:
    """The UTF-8 text of ``path`` (a byte-order mark is dropped).

    Raises ``error`` with one line naming the file (after ``prefix``, e.g. an option name) when it is missing
    (with ``hint``), a folder, unreadable, or not UTF-8 (with the offset of the first bad byte). ``what``
    names the kind of file in the messages ("prompt file", "models file").
    """
    p = Path(path).expanduser()
    name = f"{prefix} {p}" if prefix else str(p)
    if not p.exists():
        raise error(f"{name}: {what} not found; {hint}")
    if p.is_dir():
        raise error(f"{name}: is a folder, not a {what}; give the path of the file")
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise error(f"{name}: cannot read the {what} ({exc.strerror}); check its permissions") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(
            f"{name}: not UTF-8 text (bad byte at offset {exc.start}); save the file as UTF-8"
        ) from exc
