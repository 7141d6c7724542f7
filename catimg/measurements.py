"""Measurements: the long format ``prompt, generator, score`` read into a typed prompt x generator table.

A measurements file is CSV (with a header row) or JSON Lines (one object per line; ``.jsonl``/``.ndjson``).
Required columns: ``prompt``, ``generator``, ``score``. Optional: ``metric`` (which quality metric the score
is in), ``seconds`` (measured seconds per image), ``seed``, ``source`` (where the row came from). Repeated
rows of one (prompt, generator) pair, for example several seeds, are averaged; so are prompts that differ only
in letter case or white space (the prompt encoder is uncased and ignores spacing, so they are one prompt to
the router; the first spelling is kept). Every problem is a :class:`MeasurementsError`
naming the file, the line and the column.

This module is the one home of the long format: the row type (:class:`Measurement`), reading
(:func:`read_rows`, :func:`read_measurements`), writing (:func:`write_measurements`), the pivot into a prompt
x generator table (:func:`pivot`, also used by :meth:`catimg.calibration.store.Store.to_table`) and the stable
held-out split (:func:`split_holdout`). The calibration store only moves rows in and out of SQLite.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from catimg.errors import InputError, MeasurementsError, did_you_mean
from catimg.textfiles import read_user_text

REQUIRED = ("prompt", "generator", "score")
OPTIONAL = ("metric", "seconds", "seed", "source")
DEFAULT_METRIC = "score"
LONG_COLUMNS = REQUIRED + OPTIONAL
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")  # read and written as JSON lines; anything else is CSV


@dataclass(frozen=True, slots=True)
class Measurement:
    """One row of the long format: the score of one image (``line``: where a file gave it, not part of the
    row)."""

    prompt: str
    generator: str
    score: float
    metric: str | None = None
    seconds: float | None = None
    seed: int | None = None
    source: str | None = None
    line: int | None = field(default=None, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """The row as a dict with the :data:`LONG_COLUMNS` keys (absent values None)."""
        return {c: getattr(self, c) for c in LONG_COLUMNS}


@dataclass
class MeasurementTable:
    """Measured quality of generators on prompts.

    ``Y[i, j]`` is the mean score of generator ``generators[j]`` on prompt ``prompts[i]`` (NaN where not
    measured); ``counts[i, j]`` how many rows were averaged into it. ``seconds[name]`` is the mean measured
    seconds per image of a generator, or None when the file gave none.
    """

    prompts: list[str]
    generators: list[str]
    Y: np.ndarray
    counts: np.ndarray
    seconds: dict[str, float | None]
    metric: str
    sources: list[str] = field(default_factory=list)
    path: Path | None = None

    @property
    def n_prompts(self) -> int:
        return len(self.prompts)

    @property
    def measured(self) -> np.ndarray:
        """Boolean mask (n_prompts, n_generators): True where a score exists."""
        mask: np.ndarray = ~np.isnan(self.Y)
        return mask

    def n_measured(self) -> dict[str, int]:
        return {g: int(self.measured[:, j].sum()) for j, g in enumerate(self.generators)}

    def column(self, name: str) -> int:
        try:
            return self.generators.index(name)
        except ValueError:
            raise MeasurementsError(
                f'{self.path or "measurements"}: no generator "{name}"{did_you_mean(name, self.generators)}; '
                f"measured: {', '.join(self.generators)}"
            ) from None

    def subset(self, rows: Sequence[int] | np.ndarray) -> MeasurementTable:
        """The same table restricted to some prompts (by index)."""
        idx = np.asarray(rows, dtype=int)
        return MeasurementTable(
            prompts=[self.prompts[i] for i in idx],
            generators=list(self.generators),
            Y=self.Y[idx].copy(),
            counts=self.counts[idx].copy(),
            seconds=dict(self.seconds),
            metric=self.metric,
            sources=list(self.sources),
            path=self.path,
        )

    def select(self, generators: Sequence[str]) -> MeasurementTable:
        """The same table restricted to some generators (in the given order); prompts with no score are
        dropped."""
        cols = [self.column(g) for g in generators]
        Y = self.Y[:, cols]
        keep = ~np.all(np.isnan(Y), axis=1)
        return MeasurementTable(
            prompts=[p for p, k in zip(self.prompts, keep, strict=True) if k],
            generators=list(generators),
            Y=Y[keep].copy(),
            counts=self.counts[:, cols][keep].copy(),
            seconds={g: self.seconds.get(g) for g in generators},
            metric=self.metric,
            sources=list(self.sources),
            path=self.path,
        )

    def rows(self) -> Iterable[dict[str, Any]]:
        """Back to the long format (one averaged row per measured pair)."""
        for i, p in enumerate(self.prompts):
            for j, g in enumerate(self.generators):
                if not math.isnan(self.Y[i, j]):
                    row: dict[str, Any] = {
                        "prompt": p,
                        "generator": g,
                        "score": float(self.Y[i, j]),
                        "metric": self.metric,
                    }
                    if self.seconds.get(g) is not None:
                        row["seconds"] = self.seconds[g]
                    yield row


def prompt_key(prompt: str) -> str:
    """What makes two prompts the same prompt: the text with case folded and runs of white space collapsed."""
    return " ".join(prompt.split()).casefold()


def _err(path: Path, msg: str) -> MeasurementsError:
    return MeasurementsError(f"{path}: {msg}")


def _iter_rows(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    """Yield (line number, row dict) from a CSV or JSONL file."""
    text = read_user_text(
        path,
        "measurements file",
        MeasurementsError,
        hint="pass --measurements with an existing CSV or JSONL file",
    )
    if not text.strip():
        raise _err(
            path,
            "the measurements file is empty; it needs a header prompt,generator,score and one row per image",
        )
    if path.suffix.lower() in JSONL_SUFFIXES or text.lstrip().startswith("{"):
        seen_any = False
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise _err(
                    path,
                    f"line {n}: invalid JSON ({exc.msg} at column {exc.colno}); one JSON object per line",
                ) from exc
            if not isinstance(obj, dict):
                raise _err(
                    path,
                    f'line {n}: expected a JSON object like {{"prompt": ..., "generator": ..., '
                    f'"score": ...}}',
                )
            if not seen_any:
                missing = [c for c in REQUIRED if c not in obj]
                if missing:
                    raise _err(
                        path,
                        f"line {n}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}; "
                        f"each line needs {', '.join(REQUIRED)}",
                    )
            seen_any = True
            yield n, obj
        return
    reader = csv.reader(text.splitlines())
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:  # pragma: no cover - handled by the empty check
        raise _err(path, "the measurements file is empty") from None
    except csv.Error as exc:
        raise _err(path, f"line 1: not valid CSV ({exc})") from exc
    lowered = [h.lower() for h in header]
    missing = [c for c in REQUIRED if c not in lowered]
    if missing:
        hints = "".join(did_you_mean(m, header) for m in missing)
        raise _err(
            path,
            f"line 1: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}{hints}; "
            f"the header has {', '.join(header) or 'nothing'}; need {', '.join(REQUIRED)}",
        )
    try:
        for values in reader:
            n = reader.line_num
            if not values or (not values[0] or values[0].isspace()) and not "".join(values).strip():
                continue  # a blank line, or one of blank fields
            if len(values) != len(header):
                raise _err(
                    path,
                    f"line {n}: {len(values)} fields but the header has {len(header)}; quote fields "
                    "that contain commas",
                )
            yield n, dict(zip(lowered, values, strict=True))
    except csv.Error as exc:
        raise _err(path, f"line {reader.line_num}: not valid CSV ({exc})") from exc


def _number(path: Path, n: int, col: str, value: Any, required: bool) -> float | None:
    if value.__class__ is str:  # the fast path of a CSV cell holding a finite number (x - x is 0 only then)
        try:
            x = float(value)
        except ValueError:
            pass
        else:
            if x - x == 0.0:
                return x
    return _number_checked(path, n, col, value, required)


def _number_checked(path: Path, n: int, col: str, value: Any, required: bool) -> float | None:
    """A cell as a finite float, None when empty and optional, else a one-line error naming line, column."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise _err(path, f"line {n}, column {col}: empty; give a number")
        return None
    if isinstance(value, bool):
        raise _err(path, f"line {n}, column {col}: {value!r} is not a number")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise _err(path, f"line {n}, column {col}: {str(value)!r} is not a number") from None
    if not math.isfinite(x):
        raise _err(path, f"line {n}, column {col}: {str(value)!r} is not a finite number")
    return x


