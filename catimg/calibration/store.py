"""The measurement store: a SQLite file holding calibration images, their measured seconds and their scores.

Default location: ``$CATIMG_DATA_DIR/measurements.sqlite`` or the platformdirs user data dir for ``catimg``;
``--db PATH`` chooses another file.

Tables
    meta        key/value: ``application_id`` = ``catimg``, ``schema_version``, ``created``
    generators  one row per *settings hash* (:meth:`catimg.config.Generator.settings_hash`): a changed
                generator (steps, scheduler, size, source …) is a new row and its old measurements stay
    prompts     prompt text, unique
    images      one generated image: prompt, generator hash, seed, file path, measured seconds, device, source
    scores      one value per (image, metric), with the scorer that produced it

The long format that ``catimg train --measurements`` reads (``prompt, generator, score, metric, seconds, seed,
source``) moves in and out with :meth:`Store.export` and :meth:`Store.import_file`. The store keeps only the
SQL: the row type, reading and writing files, the pivot into a table and the held-out split belong to
:mod:`catimg.measurements`.

This module is the API (:class:`Store`: the campaign lock, recording, the queries, export and import); the
file itself (location, schema and its version checks, opening, transactions, the row primitives) is
:mod:`catimg.calibration.store_schema`, and importing a long-format file is
:mod:`catimg.calibration.store_import`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from catimg.calibration.store_import import ImportCounts, import_rows
from catimg.calibration.store_schema import (
    APPLICATION_ID,
    DB_FILENAME,
    SCHEMA_VERSION,
    SQLITE_APPLICATION_ID,
    connect,
    default_db_path,
    insert_generator,
    now,
    prompt_id,
    transaction,
)
from catimg.config import Generator
from catimg.errors import MeasurementsError, StoreError
from catimg.measurements import Measurement, MeasurementTable, pivot, read_rows, write_measurements

__all__ = [
    "APPLICATION_ID",
    "DB_FILENAME",
    "SCHEMA_VERSION",
    "SQLITE_APPLICATION_ID",
    "GeneratorSummary",
    "ImportCounts",
    "Store",
    "default_db_path",
]

#: Generators selected by catalog entries (their current settings) or by names (every settings recorded).
GeneratorSelection: TypeAlias = Sequence[Generator] | Sequence[str] | None


@dataclass(frozen=True)
class GeneratorSummary:
    """Per generator and metric: how many images are scored, their total measured seconds, the mean score."""

    name: str
    hash: str
    images: int
    seconds: float
    mean_score: float | None
    prompts: int


class _Lock:
    """An exclusive advisory lock on ``<db>.lock`` so that two campaigns never write one store."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: Any = None

    def acquire(self) -> bool:
        self._fh = open(self.path, "a+b")  # noqa: SIM115
        try:
            if os.name == "nt":  # pragma: no cover - Windows
                import msvcrt

                self._fh.seek(0)
                msvcrt.locking(self._fh.fileno(), msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
            else:
                import fcntl

                fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._fh.close()
            self._fh = None
            return False
        return True

    def release(self) -> None:
        if self._fh is None:
            return
        try:
            if os.name == "nt":  # pragma: no cover
                import msvcrt

                self._fh.seek(0)
                msvcrt.locking(self._fh.fileno(), msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined]
            else:
                import fcntl

                fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
        finally:
            self._fh.close()
            self._fh = None


class Store:
    """An open measurement store. Use :meth:`open` (or ``with Store.open(path) as store``)."""

    def __init__(self, path: Path, conn: sqlite3.Connection, dry_run: bool = False) -> None:
        self.path = path
        self._conn = conn
        self._lock: _Lock | None = None
        #: A dry-run store reads the database but never writes it (see :meth:`open`).
        self.dry_run = dry_run

    # --- opening -------------------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | Path | None = None,
        *,
        create: bool = True,
        busy_timeout: float = 5.0,
        dry_run: bool = False,
    ) -> Store:
        """Open (and with ``create`` make) the store at ``path`` (default :func:`default_db_path`).

        With ``dry_run`` nothing is written: a missing (or empty) database is not created (an empty store in
        memory stands in for it, still named ``path``) and writing methods must not be called.

        Raises :class:`StoreError` for a file that is not catimg's, of a newer schema, or locked.
        """
        p = Path(path).expanduser() if path is not None else default_db_path()
        return cls(p, connect(p, create=create, busy_timeout=busy_timeout, dry_run=dry_run), dry_run=dry_run)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        if self.dry_run:
            raise RuntimeError(f"{self.path}: a dry-run store must not be written")
        with transaction(self._conn, self.path) as c:
            yield c

    def close(self) -> None:
        self.release_campaign()
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the campaign lock ----------------------------------------------------------------------------------

    def acquire_campaign(self) -> None:
        """Take the exclusive campaign lock; :class:`StoreError` when another calibrate holds it."""
        if self._lock is not None:
            return
        lock = _Lock(self.path.with_name(self.path.name + ".lock"))
        if not lock.acquire():
            raise StoreError(
                f"another catimg calibrate is running on {self.path}; wait for it to finish or pass --db PATH"
            )
        self._lock = lock

    def release_campaign(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # --- writing --------------------------------------------------------------------------------------------

    def register_generator(self, gen: Generator) -> str:
        """Record a generator under its settings hash (its current name wins) and return the hash."""
        h = gen.settings_hash()
        if self.dry_run:  # planning only: the hash is all a plan needs
            return h
        with self._tx() as c:
            insert_generator(c, h, gen.name, gen.settings(), rename=True)
        return h

    def record(
        self,
        prompt: str,
        generator_hash: str,
        seed: int,
        scores: dict[str, float],
        *,
        seconds: float | None = None,
        path: str | Path | None = None,
        device: str | None = None,
        source: str = "calibrate",
        scorer: str | None = None,
    ) -> int:
        """Record one image and its scores in one transaction (an existing image is updated); returns its
        id."""
        with self._tx() as c:
            image_id = _upsert_image(
                c,
                (prompt_id(c, prompt), generator_hash, seed),
                None if path is None else str(path),
                seconds,
                device,
                source,
            )
            for metric, value in scores.items():
                c.execute(
                    "INSERT OR REPLACE INTO scores (image_id, metric, value, scorer) VALUES (?, ?, ?, ?)",
                    (image_id, metric, float(value), scorer),
                )
        return image_id

    # --- reading --------------------------------------------------------------------------------------------

    def done(self, metric: str, generator_hashes: Iterable[str]) -> set[tuple[str, str, int]]:
        """(generator hash, prompt, seed) triples that already have a ``metric`` score."""
        hashes = list(generator_hashes)
        if not hashes:
            return set()
        q = (
            "SELECT i.generator_hash, p.text, i.seed FROM images i JOIN prompts p ON p.id = i.prompt_id "
            "JOIN scores s ON s.image_id = i.id WHERE s.metric = ? AND i.generator_hash IN "
            f"({','.join('?' * len(hashes))})"
        )
        return {(h, t, int(s)) for h, t, s in self._conn.execute(q, [metric, *hashes])}

    def metrics(self) -> dict[str, int]:
        """Metric name -> number of scored images."""
        return dict(
            self._conn.execute(
                "SELECT metric, COUNT(*) FROM scores GROUP BY metric ORDER BY metric"
            ).fetchall()
        )

    def generators(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(hash, name, settings) of every generator ever recorded."""
        return [
            (h, n, json.loads(s))
            for h, n, s in self._conn.execute(
                "SELECT hash, name, settings FROM generators ORDER BY name, first_seen"
            )
        ]

    def measurements(
        self, metric: str | None = None, generators: GeneratorSelection = None
    ) -> list[Measurement]:
        """Rows of the long format.

        ``generators`` as :class:`Generator` objects selects their *current* settings hash (old settings are
        left out); as names it selects every hash recorded under those names; ``None`` takes everything (a
        name recorded with several settings then names the older ones ``name~hash8``).
        """
        where, args, rename = _selection(generators)
        if metric is not None:
            where.insert(0, "s.metric = ?")
            args.insert(0, metric)
        if generators is None:
            rename = _display_names(self._conn)
        q = (
            "SELECT p.text, g.hash, g.name, s.value, s.metric, i.seconds, i.seed, i.source "
            "FROM scores s JOIN images i ON i.id = s.image_id JOIN prompts p ON p.id = i.prompt_id "
            "JOIN generators g ON g.hash = i.generator_hash"
        )
        if where:
            q += " WHERE " + " AND ".join(where)
        q += " ORDER BY p.id, g.name, i.seed, s.metric"
        return [
            Measurement(text, rename.get(h, name), float(value), m, seconds, seed, source)
            for text, h, name, value, m, seconds, seed, source in self._conn.execute(q, args)
        ]

    def summary(self, metric: str, generators: Sequence[Generator]) -> list[GeneratorSummary]:
        """Per catalog generator (current settings): scored images, total measured seconds, mean score."""
        out = []
        for g in generators:
            h = g.settings_hash()
            n, secs, mean, prompts = self._conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(i.seconds), 0), AVG(s.value), COUNT(DISTINCT i.prompt_id) "
                "FROM images i JOIN scores s ON s.image_id = i.id "
                "WHERE i.generator_hash = ? AND s.metric = ?",
                (h, metric),
            ).fetchone()
            out.append(
                GeneratorSummary(
                    g.name, h, int(n), float(secs), None if mean is None else float(mean), int(prompts)
                )
            )
        return out

    def measured_seconds(self, gen: Generator, device: str | None = None) -> float | None:
        """Median measured seconds per image of ``gen`` (current settings), optionally on one device class."""
        q = "SELECT seconds FROM images WHERE generator_hash = ? AND seconds IS NOT NULL"
        args: list[Any] = [gen.settings_hash()]
        if device is not None:
            q += " AND device = ?"
            args.append(device)
        vals = sorted(float(r[0]) for r in self._conn.execute(q, args))
        if not vals:
            return None
        mid = len(vals) // 2
        return vals[mid] if len(vals) % 2 else 0.5 * (vals[mid - 1] + vals[mid])

    def _of_metric(self, metric: str, generators: GeneratorSelection) -> list[Measurement]:
        rows = self.measurements(metric, generators)
        if not rows:
            have = self.metrics()
            what = ", ".join(f"{k} ({v} images)" for k, v in have.items()) or "none"
            raise MeasurementsError(
                f'{self.path}: no measurements of metric "{metric}" for the selected generators '
                f"(stored metrics: {what}); run `catimg calibrate --metric {metric}` or choose --metric"
            )
        return rows

    def to_table(self, metric: str, generators: GeneratorSelection = None) -> MeasurementTable:
        """The store's ``metric`` measurements as a table (:func:`catimg.measurements.pivot`; catalog order
        first); :class:`MeasurementsError` when the metric has no measurements."""
        columns = [g.name if isinstance(g, Generator) else str(g) for g in generators or ()]
        return pivot(self._of_metric(metric, generators), metric, columns=columns, path=self.path)

    # --- export / import ------------------------------------------------------------------------------------

    def export(
        self, path: str | Path, metric: str | None = None, generators: GeneratorSelection = None
    ) -> int:
        """Write the long format to ``path`` (:func:`catimg.measurements.write_measurements`); returns the row
        count."""
        return write_measurements(self.measurements(metric, generators), path)

    def import_file(
        self, path: str | Path, generators: Sequence[Generator] = (), default_metric: str = "score"
    ) -> ImportCounts:
        """Read a long-format CSV/JSONL file into the store (:mod:`catimg.calibration.store_import`); returns
        how many scores were new, updated (another value for the same image and metric) and unchanged (already
        there: importing a file again changes nothing).

        A generator named in ``generators`` (the catalog) is keyed by its settings hash; any other name by a
        hash of its name alone (``source`` settings unknown). Rows without a seed are numbered per (prompt,
        generator, metric) in file order, so importing a file twice does not double it.
        """
        rows = read_rows(path)
        with self._tx() as c:
            return import_rows(c, rows, generators, default_metric, f"import:{Path(path).name}")


def _selection(generators: GeneratorSelection) -> tuple[list[str], list[Any], dict[str, str]]:
    """(WHERE clauses, their arguments, hash -> name) selecting ``generators`` (see
    :meth:`Store.measurements`)."""
    if generators is None:
        return [], [], {}
    gens = list(generators)
    if gens and isinstance(gens[0], Generator):
        rename = {g.settings_hash(): g.name for g in gens if isinstance(g, Generator)}
        return [f"i.generator_hash IN ({','.join('?' * len(rename))})"], list(rename), rename
    names = [str(g) for g in gens]
    return [f"g.name IN ({','.join('?' * len(names))})"], names, {}


def _display_names(conn: sqlite3.Connection) -> dict[str, str]:
    """Generator hash -> name in exports: a name's most recently measured settings keep the name, older
    settings recorded under the same name become ``name~hash8``."""
    latest: dict[str, str] = {}
    for h, n, _ in conn.execute(
        "SELECT g.hash, g.name, MAX(i.id) FROM generators g "
        "LEFT JOIN images i ON i.generator_hash = g.hash GROUP BY g.hash ORDER BY MAX(i.id)"
    ):
        latest[n] = h
    return {
        h: n if latest.get(n) == h else f"{n}~{h[:8]}"
        for h, n in conn.execute("SELECT hash, name FROM generators ORDER BY name, first_seen")
    }


def _upsert_image(
    c: sqlite3.Connection,
    key: tuple[int, str, int],
    path: str | None,
    seconds: float | None,
    device: str | None,
    source: str,
) -> int:
    """The id of the image ``key`` = (prompt id, generator hash, seed): inserted when new, else its path,
    seconds and device updated with the values given (None keeps the stored one)."""
    row = c.execute(
        "SELECT id FROM images WHERE prompt_id = ? AND generator_hash = ? AND seed = ?", key
    ).fetchone()
    if row is None:
        cur = c.execute(
            "INSERT INTO images (prompt_id, generator_hash, seed, path, seconds, device, source, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (*key, path, seconds, device, source, now()),
        )
        return int(cur.lastrowid or 0)
    image_id = int(row[0])
    c.execute(
        "UPDATE images SET path = COALESCE(?, path), seconds = COALESCE(?, seconds), "
        "device = COALESCE(?, device) WHERE id = ?",
        (path, seconds, device, image_id),
    )
    return image_id
