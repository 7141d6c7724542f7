"""Importing long-format measurement rows (``catimg calibrate --import``) into the measurement store.

:func:`import_rows` writes rows read by :func:`catimg.measurements.read_rows` inside the caller's transaction
and counts what it did (:class:`ImportCounts`): a score is *new*, *updated* (another value for the same image
and metric) or *unchanged* (already there), so importing a file twice changes nothing. A generator named in
the catalog is keyed by its settings hash; any other name by a hash of its name alone (``name:NAME``, its
settings unknown). Rows without a seed are numbered per (prompt, generator, metric) in file order (-1, -2, …).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from catimg.calibration.store_schema import insert_generator, now, prompt_id
from catimg.config import Generator
from catimg.measurements import Measurement


@dataclass(frozen=True)
class ImportCounts:
    """What :meth:`catimg.calibration.store.Store.import_file` did with the file's scores."""

    new: int
    updated: int
    unchanged: int

    @property
    def total(self) -> int:
        return self.new + self.updated + self.unchanged

    def describe(self) -> str:
        """``120 scores: 0 new, 0 updated, 120 unchanged (already in the database)``."""
        return (
            f"{self.total:,} scores: {self.new:,} new, {self.updated:,} updated, {self.unchanged:,} unchanged"
            + (" (already in the database)" if self.unchanged and not (self.new or self.updated) else "")
        )


def import_rows(
    c: sqlite3.Connection,
    rows: Iterable[Measurement],
    generators: Sequence[Generator],
    default_metric: str,
    default_source: str,
) -> ImportCounts:
    """Write ``rows`` through ``c`` (in the caller's transaction) by the rules of the module doc.

    ``default_metric`` names a row's metric when it has none, ``default_source`` its source.
    """
    by_name = {g.name: g for g in generators}
    counters: dict[tuple[str, str, str], int] = {}
    known: set[str] = set()
    counts = {"new": 0, "updated": 0, "unchanged": 0}
    for r in rows:
        gen = by_name.get(r.generator)
        h = gen.settings_hash() if gen is not None else "name:" + r.generator
        if h not in known:
            settings = gen.settings() if gen is not None else {"name": r.generator, "imported": True}
            insert_generator(c, h, r.generator, settings, rename=False)
            known.add(h)
        metric = r.metric or default_metric
        seed = r.seed
        if seed is None:
            k = (r.prompt, h, metric)
            counters[k] = counters.get(k, 0) + 1
            seed = -counters[k]
        image_id = _image(c, prompt_id(c, r.prompt), h, seed, r.seconds, r.source or default_source)
        counts[_score(c, image_id, metric, r.score)] += 1
    return ImportCounts(**counts)


def _image(c: sqlite3.Connection, pid: int, h: str, seed: int, seconds: float | None, source: str) -> int:
    """The id of the image (prompt, generator hash, seed), inserted when new; a row's seconds replace the
    stored ones."""
    c.execute(
        "INSERT OR IGNORE INTO images "
        "(prompt_id, generator_hash, seed, path, seconds, device, source, created) "
        "VALUES (?, ?, ?, NULL, ?, NULL, ?, ?)",
        (pid, h, seed, seconds, source, now()),
    )
    if seconds is not None:
        c.execute(
            "UPDATE images SET seconds = ? WHERE prompt_id = ? AND generator_hash = ? AND seed = ?",
            (seconds, pid, h, seed),
        )
    row = c.execute(
        "SELECT id FROM images WHERE prompt_id = ? AND generator_hash = ? AND seed = ?", (pid, h, seed)
    ).fetchone()
    return int(row[0])


def _score(c: sqlite3.Connection, image_id: int, metric: str, value: float) -> str:
    """Store one imported score; says whether it was ``new``, ``updated`` or ``unchanged``."""
    before = c.execute(
        "SELECT value FROM scores WHERE image_id = ? AND metric = ?", (image_id, metric)
    ).fetchone()
    if before is not None and float(before[0]) == float(value):
        return "unchanged"
    c.execute(
        "INSERT OR REPLACE INTO scores (image_id, metric, value, scorer) VALUES (?, ?, ?, ?)",
        (image_id, metric, value, "import"),
    )
    return "new" if before is None else "updated"