def read_rows(path: str | Path) -> list[Measurement]:
    """The validated rows of a long-format CSV or JSONL file, in file order.

    Each row has its ``line``, ``score`` a float, ``seconds`` a positive float, ``seed`` an int, the optional
    fields None when absent. Raises a one-line MeasurementsError naming the file, line and column of the first
    bad value.
    """
    path = Path(path).expanduser()
    out = []
    for n, row in _iter_rows(path):
        prompt = row.get("prompt")
        if not isinstance(prompt, str) or not prompt or prompt.isspace():
            raise _err(path, f"line {n}, column prompt: empty prompt; every row needs the prompt text")
        gen = row.get("generator")
        if not isinstance(gen, str) or not gen or gen.isspace():
            raise _err(path, f"line {n}, column generator: empty; name a generator from models.toml")
        score = _number(path, n, "score", row.get("score"), required=True)
        seconds = row.get("seconds")
        if seconds is not None and seconds != "":  # (absent and empty: None, without a call)
            seconds = _number(path, n, "seconds", seconds, required=False)
            if seconds is not None and seconds <= 0:
                raise _err(path, f"line {n}, column seconds: {seconds} must be a positive number of seconds")
        else:
            seconds = None
        seed = row.get("seed")
        if seed is not None and seed != "":
            seed = _number(path, n, "seed", seed, required=False)
            if seed is not None and seed != int(seed):
                raise _err(path, f"line {n}, column seed: {seed} is not a whole number")
        else:
            seed = None
        metric, source = row.get("metric"), row.get("source")
        out.append(
            Measurement(
                prompt=prompt,
                generator=gen.strip(),
                score=cast(float, score),  # required: never None
                metric=str(metric).strip() or None if metric not in (None, "") else None,
                seconds=seconds,
                seed=None if seed is None else int(seed),
                source=str(source).strip() or None if source not in (None, "") else None,
                line=n,
            )
        )
    return out


