"""Where images go: predictable PNG names, metadata text chunks, the manifest, atomic writes and locking.

* File names: ``{index:04d}-{slug}-{generator}-{seed}.png`` (``index`` is the prompt's 0-based position). An
  existing file is never overwritten: a PNG is written to a temporary file in the same folder, fsynced, then
  hard-linked to its final name (the link fails if the name exists, and another suffix ``-2``, ``-3`` … is
  tried). A ``kill -9`` leaves at most a ``.tmp`` file behind, never a half-written PNG under a final name.
* PNG text chunks: every field of the image's record (prompt, negative prompt, seed, generator, source, steps,
  guidance, size, scheduler, dtype, device, predicted quality, predicted and measured cost, budget and λ,
  catimg and router versions) as ``catimg:<key>``, the whole record as JSON in ``catimg``, and an A1111-style
  ``parameters`` chunk that existing viewers read.
* :class:`ManifestRecord`: the one record type of an image, whichever engine made it; its :meth:`metadata`
  goes into the PNG, its :meth:`line` into the manifest.
* ``manifest.jsonl``: one JSON object a line, appended as each image is saved with a single ``write`` under an
  exclusive file lock, then fsynced: two runs into one folder interleave whole lines, never clobber. A line
  cut short by a crash is never extended (the next record starts on a new line); reading names every corrupt
  line at once, and :func:`repair_out_dir` (``gen --resume``) sets them aside, adopts PNGs that have no record
  from their own metadata and removes the ``.tmp`` files of dead processes.
* ``.catimg.lock``: :func:`out_dir_lock` keeps a second live run out of a folder (naming the process that
  holds it).
* Test-only: ``CATIMG_TEST_PAUSE_AFTER=N`` makes the process that appends to manifests (the local run, the Ray
  driver) sleep until it is killed right after its N-th record, so that the kill -9 tests stop a run at a
  known point instead of racing it. Never set it outside the test suite.
"""

from __future__ import annotations

import errno
import json
import os
import re
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from catimg.config import safe_name
from catimg.errors import GenerationError, InputError

MANIFEST = "manifest.jsonl"
#: What became of one image: made at the first try, made by its one retry (same generator, or a cheaper
#: fallback), or not made.
ImageStatus = Literal["ok", "retried", "fallback", "failed"]
SAVED = ("ok", "retried", "fallback")  # statuses of a record whose image was saved
TEST_PAUSE_ENV = "CATIMG_TEST_PAUSE_AFTER"  # test-only, see the module docstring
_records_appended = 0  # by this process, for TEST_PAUSE_ENV
_SLUG_LEN = 40


def slugify(text: str, max_len: int = _SLUG_LEN) -> str:
    """A short, file-name-safe slug of a prompt: ascii, lower case, words joined by '-'."""
    t = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    t = re.sub(r"[^a-z0-9]+", "-", t).strip("-")
    if len(t) > max_len:
        t = t[:max_len].rsplit("-", 1)[0] if "-" in t[:max_len] else t[:max_len]
    return t or "prompt"


def image_filename(index: int, prompt: str, generator: str, seed: int) -> str:
    return f"{index:04d}-{slugify(prompt)}-{safe_name(generator)}-{seed}.png"


