"""The measurement store: a SQLite file holding calibration images, their measured seconds and their scores.

Default location: ``$CATIMG_DATA_DIR/measurements.sqlite`` or the platformdirs user data dir for ``catimg``;
``--db PATH`` chooses another file.

Tables
    meta        key/value: ``application_id`` = ``catimg``, ``schema_version``, ``created``
    generators  one row per *settings hash* (:meth:`catimg.config.Generator.settings_hash`): a changed generator
                (steps, scheduler, size, source …) is a new row and its old measurements stay
    prompts     prompt text, unique
    images      one generated image: prompt, generator hash, seed, file path, measured seconds, device, source
    scores      one value per (image, metric), with the scorer that produced it

The long format that ``catimg train --measurements`` reads (``prompt, generator, score, metric, seconds, seed,
source``) moves in and out with :meth:`Store.export` and :meth:`Store.import_file`. This module keeps only the
SQL: the row type, reading and writing files, the pivot into a table and the held-out split belong to
:mod:`catimg.measurements`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catimg.config import Generator
from catimg.errors import MeasurementsError, StoreError
from catimg.measurements import Measurement, MeasurementTable, pivot, read_rows, write_measurements

APPLICATION_ID = "catimg"
SCHEMA_VERSION = 1
#: SQLite header field ``PRAGMA application_id`` (ASCII "CATI"), set next to the meta table.
SQLITE_APPLICATION_ID = 0x43415449
DB_FILENAME = "measurements.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS generators (
    hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    settings TEXT NOT NULL,
    first_seen TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS prompts (id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    prompt_id INTEGER NOT NULL REFERENCES prompts(id),
    generator_hash TEXT NOT NULL REFERENCES generators(hash),
    seed INTEGER NOT NULL,
    path TEXT,
    seconds REAL,
    device TEXT,
    source TEXT NOT NULL DEFAULT 'calibrate',
    created TEXT NOT NULL,
    UNIQUE (prompt_id, generator_hash, seed)
);
CREATE TABLE IF NOT EXISTS scores (
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    metric TEXT NOT NULL,
    value REAL NOT NULL,
    scorer TEXT,
    PRIMARY KEY (image_id, metric)
);
CREATE INDEX IF NOT EXISTS images_by_generator ON images (generator_hash);
"""