def read_measurements(
    path: str | Path,
    known_generators: Iterable[str] | None = None,
    metric: str | None = None,
    catalog_path: str | Path | None = None,
    metric_if_present: bool = False,
) -> MeasurementTable:
    """Read a long-format measurements file into a :class:`MeasurementTable`.

    ``known_generators`` (for example ``catalog.names``) makes every other generator name an error with a
    "did you mean"; ``metric`` keeps only rows of that metric (required when the file mixes metrics), and with
    ``metric_if_present`` a file without rows of it is read as if no metric had been given.
    """
    path = Path(path).expanduser()
    known = list(known_generators) if known_generators is not None else None
    where = f" in {catalog_path}" if catalog_path else ""
    rows = read_rows(path)
    metrics: dict[str, int] = {}
    for row in rows:
        if known is not None and row.generator not in known:
            raise _err(
                path,
                f"line {row.line}, column generator: unknown generator "
                f'"{row.generator}"{did_you_mean(row.generator, known)}; '
                f"known{where}: {', '.join(known)}; add it to models.toml or fix the name",
            )
        row_metric = row.metric or DEFAULT_METRIC
        metrics[row_metric] = metrics.get(row_metric, 0) + 1
    if metric is not None and metric not in metrics and metric_if_present:
        metric = None
    if metric is not None and metric not in metrics:
        found = ", ".join(sorted(metrics)) or "none"
        raise _err(
            path,
            f'no rows with metric "{metric}"{did_you_mean(metric, metrics)}; metrics in the file: {found}',
        )
    if not rows:
        raise _err(path, "no measurement rows after the header; add rows prompt,generator,score")
    if metric is None:
        if len(metrics) > 1:
            listing = ", ".join(f"{m} ({c} rows)" for m, c in sorted(metrics.items()))
            raise _err(path, f"column metric: the file mixes metrics {listing}; choose one with --metric")
        metric = next(iter(metrics))
    return pivot([r for r in rows if (r.metric or DEFAULT_METRIC) == metric], metric, path=path)