def prepare_out_dir(path: str | Path) -> Path:
    """Create the output folder; InputError when it is a file or not writable."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise InputError(f"--out {p}: is a file, not a folder; pass a folder for the images")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out {p}: cannot create the folder ({exc.strerror}); pick another --out") from exc
    probe = p / f".catimg-write-test-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(
            f"--out {p}: folder is not writable ({exc.strerror}); fix its permissions or pick another --out"
        ) from exc
    return p


@contextmanager
def removed_if_left_empty(path: str | Path) -> Iterator[None]:
    """Folders of ``path`` that do not exist before the block and are empty after it are removed again.

    A run that stops before its first image (missing weights, a bad option found late, Ctrl-C) leaves no empty
    output folder behind; a folder that existed before, or holds anything, is kept.
    """
    p = Path(path).expanduser().absolute()
    new: list[Path] = []
    for d in (p, *p.parents):
        if d.exists():
            break
        new.append(d)
    try:
        yield
    finally:
        for d in new:  # deepest first; stop at the first that is missing or not empty
            try:
                d.rmdir()
            except OSError:
                break


# --------------------------------------------------------------------------------------------------- writing


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte to fd (a seam: tests replace it to simulate a full disk)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _disk_error(path: Path, exc: OSError) -> GenerationError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return GenerationError(
            f"{path}: disk full while saving; images saved so far are kept and recorded in {MANIFEST}: "
            "free some space and rerun with --resume"
        )
    return GenerationError(
        f"{path}: cannot write ({exc.strerror or exc}); check the folder and rerun with --resume"
    )


def write_new_file(folder: Path, name: str, data: bytes) -> Path:
    """Atomically create ``folder/name`` (or ``stem-2.ext`` … if taken) holding ``data``; never overwrite."""
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    tmp = folder / f".{name}.{os.getpid()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as exc:
        raise _disk_error(folder / name, exc) from exc
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        for n in range(1, 10_000):
            final = folder / (name if n == 1 else f"{stem}-{n}{dot}{ext}")
            try:
                os.link(tmp, final)
                return final
            except FileExistsError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                    raise
                # no hard links on this file system: claim the name, then atomically replace it
                try:
                    os.close(os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                except FileExistsError:
                    continue
                os.replace(tmp, final)
                return final
        raise GenerationError(f"{folder / name}: too many files with this name; pick another --out")
    except OSError as exc:
        raise _disk_error(folder / name, exc) from exc
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def a1111_parameters(meta: dict[str, Any]) -> str:
    """The ``parameters`` text that AUTOMATIC1111-style viewers show."""
    lines = [str(meta.get("prompt", ""))]
    if meta.get("negative_prompt"):
        lines.append(f"Negative prompt: {meta['negative_prompt']}")
    parts = [
        f"Steps: {meta.get('steps')}",
        f"Sampler: {meta.get('scheduler') or 'default'}",
        f"CFG scale: {meta.get('guidance')}",
        f"Seed: {meta.get('seed')}",
        f"Size: {meta.get('width')}x{meta.get('height')}",
        f"Model: {meta.get('generator')}",
        f"Model source: {meta.get('source')}",
        f"Version: catimg {meta.get('catimg_version')}",
    ]
    lines.append(", ".join(parts))
    return "\n".join(lines)


def png_bytes(image: Any, meta: dict[str, Any] | None) -> bytes:
    """Encode a PIL image as PNG with catimg's text chunks (none when ``meta`` is None)."""
    import io

    from PIL.PngImagePlugin import PngInfo

    info = None
    if meta is not None:
        info = PngInfo()
        info.add_text("parameters", a1111_parameters(meta))
        info.add_text("catimg", json.dumps(meta, ensure_ascii=False, sort_keys=True), zip=True)
        for k, v in meta.items():
            if v is None:
                continue
            info.add_itxt(f"catimg:{k}", v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def save_image(folder: Path, name: str, image: Any, meta: dict[str, Any] | None) -> Path:
    return write_new_file(folder, name, png_bytes(image, meta))


def read_image_metadata(path: str | Path) -> dict[str, Any]:
    """What catimg (and A1111) wrote into a PNG:
    {'catimg': {...} or None, 'parameters': str|None, 'text': {...}}."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"{p}: no such image file; check the path")
    try:
        with Image.open(p) as im:
            text = dict(getattr(im, "text", {}) or {})
            size = im.size
            fmt = im.format
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(
            f"{p}: not an image file ({exc.__class__.__name__}); pass a PNG written by catimg"
        ) from exc
    record = None
    if "catimg" in text:
        try:
            record = json.loads(text["catimg"])
        except ValueError:
            record = None
    return {
        "path": str(p),
        "format": fmt,
        "size": list(size),
        "catimg": record,
        "parameters": text.get("parameters"),
        "text": {k: v for k, v in text.items() if k not in ("catimg",)},
    }


# -------------------------------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class ManifestRecord:
    """What catimg records about one image: in its PNG's text chunks and as its line of ``manifest.jsonl``.

    Built by :func:`catimg.generation.execution.describe` for both engines. ``file``, ``error``, ``worker``
    and ``time`` are known only when the record is written; they go into the manifest line, not into the PNG.
    """

    index: int  # the prompt's 0-based position in the prompt file
    image: int  # image number for this prompt
    prompt: str
    negative_prompt: str
    seed: int
    base_seed: int | None
    images_per_prompt: int | None
    generator: str  # the generator that made the image
    routed_generator: str  # the generator the router chose (differs after a fallback)
    settings_hash: str  # the routed generator's settings
    model: str
    source: str
    family: str
    steps: int
    guidance: float
    width: int
    height: int
    scheduler: str | None
    dtype: str
    device: str
    device_name: str
    predicted_quality: float | None
    predicted_seconds: float | None
    measured_seconds: float
    budget: str | None
    lam: float | None  # "lambda" in files
    catimg_version: str
    router_version: str | None
    status: ImageStatus
    attempts: int
    note: str
    file: str | None = None  # the PNG's name in the output folder (None for a failed image)
    error: str | None = None  # why a failed image failed
    worker: str | None = None  # the Ray worker that made it
    time: str | None = None  # when it was recorded

    def metadata(self) -> dict[str, Any]:
        """The fields written into the PNG: everything but file, error, worker and time."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in ("file", "error", "worker", "time"):
                continue
            out["lambda" if f.name == "lam" else f.name] = getattr(self, f.name)
        return out

    def line(self) -> dict[str, Any]:
        """The manifest line: the metadata, the file (None when failed), the error of a failed image, the
        worker of a Ray run, the time."""
        out = {**self.metadata(), "file": self.file}
        for key in ("error", "worker", "time"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


@contextmanager
def _locked(fd: int) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: O_APPEND single writes only
        yield
        return
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def append_manifest(folder: Path, record: dict[str, Any]) -> None:
    """Append one record as one line (single write under an exclusive lock, then fsync)."""
    path = folder / MANIFEST
    line = (json.dumps(record, ensure_ascii=False, sort_keys=True, default=str) + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as exc:
        raise _disk_error(path, exc) from exc
    try:
        with _locked(fd):
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":  # a line cut short by a crash: never extend it
                line = b"\n" + line
            _write_all(fd, line)
            os.fsync(fd)
    except OSError as exc:
        raise _disk_error(path, exc) from exc
    finally:
        os.close(fd)
    _pause_for_tests()


def _pause_for_tests() -> None:
    """Test-only: with ``CATIMG_TEST_PAUSE_AFTER=N``, sleep until killed once this process has appended N
    records."""
    global _records_appended
    limit = os.environ.get(TEST_PAUSE_ENV)
    if not limit:
        return
    _records_appended += 1
    if _records_appended >= int(limit):
        import time

        while True:
            time.sleep(3600)


def _parse_manifest(path: Path) -> tuple[list[dict[str, Any]], list[tuple[int, bytes]]]:
    """(good records, [(line number, raw line)] of the corrupt ones) of a manifest file ([] when absent)."""
    if not path.exists():
        return [], []
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the manifest ({exc.strerror}); check its permissions") from exc
    out, bad = [], []
    for n, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line.decode("utf-8"))
            if not isinstance(rec, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError):
            bad.append((n, line))
            continue
        out.append(rec)
    return out, bad


def _line_list(numbers: list[int]) -> str:
    shown = ", ".join(str(n) for n in numbers[:20]) + (
        f" and {len(numbers) - 20} more" if len(numbers) > 20 else ""
    )
    return f"line {shown} is" if len(numbers) == 1 else f"lines {shown} are"


def read_manifest(folder: str | Path) -> list[dict[str, Any]]:
    """All records of ``folder/manifest.jsonl`` ([] when absent); one InputError naming every corrupt line."""
    path = Path(folder) / MANIFEST
    out, bad = _parse_manifest(path)
    if bad:
        raise InputError(
            f"{path}: {_line_list([n for n, _ in bad])} corrupt (cut short or not JSON); rerun with "
            f"--resume to set them aside in {MANIFEST}.corrupt and recover their images from the PNGs' "
            "metadata"
        )
    return out


LOCK = ".catimg.lock"


def _describe_process(pid: int, recorded: str) -> str:
    """``PID 123: catimg gen ...`` from /proc when it can be read, else from what the lock recorded."""
    try:
        cmd = (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        )
    except OSError:
        cmd = ""
    cmd = cmd or recorded
    return f"PID {pid}" + (f": {cmd[:160]}" if cmd else "")


@contextmanager
def out_dir_lock(folder: str | Path, command: str = "") -> Iterator[list[str]]:
    """Hold ``folder/.catimg.lock`` for a run: one live run per output folder.

    The lock is an exclusive ``flock`` on the file, which also records the holder's PID and command line. A
    second run into the folder gets an InputError naming the process that holds it; the lock of a run that
    died (``kill -9``, power loss) is released by the operating system and taken over, with a note (the
    phrases yielded). The file is removed when the run ends.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks; runs are not kept apart
        yield []
        return
    folder = Path(folder)
    path = folder / LOCK
    notes: list[str] = []
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise InputError(
                f"--out {folder}: cannot create {LOCK} ({exc.strerror}); check the folder's permissions"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            held = os.pread(fd, 4096, 0).decode("utf-8", "replace")
            os.close(fd)
            try:
                info = json.loads(held)
            except ValueError:
                info = {}
            who = (
                _describe_process(int(info.get("pid") or 0), str(info.get("command") or ""))
                if info
                else "another process"
            )
            raise InputError(
                f"--out {folder}: another catimg run ({who}) is writing into this folder; wait for it "
                "to finish (then add --resume), stop it, or pick another --out"
            ) from None
        # the holder may have removed the file between our open and our lock: lock the file that is there
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        old = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        try:
            prev = json.loads(old) if old.strip() else None
        except ValueError:
            prev = None
        if isinstance(prev, dict) and prev.get("pid") and int(prev["pid"]) != os.getpid():
            notes.append(f"{path}: took over the lock of a run that is no longer running (PID {prev['pid']})")
        data = json.dumps({"pid": os.getpid(), "command": command}).encode("utf-8")
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        yield notes
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OSError:
        return False
    return True


_TMP_RE = re.compile(r"^\..+\.(\d+)\.tmp$")


def repair_out_dir(folder: str | Path) -> list[str]:
    """Before a ``--resume``: make ``folder`` consistent again after a crash, and say what was done.

    * corrupt manifest lines (cut short by a crash, or garbage) are moved, all at once, to
      ``manifest.jsonl.corrupt``;
    * a PNG with catimg metadata but no manifest record (a run killed between saving the image and recording
      it, or whose record was corrupt) is adopted: its record is rebuilt from the PNG's own metadata, so the
      image is not made a second time;
    * hidden ``.NAME.PID.tmp`` files of a process that is no longer running are removed.

    A PNG without catimg metadata is left as it is (and named). Returns one phrase per kind of repair.
    """
    folder = Path(folder)
    records, bad = _parse_manifest(folder / MANIFEST)
    notes = [_set_aside_corrupt(folder, records, bad)] if bad else []
    notes += _remove_stale_tmp(folder)
    notes += _adopt_orphans(folder, records)
    return notes


def _set_aside_corrupt(folder: Path, records: list[dict[str, Any]], bad: list[tuple[int, bytes]]) -> str:
    """Rewrite the manifest with its good ``records`` only; the ``bad`` lines go to
    ``manifest.jsonl.corrupt``."""
    path = folder / MANIFEST
    keep = b"".join(
        json.dumps(r, ensure_ascii=False, sort_keys=True, default=str).encode("utf-8") + b"\n"
        for r in records
    )
    try:
        fd = os.open(path, os.O_RDWR)
        try:
            with _locked(fd):
                with open(folder / f"{MANIFEST}.corrupt", "ab") as side:
                    side.write(b"".join(line + b"\n" for _, line in bad))
                tmp = folder / f".{MANIFEST}.{os.getpid()}.tmp"
                tmp.write_bytes(keep)
                os.replace(tmp, path)
        finally:
            os.close(fd)
    except OSError as exc:
        raise _disk_error(path, exc) from exc
    return (
        f"{path}: {_line_list([n for n, _ in bad])} corrupt (cut short or not JSON); set aside in "
        f"{MANIFEST}.corrupt"
    )


def _remove_stale_tmp(folder: Path) -> list[str]:
    """Remove the hidden temporary files of processes that are no longer running."""
    removed = []
    for p in sorted(folder.iterdir()):
        m = _TMP_RE.match(p.name)
        if m and p.is_file() and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            try:
                p.unlink()
                removed.append(p.name)
            except OSError:
                pass
    if not removed:
        return []
    return [
        f"removed {len(removed)} temporary file(s) of a killed run ({', '.join(removed[:3])}"
        f"{', ...' if len(removed) > 3 else ''})"
    ]


def _adopt_orphans(folder: Path, records: list[dict[str, Any]]) -> list[str]:
    """Record every PNG with catimg metadata that has no manifest record; name the PNGs without metadata."""
    known = {str(r.get("file")) for r in records if r.get("file")}
    adopted, foreign = [], []
    for p in sorted(folder.glob("*.png")):
        if p.name in known:
            continue
        rec = _record_from_png(p)
        if rec is None:
            foreign.append(p.name)
            continue
        rec.update(
            {
                "file": p.name,
                "note": (str(rec.get("note") or "") + "; " if rec.get("note") else "")
                + "record recovered from the PNG's metadata",
            }
        )
        append_manifest(folder, rec)
        adopted.append(p.name)
    notes = []
    if adopted:
        notes.append(
            f"recovered the record of {len(adopted)} image(s) from their PNG metadata "
            f"({', '.join(adopted[:3])}{', ...' if len(adopted) > 3 else ''})"
        )
    if foreign:
        notes.append(
            f"{len(foreign)} PNG(s) without catimg metadata have no record and are left as they are "
            f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''})"
        )
    return notes


def _record_from_png(path: Path) -> dict[str, Any] | None:
    """catimg's record from a complete PNG it wrote, or None (no metadata, not a PNG, or cut short)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()  # decodes every pixel: a PNG cut short fails here
            text = dict(getattr(im, "text", {}) or {})
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None
    try:
        rec = json.loads(text["catimg"])
    except (KeyError, ValueError):
        return None
    if not isinstance(rec, dict) or "prompt" not in rec:
        return None
    rec.setdefault("status", "ok")
    return rec


def done_keys(folder: str | Path) -> set[tuple[int, int, str]]:
    """(prompt index, image number, prompt) of images recorded as saved whose file is still on disk."""
    folder = Path(folder)
    keys = set()
    for rec in read_manifest(folder):
        if rec.get("status") not in SAVED or not rec.get("file"):
            continue
        if (folder / rec["file"]).is_file():
            keys.add((int(rec.get("index", -1)), int(rec.get("image", 0)), str(rec.get("prompt", ""))))
    return keys
