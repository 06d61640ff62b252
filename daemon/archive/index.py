"""The archive index: which images are known, which are archived and where, and every run.

One SQLite file per archive folder, kept in the state directory (not beside the archive, which
may be on storage where SQLite locking is unreliable). WAL with ``synchronous=NORMAL``: a killed
process loses nothing committed; a power cut may lose the last few rows, which only means those
images are fetched again and written over themselves (same path, atomic rename).

Listing is resumable: each page's images and the ``paging.next`` URL that follows it are
committed in one transaction, so a killed run continues from the page after the last one
committed. Deletions on the server are noted (``deleted_on_server_at``), never propagated.

A sequence folder an image was archived into is noted ``unfinished`` in the same transaction,
until its sidecar (and tar) is written: a run killed before then finishes it on the next run.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from daemon.archive.meta import ImageMeta
from daemon.errors import StateError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    sequence TEXT,
    captured_at INTEGER,
    meta TEXT NOT NULL,
    path TEXT,
    packed TEXT,
    size INTEGER,
    archived_at REAL,
    last_seen_pass INTEGER,
    deleted_on_server_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS images_user ON images (username, path);
CREATE INDEX IF NOT EXISTS images_seq ON images (sequence);
CREATE TABLE IF NOT EXISTS passes (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL,
    started_at REAL NOT NULL,
    next_url TEXT,
    pages INTEGER NOT NULL DEFAULT 0,
    listed INTEGER NOT NULL DEFAULT 0,
    completed_at REAL
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    result TEXT NOT NULL,
    reason TEXT,
    listed INTEGER NOT NULL DEFAULT 0,
    downloaded INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    deleted_on_server INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS unfinished (
    username TEXT NOT NULL,
    seq_dir TEXT NOT NULL,
    PRIMARY KEY (username, seq_dir)
);
"""


def index_path(state_dir: Path, archive_dir: Path) -> Path:
    """The index file for ``archive_dir``: ``<state>/archive/<hash of the folder>.sqlite3``."""
    key = hashlib.sha256(str(archive_dir.resolve()).encode()).hexdigest()[:16]
    return state_dir / "archive" / f"{key}.sqlite3"


@dataclass(frozen=True)
class Pass:
    """A listing pass over a user's images; ``next_url`` None and not completed = first page."""

    id: int
    username: str
    next_url: str | None
    pages: int
    listed: int
    completed: bool


