"""What the sandbox keeps: session bytes, session records, clusters, its secret.

Layout under ``data_dir``: ``sandbox.sqlite3`` (records) and ``sessions/<sha256(key)>`` (one file of
raw bytes per upload session). A session's offset is the size of its file, so bytes that arrived
before a client vanished (or before the sandbox was killed) still count. All SQLite access goes
through one connection behind one lock; bytes are appended outside that lock, with at most one
writer per session at a time.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from daemon.clock import Clock

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    session_key TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    entity_length INTEGER,
    complete INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS clusters (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    cluster_id TEXT NOT NULL UNIQUE,
    handle TEXT NOT NULL UNIQUE,
    session_key TEXT NOT NULL,
    file_type TEXT NOT NULL,
    organization_id TEXT,
    created_at TEXT NOT NULL,
    size INTEGER NOT NULL,
    images TEXT NOT NULL
);
"""
_CLUSTER_ID_BASE = 4_000_000_000_000_000  # cluster ids look like the real ones: 16 digits


class SessionBusyError(Exception):
    """Another request is appending to the same session right now."""


class OffsetMismatchError(Exception):
    """The client's ``Offset`` is not the number of bytes held; ``held`` is."""

    def __init__(self, held: int) -> None:
        super().__init__(f"held {held} bytes")
        self.held = held


@dataclass(frozen=True)
class Session:
    """One upload session: ``complete`` means its last POST ended cleanly at the announced size."""

    key: str
    size: int
    created_at: int
    complete: bool


@dataclass(frozen=True)
class ImageRecord:
    """One image of a bundle manifest, as finished. ``md5`` is None until the clusters are
    listed (:meth:`SandboxStore.clusters` computes it then: ``finish_upload`` stays quick,
    as the real service's, which processes uploads after answering)."""

    handle: str
    session_key: str
    md5: str | None
    size: int
    description: dict[str, Any]


@dataclass(frozen=True)
class ClusterDraft:
    """What a successful ``finish_upload`` wants recorded."""

    handle: str
    session_key: str
    file_type: str
    organization_id: str | None
    size: int
    images: list[ImageRecord] = field(default_factory=list)


@dataclass(frozen=True)
class Cluster:
    """A recorded cluster; :meth:`as_json` is its ``/_sandbox/clusters`` entry."""

    cluster_id: str
    created_at: str
    draft: ClusterDraft

    def as_json(self) -> dict[str, Any]:
        d = self.draft
        out: dict[str, Any] = {
            "cluster_id": self.cluster_id,
            "file_type": d.file_type,
            "organization_id": d.organization_id,
            "created_at": self.created_at,
            "handle": d.handle,
            "session_key": d.session_key,
            "size": d.size,
        }
        if d.file_type == "mly_bundle_manifest":
            out["images"] = [_image_json(i) for i in d.images]
        return out


def _image_json(image: ImageRecord) -> dict[str, Any]:
    return {
        "handle": image.handle,
        "session_key": image.session_key,
        "md5": image.md5,
        "size": image.size,
        "description": image.description,
    }


class Appender:
    """Appends one request body to a claimed session; see :meth:`SandboxStore.append`."""

    def __init__(self, fp: BinaryIO, size: int, entity_length: int | None) -> None:
        self._fp = fp
        self.size = size
        self._entity_length = entity_length
        self.ended_cleanly = False

    def write(self, data: bytes) -> None:
        """Append ``data`` now, unbuffered (so it survives a later cut)."""
        self._fp.write(data)
        self.size += len(data)

    @property
    def complete(self) -> bool:
        """The body ended cleanly and the session reached its announced length, if any."""
        length_ok = self._entity_length is None or self.size == self._entity_length
        return self.ended_cleanly and length_ok