def default_db_path() -> Path:
    """``$CATIMG_DATA_DIR/measurements.sqlite``, else the platformdirs user data dir for catimg."""
    env = os.environ.get("CATIMG_DATA_DIR")
    if env:
        return Path(env).expanduser() / DB_FILENAME
    import platformdirs

    return Path(platformdirs.user_data_dir("catimg")) / DB_FILENAME


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


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
        if p.is_dir():
            raise StoreError(
                f"{p}: is a folder, not a catimg measurement database; pass --db PATH/{DB_FILENAME}"
            )
        exists = p.exists() and p.stat().st_size > 0
        if not exists and not create:
            raise StoreError(
                f"{p}: no measurement database here; run `catimg calibrate` first or pass --db PATH"
            )
        if exists and not _looks_like_sqlite(p):
            raise StoreError(f"{p}: not a catimg measurement database (not SQLite); pass another --db PATH")
        if dry_run and (not exists or not _has_tables(p, busy_timeout)):
            # nothing to read, and nothing may be written: plan against an empty store in memory
            store = cls(p, sqlite3.connect(":memory:", isolation_level=None), dry_run=True)
            store._init(False)
            return store
        if not exists:
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"{p.parent}: cannot create the data folder ({exc.strerror}); pass --db PATH"
                ) from exc
        try:
            conn = sqlite3.connect(str(p), timeout=busy_timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"{p}: cannot open database ({exc}); pass another --db PATH") from exc
        store = cls(p, conn, dry_run=dry_run)
        try:
            store._init(exists)
        except sqlite3.OperationalError as exc:
            conn.close()
            if "locked" in str(exc) or "busy" in str(exc):
                raise StoreError(
                    f"{p}: database is locked by another catimg process; wait or pass --db PATH"
                ) from exc
            raise StoreError(f"{p}: cannot use database ({exc}); pass another --db PATH") from exc
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(
                f"{p}: not a catimg measurement database ({exc}); pass another --db PATH"
            ) from exc
        except StoreError:
            conn.close()
            raise
        return store

    def _init(self, exists: bool) -> None:
        c = self._conn
        c.execute("PRAGMA foreign_keys = ON")
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if exists and tables:
            if "meta" not in tables:
                raise StoreError(
                    f"{self.path}: not a catimg measurement database (no meta table); pass another --db PATH"
                )
            meta = dict(c.execute("SELECT key, value FROM meta").fetchall())
            if meta.get("application_id") != APPLICATION_ID:
                raise StoreError(
                    f"{self.path}: not a catimg measurement database (application id "
                    f"{meta.get('application_id')!r}); pass another --db PATH"
                )
            try:
                version = int(meta.get("schema_version", "0"))
            except ValueError:
                version = -1
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: written by a newer catimg (schema {version}; this catimg reads up to "
                    f"{SCHEMA_VERSION}); upgrade catimg or pass another --db PATH"
                )
            if version < 1:
                raise StoreError(
                    f"{self.path}: unknown schema version {meta.get('schema_version')!r}; pass another --db PATH"
                )
            return
        # a new or empty SQLite file: make it ours, in one transaction
        c.execute("BEGIN IMMEDIATE")
        try:
            for stmt in _SCHEMA.strip().split(";"):
                if stmt.strip():
                    c.execute(stmt)
            c.execute("INSERT OR REPLACE INTO meta VALUES ('application_id', ?)", (APPLICATION_ID,))
            c.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            c.execute("INSERT OR IGNORE INTO meta VALUES ('created', ?)", (_now(),))
            c.execute(f"PRAGMA application_id = {SQLITE_APPLICATION_ID}")
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        with contextlib.suppress(sqlite3.Error):
            c.execute("PRAGMA journal_mode = WAL")

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        if self.dry_run:
            raise RuntimeError(f"{self.path}: a dry-run store must not be written")
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(
                f"{self.path}: database is locked by another catimg process; wait or pass --db PATH"
            ) from exc
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        else:
            self._conn.execute("COMMIT")

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
        settings = json.dumps(gen.settings(), sort_keys=True)
        with self._tx() as c:
            c.execute(
                "INSERT INTO generators (hash, name, settings, first_seen) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(hash) DO UPDATE SET name = excluded.name",
                (h, gen.name, settings, _now()),
            )
        return h

    def _register_raw(self, c: sqlite3.Connection, h: str, name: str, settings: dict[str, Any]) -> None:
        c.execute(
            "INSERT INTO generators (hash, name, settings, first_seen) VALUES (?, ?, ?, ?) ON CONFLICT(hash) DO NOTHING",
            (h, name, json.dumps(settings, sort_keys=True), _now()),
        )

    @staticmethod
    def _prompt_id(c: sqlite3.Connection, prompt: str) -> int:
        c.execute("INSERT OR IGNORE INTO prompts (text) VALUES (?)", (prompt,))
        row = c.execute("SELECT id FROM prompts WHERE text = ?", (prompt,)).fetchone()
        return int(row[0])

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
        """Record one image and its scores in one transaction (an existing image is updated); returns its id."""
        with self._tx() as c:
            pid = self._prompt_id(c, prompt)
            row = c.execute(
                "SELECT id FROM images WHERE prompt_id = ? AND generator_hash = ? AND seed = ?",
                (pid, generator_hash, seed),
            ).fetchone()
            spath = None if path is None else str(path)
            if row is None:
                cur = c.execute(
                    "INSERT INTO images (prompt_id, generator_hash, seed, path, seconds, device, source, created) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (pid, generator_hash, seed, spath, seconds, device, source, _now()),
                )
                image_id = int(cur.lastrowid or 0)
            else:
                image_id = int(row[0])
                c.execute(
                    "UPDATE images SET path = COALESCE(?, path), seconds = COALESCE(?, seconds), "
                    "device = COALESCE(?, device) WHERE id = ?",
                    (spath, seconds, device, image_id),
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
        self, metric: str | None = None, generators: Sequence[Generator] | Sequence[str] | None = None
    ) -> list[Measurement]:
        """Rows of the long format.

        ``generators`` as :class:`Generator` objects selects their *current* settings hash (old settings are
        left out); as names it selects every hash recorded under those names; ``None`` takes everything (a name
        recorded with several settings then names the older ones ``name~hash8``).
        """
        args: list[Any] = []
        where = []
        if metric is not None:
            where.append("s.metric = ?")
            args.append(metric)
        rename: dict[str, str] = {}
        if generators is not None:
            gens = list(generators)
            if gens and isinstance(gens[0], Generator):
                rename = {g.settings_hash(): g.name for g in gens if isinstance(g, Generator)}
                where.append(f"i.generator_hash IN ({','.join('?' * len(rename))})")
                args.extend(rename)
            else:
                names = [str(g) for g in gens]
                where.append(f"g.name IN ({','.join('?' * len(names))})")
                args.extend(names)
        else:
            latest: dict[str, str] = {}
            for h, n, _ in self._conn.execute(
                "SELECT g.hash, g.name, MAX(i.id) FROM generators g LEFT JOIN images i ON i.generator_hash = g.hash "
                "GROUP BY g.hash ORDER BY MAX(i.id)"
            ):
                latest[n] = h
            for h, n, _ in self.generators():
                rename[h] = n if latest.get(n) == h else f"{n}~{h[:8]}"
        q = (
            "SELECT p.text, g.hash, g.name, s.value, s.metric, i.seconds, i.seed, i.source "
            "FROM scores s JOIN images i ON i.id = s.image_id JOIN prompts p ON p.id = i.prompt_id "
            "JOIN generators g ON g.hash = i.generator_hash"
        )
        if where:
            q += " WHERE " + " AND ".join(where)
        q += " ORDER BY p.id, g.name, i.seed, s.metric"
        out = []
        for text, h, name, value, m, seconds, seed, source in self._conn.execute(q, args):
            out.append(Measurement(text, rename.get(h, name), float(value), m, seconds, seed, source))
        return out

    def summary(self, metric: str, generators: Sequence[Generator]) -> list[GeneratorSummary]:
        """Per catalog generator (current settings): scored images, total measured seconds, mean score."""
        out = []
        for g in generators:
            h = g.settings_hash()
            n, secs, mean, prompts = self._conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(i.seconds), 0), AVG(s.value), COUNT(DISTINCT i.prompt_id) FROM images i "
                "JOIN scores s ON s.image_id = i.id WHERE i.generator_hash = ? AND s.metric = ?",
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

    def to_rows(
        self, metric: str, generators: Sequence[Generator] | Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """Long-format dicts for ``metric``; :class:`MeasurementsError` when the metric has no measurements."""
        return [m.as_dict() for m in self._of_metric(metric, generators)]

    def _of_metric(
        self, metric: str, generators: Sequence[Generator] | Sequence[str] | None
    ) -> list[Measurement]:
        rows = self.measurements(metric, generators)
        if not rows:
            have = self.metrics()
            what = ", ".join(f"{k} ({v} images)" for k, v in have.items()) or "none"
            raise MeasurementsError(
                f'{self.path}: no measurements of metric "{metric}" for the selected generators '
                f"(stored metrics: {what}); run `catimg calibrate --metric {metric}` or choose --metric"
            )
        return rows

    def to_table(
        self, metric: str, generators: Sequence[Generator] | Sequence[str] | None = None
    ) -> MeasurementTable:
        """The store's ``metric`` measurements as a table (:func:`catimg.measurements.pivot`; catalog order first)."""
        columns = [g.name if isinstance(g, Generator) else str(g) for g in generators or ()]
        return pivot(self._of_metric(metric, generators), metric, columns=columns, path=self.path)

    # --- export / import ------------------------------------------------------------------------------------

    def export(
        self,
        path: str | Path,
        metric: str | None = None,
        generators: Sequence[Generator] | Sequence[str] | None = None,
    ) -> int:
        """Write the long format to ``path`` (:func:`catimg.measurements.write_measurements`); returns the row count."""
        return write_measurements(self.measurements(metric, generators), path)

    def import_file(
        self, path: str | Path, generators: Sequence[Generator] = (), default_metric: str = "score"
    ) -> ImportCounts:
        """Read a long-format CSV/JSONL file into the store; returns how many scores were new, updated (another
        value for the same image and metric) and unchanged (already there: importing a file again changes nothing).

        A generator named in ``generators`` (the catalog) is keyed by its settings hash; any other name by a
        hash of its name alone (``source`` settings unknown). Rows without a seed are numbered per (prompt,
        generator, metric) in file order, so importing a file twice does not double it.
        """
        rows = read_rows(path)
        by_name = {g.name: g for g in generators}
        counters: dict[tuple[str, str, str], int] = {}
        new = updated = unchanged = 0
        with self._tx() as c:
            known: set[str] = set()
            for r in rows:
                name = r.generator
                gen = by_name.get(name)
                h = gen.settings_hash() if gen is not None else "name:" + name
                if h not in known:
                    settings = gen.settings() if gen is not None else {"name": name, "imported": True}
                    self._register_raw(c, h, name, settings)
                    known.add(h)
                metric = r.metric or default_metric
                seed = r.seed
                if seed is None:
                    k = (r.prompt, h, metric)
                    counters[k] = counters.get(k, 0) + 1
                    seed = -counters[k]
                pid = self._prompt_id(c, r.prompt)
                c.execute(
                    "INSERT OR IGNORE INTO images (prompt_id, generator_hash, seed, path, seconds, device, source, created) "
                    "VALUES (?, ?, ?, NULL, ?, NULL, ?, ?)",
                    (pid, h, seed, r.seconds, r.source or f"import:{Path(path).name}", _now()),
                )
                if r.seconds is not None:
                    c.execute(
                        "UPDATE images SET seconds = ? WHERE prompt_id = ? AND generator_hash = ? AND seed = ?",
                        (r.seconds, pid, h, seed),
                    )
                image_id = c.execute(
                    "SELECT id FROM images WHERE prompt_id = ? AND generator_hash = ? AND seed = ?",
                    (pid, h, seed),
                ).fetchone()[0]
                before = c.execute(
                    "SELECT value FROM scores WHERE image_id = ? AND metric = ?", (image_id, metric)
                ).fetchone()
                if before is not None and float(before[0]) == float(r.score):
                    unchanged += 1
                    continue
                c.execute(
                    "INSERT OR REPLACE INTO scores (image_id, metric, value, scorer) VALUES (?, ?, ?, ?)",
                    (image_id, metric, r.score, "import"),
                )
                if before is None:
                    new += 1
                else:
                    updated += 1
        return ImportCounts(new=new, updated=updated, unchanged=unchanged)


@dataclass(frozen=True)
class ImportCounts:
    """What :meth:`Store.import_file` did with the file's scores."""

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


def _has_tables(p: Path, busy_timeout: float) -> bool:
    """Whether the SQLite file ``p`` has any table (it only reads; an unreadable file counts as having some, so
    that the normal open reports the problem). A plain connection, not ``mode=ro``: a read-only one would leave
    the -wal/-shm files of a WAL database behind."""
    try:
        conn = sqlite3.connect(str(p), timeout=busy_timeout)
    except sqlite3.Error:
        return True
    try:
        return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' LIMIT 1").fetchone() is not None
    except sqlite3.Error:
        return True
    finally:
        conn.close()


def _looks_like_sqlite(p: Path) -> bool:
    try:
        with open(p, "rb") as fh:
            return fh.read(16) == b"SQLite format 3\x00"
    except OSError as exc:
        raise StoreError(
            f"{p}: cannot read ({exc.strerror}); check its permissions or pass --db PATH"
        ) from exc