def pivot(
    rows: Iterable[Measurement], metric: str, columns: Sequence[str] = (), path: Path | None = None
) -> MeasurementTable:
    """Long-format rows (all of ``metric``) as a prompt x generator :class:`MeasurementTable`.

    Scores of one (prompt, generator) pair are averaged, and so are prompts with the same :func:`prompt_key`
    (the first spelling, stripped, is kept); seconds are averaged per generator. Generators come in the order
    of ``columns`` (a catalog's, say), then of first appearance; a generator without any row gets no column.
    """
    spelling: dict[str, str] = {}  # prompt_key -> the kept spelling
    index_of: dict[str, int] = {}  # kept spelling -> its row of the table, in order of first appearance
    canonical: dict[str, int] = {}  # a row's text -> its row of the table (one text comes once per generator)
    code: dict[str, int] = {}  # generator -> its number, in order of first appearance
    sources: dict[str, None] = {}
    at_prompt: list[int] = []
    at_gen: list[int] = []
    scores: list[float] = []
    sec_gen: list[int] = []
    sec_val: list[float] = []
    for row in rows:
        i = canonical.get(row.prompt)
        if i is None:
            kept = spelling.setdefault(prompt_key(row.prompt), row.prompt.strip())
            i = canonical[row.prompt] = index_of.setdefault(kept, len(index_of))
        j = code.setdefault(row.generator, len(code))
        at_prompt.append(i)
        at_gen.append(j)
        scores.append(row.score)
        if row.seconds is not None and row.seconds > 0:
            sec_gen.append(j)
            sec_val.append(float(row.seconds))
        if row.source:
            sources[str(row.source)] = None
    plist = list(index_of)
    glist = [g for g in dict.fromkeys([*columns, *code]) if g in code]
    column = np.empty(len(code), np.int64)
    column[[code[g] for g in glist]] = np.arange(len(glist))
    # sums and counts per cell, rows added in file order (as a running sum would)
    cell = np.asarray(at_prompt, np.int64) * len(glist) + column[np.asarray(at_gen, np.int64)]
    size = len(plist) * len(glist)
    sums = np.bincount(cell, weights=np.asarray(scores, np.float64), minlength=size)
    C = np.bincount(cell, minlength=size).astype(np.int64).reshape(len(plist), len(glist))
    Y = np.where(C > 0, sums.reshape(C.shape) / np.maximum(C, 1), np.nan)
    sg, sv = np.asarray(sec_gen, np.int64), np.asarray(sec_val, np.float64)
    seconds_mean: dict[str, float | None] = {}
    for g in glist:
        own = sv[sg == code[g]]
        seconds_mean[g] = float(own.mean()) if len(own) else None
    return MeasurementTable(
        prompts=plist,
        generators=glist,
        Y=Y,
        counts=C,
        seconds=seconds_mean,
        metric=metric,
        sources=list(sources),
        path=path,
    )


def write_measurements(rows: Iterable[Measurement | Mapping[str, Any]], path: str | Path) -> int:
    """Write long-format rows to ``path``: JSON lines for .jsonl/.ndjson/.json, else CSV; return the row
    count.

    The file appears whole or not at all (written to ``path.tmp``, then renamed). A folder or an unwritable
    path is an InputError naming it.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name ending in .csv or .jsonl")
    dicts = [r.as_dict() if isinstance(r, Measurement) else dict(r) for r in rows]
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w", encoding="utf-8", newline="") as fh:
            if path.suffix.lower() in JSONL_SUFFIXES:
                for r in dicts:
                    fh.write(json.dumps(r, ensure_ascii=False) + "\n")
            else:
                cols = list(REQUIRED) + [c for c in OPTIONAL if any(c in r for r in dicts)]
                w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
                w.writeheader()
                w.writerows(dicts)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise InputError(f"{path}: cannot write ({exc.strerror}); choose another file") from exc
    return len(dicts)


# --- a stable held-out split (shared by `train --db --holdout` and `eval --db --holdout`) -------------------


def is_holdout(prompt: str, frac: float) -> bool:
    """True when ``prompt`` falls in the held-out share ``frac``: a hash of the text, the same on every
    run."""
    h = int.from_bytes(hashlib.sha256(prompt.encode("utf-8")).digest()[:8], "big")
    return h / 2.0**64 < frac


def split_holdout(table: MeasurementTable, frac: float) -> tuple[MeasurementTable, MeasurementTable]:
    """Split ``table`` into (train, held-out) by :func:`is_holdout`.

    The split depends only on the prompt texts and ``frac``, so training with ``--holdout 0.2`` and evaluating
    with ``--holdout 0.2`` on the same database never mixes the two parts, and prompts added later keep the
    side they fall on.
    """
    if not 0.0 < frac < 1.0:
        raise InputError(f"--holdout {frac}: must be a share between 0 and 1, e.g. 0.2")
    test = [i for i, p in enumerate(table.prompts) if is_holdout(p, frac)]
    held = set(test)
    train = [i for i in range(len(table.prompts)) if i not in held]
    if not test or not train:
        raise MeasurementsError(
            f"{table.path or 'measurements'}: --holdout {frac} leaves {len(train)} training "
            f"and {len(test)} held-out prompts of {len(table.prompts)}; measure more prompts or change "
            "--holdout"
        )
    return table.subset(train), table.subset(test)
