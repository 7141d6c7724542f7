"""The measurement store's SQLite file: where it lives, its schema, opening it, transactions.

:func:`connect` opens (and with ``create`` makes) a file as catimg's measurement database and refuses, with
one :class:`~catimg.errors.StoreError` line each, a folder, a file that is not SQLite or not catimg's, a newer
schema and a locked file. A new (or empty) file gets the schema, the ``meta`` rows (``application_id``,
``schema_version``, ``created``) and SQLite's own ``PRAGMA application_id`` in one transaction, then WAL
journaling. :func:`transaction` is the one way to write (``BEGIN IMMEDIATE``, rollback on any exception), and
:func:`prompt_id` and :func:`insert_generator` are the row primitives both recording and importing share.

:class:`catimg.calibration.store.Store` is the API over this file; the table layout is in its module
docstring.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from catimg.errors import StoreError

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


def now() -> str:
    """The local time as the store records it (``created``, ``first_seen``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# --- opening
# ---------------------------------------------------------------------------------------------------


def connect(p: Path, *, create: bool, busy_timeout: float, dry_run: bool) -> sqlite3.Connection:
    """A connection to the catimg measurement database ``p``, checked (and with ``create`` made) by the rules
    of the module doc. With ``dry_run`` nothing is written: a missing or empty file gives an empty database in
    memory instead."""
    if p.is_dir():
        raise StoreError(f"{p}: is a folder, not a catimg measurement database; pass --db PATH/{DB_FILENAME}")
    exists = p.exists() and p.stat().st_size > 0
    if not exists and not create:
        raise StoreError(f"{p}: no measurement database here; run `catimg calibrate` first or pass --db PATH")
    if exists and not _looks_like_sqlite(p):
        raise StoreError(f"{p}: not a catimg measurement database (not SQLite); pass another --db PATH")
    if dry_run and (not exists or not _has_tables(p, busy_timeout)):
        # nothing to read, and nothing may be written: plan against an empty store in memory
        memory = sqlite3.connect(":memory:", isolation_level=None)
        _init(memory, p, False)
        return memory
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
    try:
        _init(conn, p, exists)
    except sqlite3.OperationalError as exc:
        conn.close()
        if "locked" in str(exc) or "busy" in str(exc):
            raise StoreError(
                f"{p}: database is locked by another catimg process; wait or pass --db PATH"
            ) from exc
        raise StoreError(f"{p}: cannot use database ({exc}); pass another --db PATH") from exc
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"{p}: not a catimg measurement database ({exc}); pass another --db PATH") from exc
    except StoreError:
        conn.close()
        raise
    return conn


def _init(c: sqlite3.Connection, path: Path, exists: bool) -> None:
    """Check an existing catimg database, or make a new (or empty) SQLite file one."""
    c.execute("PRAGMA foreign_keys = ON")
    tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if exists and tables:
        _check_meta(c, path, tables)
        return
    # a new or empty SQLite file: make it ours, in one transaction
    c.execute("BEGIN IMMEDIATE")
    try:
        for stmt in _SCHEMA.strip().split(";"):
            if stmt.strip():
                c.execute(stmt)
        c.execute("INSERT OR REPLACE INTO meta VALUES ('application_id', ?)", (APPLICATION_ID,))
        c.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        c.execute("INSERT OR IGNORE INTO meta VALUES ('created', ?)", (now(),))
        c.execute(f"PRAGMA application_id = {SQLITE_APPLICATION_ID}")
        c.execute("COMMIT")
    except BaseException:
        c.execute("ROLLBACK")
        raise
    with contextlib.suppress(sqlite3.Error):
        c.execute("PRAGMA journal_mode = WAL")


def _check_meta(c: sqlite3.Connection, path: Path, tables: set[str]) -> None:
    """StoreError unless the meta table says catimg wrote the file with a schema this catimg reads."""
    if "meta" not in tables:
        raise StoreError(f"{path}: not a catimg measurement database (no meta table); pass another --db PATH")
    meta = dict(c.execute("SELECT key, value FROM meta").fetchall())
    if meta.get("application_id") != APPLICATION_ID:
        raise StoreError(
            f"{path}: not a catimg measurement database (application id "
            f"{meta.get('application_id')!r}); pass another --db PATH"
        )
    try:
        version = int(meta.get("schema_version", "0"))
    except ValueError:
        version = -1
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: written by a newer catimg (schema {version}; this catimg reads up to "
            f"{SCHEMA_VERSION}); upgrade catimg or pass another --db PATH"
        )
    if version < 1:
        raise StoreError(
            f"{path}: unknown schema version {meta.get('schema_version')!r}; pass another --db PATH"
        )


def _has_tables(p: Path, busy_timeout: float) -> bool:
    """Whether the SQLite file ``p`` has any table (it only reads; an unreadable file counts as having some,
    so that the normal open reports the problem). A plain connection, not ``mode=ro``: a read-only one would
    leave the -wal/-shm files of a WAL database behind."""
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


# --- writing
# ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection, path: Path) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on any exception); StoreError when another process holds
    the write lock past the busy timeout."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise StoreError(
            f"{path}: database is locked by another catimg process; wait or pass --db PATH"
        ) from exc
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")


def prompt_id(c: sqlite3.Connection, prompt: str) -> int:
    """The id of ``prompt`` in the prompts table, inserting it when new."""
    c.execute("INSERT OR IGNORE INTO prompts (text) VALUES (?)", (prompt,))
    row = c.execute("SELECT id FROM prompts WHERE text = ?", (prompt,)).fetchone()
    return int(row[0])


def insert_generator(
    c: sqlite3.Connection, h: str, name: str, settings: dict[str, Any], *, rename: bool
) -> None:
    """Record generator settings under their hash; an existing hash keeps its settings and first-seen time,
    and takes ``name`` only with ``rename`` (the catalog's current name wins, an imported file's does not)."""
    conflict = "DO UPDATE SET name = excluded.name" if rename else "DO NOTHING"
    c.execute(
        "INSERT INTO generators (hash, name, settings, first_seen) VALUES (?, ?, ?, ?) "
        f"ON CONFLICT(hash) {conflict}",
        (h, name, json.dumps(settings, sort_keys=True), now()),
    )
