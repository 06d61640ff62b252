"""SQLite connections and schema migrations for the queue.

Every connection: WAL journal, ``synchronous=FULL`` (a commit survives a power cut: the queue
records irreversible facts such as "this image is on Mapillary"), a busy timeout, foreign keys.
Connections are opened in autocommit mode; writes go through :func:`write`, which holds
``BEGIN IMMEDIATE`` so a read-then-write transaction can never fail half-way with SQLITE_BUSY.
One connection per thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from daemon.diskspace import DiskFull, is_full_error
from daemon.errors import StateError

BUSY_TIMEOUT_MS = 30_000

#: The schema, one entry per version. Never edit a released entry: append a new one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE batches (
        id INTEGER PRIMARY KEY,
        watch TEXT NOT NULL,
        opened_at REAL NOT NULL,
        last_added_at REAL NOT NULL,
        closed_at REAL
    );
    CREATE INDEX batches_open ON batches (closed_at, watch);

    CREATE TABLE sequences (
        id TEXT PRIMARY KEY,
        batch_id INTEGER REFERENCES batches (id),
        state TEXT NOT NULL,
        image_count INTEGER NOT NULL,
        first_capture TEXT,
        manifest_key TEXT,
        manifest_handle TEXT,
        cluster_id TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL DEFAULT 0,
        reason TEXT,
        detail TEXT,
        lease_owner TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX sequences_state ON sequences (state, next_attempt_at);

    CREATE TABLE items (
        id INTEGER PRIMARY KEY,
        sha256 TEXT NOT NULL,
        account TEXT NOT NULL DEFAULT '',
        kind TEXT NOT NULL,
        size INTEGER NOT NULL,
        source_path TEXT NOT NULL,
        data_path TEXT NOT NULL,
        watch TEXT NOT NULL,
        batch_id INTEGER REFERENCES batches (id),
        state TEXT NOT NULL,
        reason TEXT,
        detail TEXT,
        capture_time TEXT,
        lat REAL,
        lon REAL,
        alt REAL,
        heading REAL,
        make TEXT,
        model TEXT,
        width INTEGER,
        height INTEGER,
        orientation INTEGER,
        sequence_id TEXT REFERENCES sequences (id),
        seq_index INTEGER,
        session_key TEXT,
        handle TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL DEFAULT 0,
        lease_owner TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (sha256, account)
    );
    CREATE INDEX items_state ON items (state, next_attempt_at);
    CREATE INDEX items_sequence ON items (sequence_id, seq_index);
    CREATE INDEX items_batch ON items (batch_id, state);

    CREATE TABLE occurrences (
        path TEXT PRIMARY KEY,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        item_id INTEGER NOT NULL REFERENCES items (id),
        seen_at REAL NOT NULL
    );
    CREATE INDEX occurrences_item ON occurrences (item_id);

    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2: what processing said about a batch (clock offset applied or refused, track notes).
    """
    ALTER TABLE batches ADD COLUMN notes TEXT
    """,
    # 3: pulled cards and freeing them. The volume (card identity, daemon/volumes.py) each file
    # was found on, the volume an item whose source vanished waits for, and what was freed.
    """
    ALTER TABLE occurrences ADD COLUMN volume TEXT;
    ALTER TABLE items ADD COLUMN wait_volume TEXT;
    CREATE TABLE freed (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL,
        item_id INTEGER NOT NULL REFERENCES items (id),
        sha256 TEXT NOT NULL,
        volume TEXT NOT NULL,
        action TEXT NOT NULL,
        moved_to TEXT,
        outcome TEXT NOT NULL,
        detail TEXT,
        at REAL NOT NULL
    );
    CREATE INDEX freed_path ON freed (path, item_id)
    """,
    # 4: trimmed native videos. Each kept stretch of a video is an item of its own (kind
    # 'video', the same data path) that points at the whole video's item and carries its
    # window in movie seconds; the whole video's item ends 'trimmed'.
    """
    ALTER TABLE items ADD COLUMN parent_id INTEGER REFERENCES items (id);
    ALTER TABLE items ADD COLUMN clip_start REAL;
    ALTER TABLE items ADD COLUMN clip_end REAL
    """,
)


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating and migrating if needed) the queue database at ``path``.

    Raise :class:`StateError` naming the file when it cannot be opened, is not a database, or
    was written by a newer mapillaryd.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn)
    except sqlite3.DatabaseError as exc:
        raise StateError(f"{path}: cannot use the queue database: {exc}") from exc
    except DiskFull as exc:
        raise StateError(f"{path}: cannot migrate the queue database: {exc}") from exc
    except OSError as exc:
        raise StateError(f"{path}: cannot create the state directory: {exc.strerror}") from exc
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    """Apply every migration newer than the database's ``user_version``, each in a transaction."""
    with write(conn):
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StateError(
                f"the queue database is at schema version {version}, newer than this mapillaryd "
                f"understands ({len(MIGRATIONS)}); upgrade mapillaryd"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")


@contextmanager
def write(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on any exception.

    Raise :class:`daemon.diskspace.DiskFull` when the disk holding the database is full
    (``SQLITE_FULL``): the transaction is rolled back whole, nothing half-written remains, and
    the caller can hold its work until space returns.
    """
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:  # SQLITE_FULL mid-statement may have rolled it back
                conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error:
            if conn.in_transaction:  # SQLite may or may not have rolled back on its own
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        if is_full_error(exc):
            raise DiskFull("the queue database", f"its disk is full ({exc})") from exc
        raise