class SandboxStore:
    """Durable records and bytes of one sandbox. Thread-safe."""

    def __init__(self, data_dir: Path, clock: Clock) -> None:
        self._clock = clock
        self._sessions_dir = data_dir / "sessions"
        self._sessions_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._busy: set[str] = set()
        self._db = sqlite3.connect(
            data_dir / "sandbox.sqlite3", check_same_thread=False, isolation_level=None
        )
        # WAL + NORMAL: three small commits per POST under one lock would otherwise make the
        # sandbox, not the client under test, the bottleneck (~13 ms of fsyncs per request).
        # A sandbox's records need no power-cut durability.
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.executescript(_SCHEMA)
        self.secret = self._load_secret()

    def close(self) -> None:
        """Close the database; the store is unusable afterwards."""
        with self._lock:
            self._db.close()

    def _load_secret(self) -> bytes:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO meta (name, value) VALUES ('secret', ?)",
                (secrets.token_bytes(32),),
            )
            row = self._db.execute("SELECT value FROM meta WHERE name = 'secret'").fetchone()
        return bytes(row[0])

    def _path(self, session_key: str) -> Path:
        return self._sessions_dir / hashlib.sha256(session_key.encode()).hexdigest()

    # --- sessions ------------------------------------------------------------------------------

    def offset(self, session_key: str) -> int:
        """Bytes held for ``session_key`` (0 when unknown)."""
        path = self._path(session_key)
        return path.stat().st_size if path.exists() else 0

    def session(self, session_key: str) -> Session | None:
        """The session's record, or None if no POST ever reached it."""
        with self._lock:
            row = self._db.execute(
                "SELECT created_at, complete FROM sessions WHERE session_key = ?", (session_key,)
            ).fetchone()
        if row is None:
            return None
        return Session(session_key, self.offset(session_key), int(row[0]), bool(row[1]))

    def read(self, session_key: str) -> bytes:
        """All bytes held for ``session_key`` (empty when unknown)."""
        path = self._path(session_key)
        return path.read_bytes() if path.exists() else b""

    def read_head(self, session_key: str, size: int) -> bytes:
        """The first ``size`` bytes held for ``session_key`` (fewer when it holds fewer)."""
        try:
            with self._path(session_key).open("rb") as fh:
                return fh.read(size)
        except FileNotFoundError:
            return b""

    @contextmanager
    def append(
        self, session_key: str, offset: int, entity_length: int | None
    ) -> Iterator[Appender]:
        """Claim ``session_key`` for one request body starting at ``offset``.

        Raises :class:`SessionBusyError` when another request holds the session and
        :class:`OffsetMismatchError` when ``offset`` is not the size held. On exit the session's
        ``complete`` flag becomes :attr:`Appender.complete` (set ``ended_cleanly`` when the body's
        end was seen).
        """
        self._claim(session_key)
        try:
            held = self.offset(session_key)
            if offset != held:
                raise OffsetMismatchError(held)
            self._ensure_row(session_key, entity_length)
            with self._path(session_key).open("ab", buffering=0) as fp:
                appender = Appender(fp, held, entity_length)
                try:
                    yield appender
                finally:
                    self._set_complete(session_key, appender.complete)
        finally:
            with self._lock:
                self._busy.discard(session_key)

    def truncate(self, session_key: str, size: int) -> bool:
        """Make the session hold only its first ``size`` bytes (a server that lost the rest, for
        fault injection); it is then incomplete. False, changing nothing, while it is busy."""
        try:
            self._claim(session_key)
        except SessionBusyError:
            return False
        try:
            path = self._path(session_key)
            if path.exists() and path.stat().st_size > size:
                with path.open("r+b") as fp:
                    fp.truncate(size)
                self._set_complete(session_key, False)
            return True
        finally:
            with self._lock:
                self._busy.discard(session_key)

    def _claim(self, session_key: str) -> None:
        with self._lock:
            if session_key in self._busy:
                raise SessionBusyError(session_key)
            self._busy.add(session_key)

    def _ensure_row(self, session_key: str, entity_length: int | None) -> None:
        now = int(self._clock.now().timestamp())
        with self._lock:
            self._db.execute(
                "INSERT INTO sessions (session_key, created_at, entity_length) VALUES (?, ?, ?)"
                " ON CONFLICT(session_key) DO UPDATE SET"
                " entity_length = coalesce(excluded.entity_length, entity_length)",
                (session_key, now, entity_length),
            )

    def _set_complete(self, session_key: str, complete: bool) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE sessions SET complete = ? WHERE session_key = ?",
                (int(complete), session_key),
            )

    # --- clusters ------------------------------------------------------------------------------

    def cluster_by_handle(self, handle: str) -> Cluster | None:
        """The cluster already finished from ``handle``, if any."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_CLUSTER_COLUMNS} FROM clusters WHERE handle = ?", (handle,)
            ).fetchone()
        return None if row is None else _cluster_from_row(row)

    def add_cluster(self, draft: ClusterDraft) -> Cluster:
        """Record ``draft`` unless its handle was finished already; return the stored cluster."""
        created_at = self._clock.now().isoformat()
        images = json.dumps([_image_json(i) for i in draft.images], sort_keys=True)
        with self._lock:  # one connection behind one lock: check-then-insert is atomic
            self._insert_cluster(draft, created_at, images)
            row = self._db.execute(
                f"SELECT {_CLUSTER_COLUMNS} FROM clusters WHERE handle = ?", (draft.handle,)
            ).fetchone()
        return _cluster_from_row(row)

    def _insert_cluster(self, draft: ClusterDraft, created_at: str, images: str) -> None:
        if self._db.execute("SELECT 1 FROM clusters WHERE handle = ?", (draft.handle,)).fetchone():
            return
        (seq,) = self._db.execute("SELECT coalesce(max(seq), 0) + 1 FROM clusters").fetchone()
        self._db.execute(
            "INSERT INTO clusters (seq, cluster_id, handle, session_key, file_type,"
            " organization_id, created_at, size, images) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                seq,
                str(_CLUSTER_ID_BASE + seq),
                draft.handle,
                draft.session_key,
                draft.file_type,
                draft.organization_id,
                created_at,
                draft.size,
                images,
            ),
        )

    def clusters(self) -> list[Cluster]:
        """Every cluster, in creation order, with the md5 of every image (computed and
        recorded on the first listing after its finish)."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_CLUSTER_COLUMNS} FROM clusters ORDER BY seq"
            ).fetchall()
        clusters = [_cluster_from_row(r) for r in rows]
        return [self._with_md5s(c) for c in clusters]

    def _with_md5s(self, cluster: Cluster) -> Cluster:
        images = cluster.draft.images
        if all(i.md5 is not None for i in images):
            return cluster
        images = [
            i
            if i.md5 is not None
            else replace(i, md5=hashlib.md5(self.read(i.session_key)).hexdigest())
            for i in images
        ]
        column = json.dumps([_image_json(i) for i in images], sort_keys=True)
        with self._lock:
            self._db.execute(
                "UPDATE clusters SET images = ? WHERE handle = ?", (column, cluster.draft.handle)
            )
        return replace(cluster, draft=replace(cluster.draft, images=images))


_CLUSTER_COLUMNS = (
    "cluster_id, created_at, handle, session_key, file_type, organization_id, size, images"
)


def _cluster_from_row(row: tuple[Any, ...]) -> Cluster:
    cluster_id, created_at, handle, session_key, file_type, org, size, images = row
    draft = ClusterDraft(
        handle=handle,
        session_key=session_key,
        file_type=file_type,
        organization_id=org,
        size=int(size),
        images=[ImageRecord(**i) for i in json.loads(images)],
    )
    return Cluster(str(cluster_id), str(created_at), draft)