@dataclass(frozen=True)
class RunRecord:
    id: int
    kind: str
    started_at: float
    finished_at: float | None
    result: str
    reason: str | None
    listed: int
    downloaded: int
    skipped: int
    failed: int
    bytes: int
    deleted_on_server: int

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class ArchiveIndex:
    """The index of one archive folder. Thread-safe (one connection behind a lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=30
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StateError(f"archive index {path}: {exc}") from exc
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _one(self, sql: str, *args: Any) -> Any:
        with self._lock:
            row = self._db.execute(sql, args).fetchone()
        return row[0] if row else None

    # --- listing ---------------------------------------------------------------------------

    def open_pass(self, username: str, now: float) -> Pass:
        """The unfinished listing pass of ``username`` (a killed run's), or a new one."""
        with self._write() as db:
            row = db.execute(
                "SELECT id, next_url, pages, listed FROM passes"
                " WHERE username = ? AND completed_at IS NULL ORDER BY id DESC LIMIT 1",
                (username,),
            ).fetchone()
            if row is None:
                cur = db.execute(
                    "INSERT INTO passes (username, started_at) VALUES (?, ?)", (username, now)
                )
                row = (cur.lastrowid, None, 0, 0)
        return Pass(int(row[0]), username, row[1], int(row[2]), int(row[3]), False)

    def record_page(self, p: Pass, images: list[ImageMeta], next_url: str | None) -> Pass:
        """One page's images (new ones added, known ones marked seen) and the URL of the next
        page, in one transaction. Returns the updated pass."""
        with self._write() as db:
            for m in images:
                db.execute(
                    "INSERT INTO images (id, username, sequence, captured_at, meta, last_seen_pass)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                    " last_seen_pass = excluded.last_seen_pass, deleted_on_server_at = NULL,"
                    " meta = CASE WHEN images.path IS NULL THEN excluded.meta ELSE images.meta END",
                    (
                        m.id,
                        p.username,
                        m.sequence,
                        m.captured_at_ms,
                        json.dumps(m.raw, separators=(",", ":")),
                        p.id,
                    ),
                )
            db.execute(
                "UPDATE passes SET next_url = ?, pages = pages + 1, listed = listed + ?"
                " WHERE id = ?",
                (next_url, len(images), p.id),
            )
        return Pass(p.id, p.username, next_url, p.pages + 1, p.listed + len(images), False)

    def complete_pass(self, p: Pass, now: float) -> int:
        """Close the pass; archived images it did not see are noted as deleted on the server.
        Returns how many were newly noted."""
        with self._write() as db:
            cur = db.execute(
                "UPDATE images SET deleted_on_server_at = ? WHERE username = ?"
                " AND (last_seen_pass IS NULL OR last_seen_pass < ?)"
                " AND deleted_on_server_at IS NULL",
                (now, p.username, p.id),
            )
            db.execute("UPDATE passes SET completed_at = ? WHERE id = ?", (now, p.id))
            return cur.rowcount

    def add_known(self, images: list[ImageMeta], username: str) -> None:
        """Images found outside a listing pass (one-shot downloads by id or sequence)."""
        with self._write() as db:
            for m in images:
                db.execute(
                    "INSERT INTO images (id, username, sequence, captured_at, meta)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                    (
                        m.id,
                        username,
                        m.sequence,
                        m.captured_at_ms,
                        json.dumps(m.raw, separators=(",", ":")),
                    ),
                )

    # --- downloads --------------------------------------------------------------------------

    def pending(self, username: str) -> list[dict[str, Any]]:
        """API metadata of the user's images not archived yet (and not deleted on the server),
        in sequence and capture order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT meta FROM images WHERE username = ? AND path IS NULL"
                " AND deleted_on_server_at IS NULL ORDER BY sequence, captured_at, id",
                (username,),
            ).fetchall()
        return [json.loads(r[0]) for r in rows]

    def archived_path(self, image_id: str) -> str | None:
        return self._one("SELECT path FROM images WHERE id = ?", image_id)  # type: ignore[no-any-return]

    def mark_archived(self, image_id: str, path: str, size: int, now: float) -> None:
        """The image is at ``path``; its folder is unfinished until :meth:`mark_finished`."""
        with self._write() as db:
            db.execute(
                "UPDATE images SET path = ?, size = ?, archived_at = ?, last_error = NULL,"
                " packed = NULL WHERE id = ?",
                (path, size, now, image_id),
            )
            db.execute(
                "INSERT INTO unfinished (username, seq_dir) SELECT username, ? FROM images"
                " WHERE id = ? ON CONFLICT DO NOTHING",
                (str(PurePosixPath(path).parent), image_id),
            )

    def unfinished(self, username: str) -> list[str]:
        """Sequence folders (relative) written to whose sidecar or tar may be out of date."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq_dir FROM unfinished WHERE username = ? ORDER BY seq_dir", (username,)
            ).fetchall()
        return [str(r[0]) for r in rows]

    def mark_finished(self, username: str, seq_dir: str) -> None:
        with self._write() as db:
            db.execute(
                "DELETE FROM unfinished WHERE username = ? AND seq_dir = ?", (username, seq_dir)
            )

    def unpacked(self, username: str) -> list[str]:
        """Sequence folders (relative) holding archived images not noted as packed into a tar."""
        with self._lock:
            rows = self._db.execute(
                "SELECT path FROM images WHERE username = ? AND path IS NOT NULL"
                " AND packed IS NULL AND sequence IS NOT NULL",
                (username,),
            ).fetchall()
        return sorted({str(PurePosixPath(r[0]).parent) for r in rows})

    def mark_failed(self, image_id: str, error: str) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE images SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                (error[:500], image_id),
            )

    def sequence_rows(self, username: str, sequence: str | None) -> list[tuple[str, str, str]]:
        """(id, path, meta JSON) of the archived images of one sequence."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, path, meta FROM images WHERE username = ? AND sequence IS ?"
                " AND path IS NOT NULL ORDER BY captured_at, id",
                (username, sequence),
            ).fetchall()
        return [(str(a), str(b), str(c)) for a, b, c in rows]

    def mark_packed(self, image_ids: list[str], tar: str) -> None:
        with self._write() as db:
            db.executemany(
                "UPDATE images SET packed = ? WHERE id = ?", [(tar, i) for i in image_ids]
            )

    def counts(self, username: str | None = None) -> dict[str, int]:
        where, args = ("WHERE username = ?", (username,)) if username else ("", ())
        with self._lock:
            row = self._db.execute(
                "SELECT count(*), count(path), coalesce(sum(size), 0),"
                " count(deleted_on_server_at),"
                " sum(CASE WHEN path IS NULL AND last_error IS NOT NULL THEN 1 ELSE 0 END)"
                f" FROM images {where}",
                args,
            ).fetchone()
        return {
            "known": int(row[0]),
            "archived": int(row[1]),
            "archived_bytes": int(row[2]),
            "deleted_on_server": int(row[3]),
            "failed": int(row[4] or 0),
        }

    def failed_ids(self, username: str) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM images WHERE username = ? AND path IS NULL"
                " AND last_error IS NOT NULL ORDER BY id",
                (username,),
            ).fetchall()
        return [str(r[0]) for r in rows]

    # --- runs -------------------------------------------------------------------------------

    def start_run(self, kind: str, now: float) -> int:
        with self._write() as db:
            # A run that never finished was killed: say so instead of leaving it "running".
            db.execute(
                "UPDATE runs SET result = 'interrupted', finished_at = started_at"
                " WHERE result = 'running'"
            )
            cur = db.execute(
                "INSERT INTO runs (kind, started_at, result) VALUES (?, ?, 'running')",
                (kind, now),
            )
            return int(cur.lastrowid or 0)

    def finish_run(
        self, run_id: int, now: float, result: str, reason: str | None, **counts: int
    ) -> None:
        sets = "".join(f", {k} = ?" for k in counts)
        with self._write() as db:
            db.execute(
                f"UPDATE runs SET finished_at = ?, result = ?, reason = ?{sets} WHERE id = ?",
                (now, result, reason, *counts.values(), run_id),
            )

    def runs(self, limit: int = 10) -> list[RunRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, kind, started_at, finished_at, result, reason, listed, downloaded,"
                " skipped, failed, bytes, deleted_on_server FROM runs ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [RunRecord(*r) for r in rows]

    def get_meta(self, name: str) -> str | None:
        return self._one("SELECT value FROM meta WHERE name = ?", name)  # type: ignore[no-any-return]

    def set_meta(self, name: str, value: str) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO meta (name, value) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, value),
            )
