"""The persistent work queue: every transition of an item or sequence is one transaction.

Identity is content: an item is one SHA-256 (per account). The same bytes found again — renamed,
on another card, in a second folder — become an *occurrence* of the existing item, never a
second item, so nothing is uploaded twice.

Item life: ``ingested`` (hashed, metadata read, its batch still open) → ``queued`` (cut into a
sequence) → ``uploading`` (claimed by a worker of this boot) → ``uploaded`` (handle stored) →
``done`` (its sequence has a cluster id). Side exits, each with ``reason`` + ``detail``:
``rejected`` (processing said no), ``quarantined`` (broken container), ``held`` (not supported
yet, kept for a later version), ``failed`` (the server refused it for good). A queued item may
carry ``next_attempt_at`` and a ``reason`` saying why it waits. ``source_missing``: its file
vanished before upload (card pulled); it waits for the volume it was found on
(``wait_volume``) and is queued again when that volume and the file are back.

Each occurrence records the volume (card identity, :mod:`daemon.volumes`) it was found on;
the ``freed`` table records every card file freed (or deliberately kept) after its content was
done (:mod:`daemon.freeing`).

Sequence life: ``uploading`` (images in flight) → ``finishing`` (every image settled; the
manifest and ``finish_upload`` remain) → ``done`` (cluster id) or ``failed``.

Rows are never deleted on dequeue; claiming sets ``lease_owner`` to the boot id, and
:meth:`Queue.release_stale` frees every lease of an earlier boot at start-up.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from daemon.store import db


class ItemState(StrEnum):
    INGESTED = "ingested"
    QUEUED = "queued"
    UPLOADING = "uploading"
    UPLOADED = "uploaded"
    DONE = "done"
    REJECTED = "rejected"
    QUARANTINED = "quarantined"
    HELD = "held"
    FAILED = "failed"
    #: A video sampled into frames; its frames carry on as images.
    SAMPLED = "sampled"
    #: Its file vanished (card pulled) before it was uploaded: it waits for the volume
    #: ``wait_volume`` to come back, then is queued again. Never done, never failed.
    SOURCE_MISSING = "source_missing"
    #: A native video cut into clips (its kept stretches); each clip carries on as a video
    #: item of its own (``parent_id``), the note in ``detail`` says what was kept and dropped.
    TRIMMED = "trimmed"


class SequenceState(StrEnum):
    UPLOADING = "uploading"
    FINISHING = "finishing"
    DONE = "done"
    FAILED = "failed"


#: Item states from which nothing more will happen to the item in its sequence.
SETTLED_IN_SEQUENCE = (ItemState.UPLOADED, ItemState.FAILED, ItemState.REJECTED)


@dataclass(frozen=True)
class Item:
    """One queue row, as the pipeline needs it."""

    id: int
    sha256: str
    kind: str
    size: int
    source_path: str
    data_path: str
    watch: str
    batch_id: int | None
    state: str
    reason: str | None
    detail: str | None
    capture_time: str | None
    lat: float | None
    lon: float | None
    alt: float | None
    heading: float | None
    make: str | None
    model: str | None
    width: int | None
    height: int | None
    orientation: int | None
    sequence_id: str | None
    seq_index: int | None
    session_key: str | None
    handle: str | None
    attempts: int
    #: A clip of a trimmed video: the whole video's item, and the window in movie seconds.
    parent_id: int | None = None
    clip_start: float | None = None
    clip_end: float | None = None
    #: The volume holding the bytes of an item read in place (the card it waits for when they
    #: go missing); None for spool copies and items recorded before volumes were.
    wait_volume: str | None = None

    @property
    def clip(self) -> tuple[float, float] | None:
        """``(start, end)`` movie seconds when the item is a clip of a trimmed video."""
        if self.clip_start is None or self.clip_end is None:
            return None
        return self.clip_start, self.clip_end

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Item:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Metadata:
    """What was read from a file (at ingest: EXIF facts, any of which may be missing) or
    decided for it (after processing: its final time and place)."""

    capture_time: str | None
    lat: float | None
    lon: float | None
    alt: float | None = None
    heading: float | None = None
    make: str | None = None
    model: str | None = None
    width: int | None = None
    height: int | None = None
    orientation: int | None = None


@dataclass(frozen=True)
class Verdict:
    """An item that will not be uploaded (now): its state, a stable reason code and a message."""

    state: ItemState
    reason: str
    detail: str


@dataclass(frozen=True)
class Placement:
    """Where processing put one image of a sequence: its final time, place and heading."""

    item_id: int
    capture_time: str
    lat: float
    lon: float
    alt: float | None
    heading: float | None


@dataclass(frozen=True)
class Clip:
    """A kept stretch of a trimmed video, queued as a video item of its own.

    ``key`` is its identity in place of a content hash (a digest of the video's SHA-256 and
    the window, so the same cut gives the same row); ``start_s``/``end_s`` the window in
    movie seconds; ``placement`` its first position and time (``item_id``: the video's).
    """

    key: str
    sequence_id: str
    start_s: float
    end_s: float
    placement: Placement


@dataclass(frozen=True)
class NewFile:
    """A settled, hashed file about to be recorded."""

    watch: str
    source_path: str
    size: int
    mtime_ns: int
    sha256: str
    kind: str
    data_path: str
    #: The identity of the volume (card) it was found on (see daemon/volumes.py), if known.
    volume: str | None = None


@dataclass(frozen=True)
class FreeCandidate:
    """A file on a card whose content is durably done: it may be freed, after checks."""

    path: str
    item_id: int
    sha256: str
    size: int
    mtime_ns: int
    volume: str
    #: The id of a ``freed`` row left ``pending`` by an interrupted freeing, if any.
    pending_id: int | None
    pending_action: str | None
    pending_moved_to: str | None


@dataclass(frozen=True)
class SequenceRow:
    id: str
    state: str
    image_count: int
    manifest_key: str | None
    manifest_handle: str | None
    cluster_id: str | None
    attempts: int


class Queue:
    """Queue operations over one connection (one per thread); ``now`` is wall-clock epoch."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @classmethod
    def open(cls, path: Path) -> Queue:
        return cls(db.connect(path))

    def close(self) -> None:
        self.conn.close()

    # --- discovery ------------------------------------------------------------------------

    def is_known(self, path: str, size: int, mtime_ns: int) -> bool:
        """True if ``path`` was recorded with this size and mtime (no need to hash it again)."""
        row = self.conn.execute(
            "SELECT 1 FROM occurrences WHERE path = ? AND size = ? AND mtime_ns = ?",
            (path, size, mtime_ns),
        ).fetchone()
        return row is not None

    def item_by_sha(self, sha256: str) -> Item | None:
        row = self.conn.execute("SELECT * FROM items WHERE sha256 = ?", (sha256,)).fetchone()
        return Item.from_row(row) if row else None

    def record_file(self, f: NewFile, outcome: Metadata | Verdict, now: float) -> tuple[Item, bool]:
        """Record a settled file; return its item and whether the item is new.

        Content already known (any path, any card) only adds an occurrence. A new item joins the
        open batch of its watch folder (opening one if needed).
        """
        with db.write(self.conn) as c:
            existing = c.execute("SELECT * FROM items WHERE sha256 = ?", (f.sha256,)).fetchone()
            if existing is not None:
                self._occurrence(f, existing["id"], now)
                return Item.from_row(existing), False
            batch_id = self._open_batch(f.watch, now)
            values: dict[str, Any] = {
                "sha256": f.sha256,
                "kind": f.kind,
                "size": f.size,
                "source_path": f.source_path,
                "data_path": f.data_path,
                "watch": f.watch,
                "batch_id": batch_id,
                "created_at": now,
                "updated_at": now,
            }
            if f.data_path == f.source_path:  # read in place: its bytes stay on that volume
                values["wait_volume"] = f.volume
            if isinstance(outcome, Metadata):
                values["state"] = ItemState.INGESTED
                values.update(vars(outcome))
            else:
                values.update(state=outcome.state, reason=outcome.reason, detail=outcome.detail)
            cols = ", ".join(values)
            marks = ", ".join("?" for _ in values)
            cur = c.execute(f"INSERT INTO items ({cols}) VALUES ({marks})", tuple(values.values()))
            item_id = cur.lastrowid
            assert item_id is not None
            self._occurrence(f, item_id, now)
            c.execute("UPDATE batches SET last_added_at = ? WHERE id = ?", (now, batch_id))
            row = c.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
            return Item.from_row(row), True

    def _occurrence(self, f: NewFile, item_id: int, now: float) -> None:
        self.conn.execute(
            "INSERT INTO occurrences (path, size, mtime_ns, item_id, seen_at, volume)"
            " VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns,"
            " item_id = excluded.item_id, seen_at = excluded.seen_at, volume = excluded.volume",
            (f.source_path, f.size, f.mtime_ns, item_id, now, f.volume),
        )

    def _open_batch(self, watch: str, now: float) -> int:
        row = self.conn.execute(
            "SELECT id FROM batches WHERE watch = ? AND closed_at IS NULL ORDER BY id DESC LIMIT 1",
            (watch,),
        ).fetchone()
        if row is not None:
            return int(row["id"])
        cur = self.conn.execute(
            "INSERT INTO batches (watch, opened_at, last_added_at) VALUES (?, ?, ?)",
            (watch, now, now),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    # --- batches and sequences ------------------------------------------------------------

    def close_quiet_batches(self, now: float, quiet_seconds: float, busy: Iterable[str]) -> None:
        """Close open batches with no new file for ``quiet_seconds``, unless their watch is busy.

        A ``last_added_at`` in the future (the clock jumped back) is reset to ``now``, so the batch
        closes one quiet window after the jump instead of never.
        """
        busy_set = set(busy)
        with db.write(self.conn) as c:
            rows = c.execute(
                "SELECT id, watch, last_added_at FROM batches WHERE closed_at IS NULL"
            ).fetchall()
            for row in rows:
                last = row["last_added_at"]
                if last > now:  # stamped before the clock jumped back: count from now
                    c.execute("UPDATE batches SET last_added_at = ? WHERE id = ?", (now, row["id"]))
                    continue
                if row["watch"] not in busy_set and now - last >= quiet_seconds:
                    c.execute("UPDATE batches SET closed_at = ? WHERE id = ?", (now, row["id"]))

    def batch_in_place(self, batch_id: int) -> list[tuple[str, str, str]]:
        """(data_path, volume, watch) of the batch's items still to be processed whose bytes
        are read where they were found, on a known volume."""
        rows = self.conn.execute(
            "SELECT data_path, wait_volume, watch FROM items WHERE batch_id = ? AND state = ?"
            " AND wait_volume IS NOT NULL",
            (batch_id, ItemState.INGESTED),
        ).fetchall()
        return [(r["data_path"], r["wait_volume"], r["watch"]) for r in rows]

    def batches_to_cut(self) -> list[int]:
        """Closed batches that still hold ingested items (also after a crash mid-cut)."""
        rows = self.conn.execute(
            "SELECT DISTINCT b.id FROM batches b JOIN items i ON i.batch_id = b.id"
            " WHERE b.closed_at IS NOT NULL AND i.state = ? ORDER BY b.id",
            (ItemState.INGESTED,),
        ).fetchall()
        return [int(r["id"]) for r in rows]

    def ingested_items(self, batch_id: int) -> list[Item]:
        rows = self.conn.execute(
            "SELECT * FROM items WHERE batch_id = ? AND state = ? ORDER BY id",
            (batch_id, ItemState.INGESTED),
        ).fetchall()
        return [Item.from_row(r) for r in rows]

    def assign_sequences(
        self,
        batch_id: int,
        sequences: Sequence[tuple[str, Sequence[Placement]]],
        rejected: Sequence[tuple[int, Verdict]],
        now: float,
        notes: Sequence[str] = (),
        clips: Sequence[Clip] = (),
    ) -> None:
        """Store the cut of a batch (and what processing noted about it) in one transaction.

        ``sequences`` holds (sequence id, [placement…] in order); ``rejected`` the items
        processing turned down. Sequence ids are derived from content, so repeating a cut after a
        crash writes the same rows. ``clips`` are the kept stretches of trimmed videos: each
        becomes a queued video item (a copy of its video's row with the window) alone in its
        sequence; the video itself gets its verdict (``trimmed``) through ``rejected``.
        ``notes`` are added to those the batch has.
        """
        with db.write(self.conn) as c:
            if notes:  # added to what an earlier step of the same cut noted (its videos)
                row = c.execute("SELECT notes FROM batches WHERE id = ?", (batch_id,)).fetchone()
                earlier = json.loads(row["notes"]) if row is not None and row["notes"] else []
                notes = [*earlier, *(n for n in notes if n not in earlier)]
            for clip in clips:
                p = clip.placement
                c.execute(
                    "INSERT OR IGNORE INTO sequences (id, batch_id, state, image_count,"
                    " first_capture, created_at, updated_at) VALUES (?, ?, ?, 1, ?, ?, ?)",
                    (clip.sequence_id, batch_id, SequenceState.UPLOADING, p.capture_time, now, now),
                )
                c.execute(
                    "INSERT OR IGNORE INTO items (sha256, account, kind, size, source_path,"
                    " data_path, watch, batch_id, state, capture_time, lat, lon, alt, make, model,"
                    " width, height, orientation, sequence_id, seq_index, parent_id, clip_start,"
                    " clip_end, created_at, updated_at)"
                    " SELECT ?, account, kind, size, source_path, data_path, watch, batch_id, ?,"
                    " ?, ?, ?, ?, make, model, width, height, orientation, ?, 0, id, ?, ?, ?, ?"
                    " FROM items WHERE id = ? AND state = ?",
                    (
                        clip.key,
                        ItemState.QUEUED,
                        p.capture_time,
                        p.lat,
                        p.lon,
                        p.alt,
                        clip.sequence_id,
                        clip.start_s,
                        clip.end_s,
                        now,
                        now,
                        p.item_id,
                        ItemState.INGESTED,
                    ),
                )
            if notes:
                c.execute(
                    "UPDATE batches SET notes = ? WHERE id = ?", (json.dumps(list(notes)), batch_id)
                )
            for seq_id, members in sequences:
                c.execute(
                    "INSERT OR IGNORE INTO sequences (id, batch_id, state, image_count,"
                    " first_capture, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        seq_id,
                        batch_id,
                        SequenceState.UPLOADING,
                        len(members),
                        members[0].capture_time,
                        now,
                        now,
                    ),
                )
                for index, p in enumerate(members):
                    c.execute(
                        "UPDATE items SET state = ?, sequence_id = ?, seq_index = ?,"
                        " capture_time = ?, lat = ?, lon = ?, alt = ?, heading = ?,"
                        " updated_at = ? WHERE id = ? AND state = ?",
                        (
                            ItemState.QUEUED,
                            seq_id,
                            index,
                            p.capture_time,
                            p.lat,
                            p.lon,
                            p.alt,
                            p.heading,
                            now,
                            p.item_id,
                            ItemState.INGESTED,
                        ),
                    )
            for item_id, verdict in rejected:
                c.execute(
                    "UPDATE items SET state = ?, reason = ?, detail = ?, updated_at = ?"
                    " WHERE id = ? AND state = ?",
                    (
                        verdict.state,
                        verdict.reason,
                        verdict.detail,
                        now,
                        item_id,
                        ItemState.INGESTED,
                    ),
                )

    def enqueue_sequence(
        self, seq_id: str, watch: str, files: Sequence[tuple[NewFile, Metadata]], now: float
    ) -> int:
        """Queue an already-processed sequence in one transaction (``process-and-upload``).

        Files whose content is already known only gain an occurrence; the sequence holds the
        others, in order. Return how many images were queued (0: nothing new, no sequence).
        """
        with db.write(self.conn) as c:
            fresh = []
            for f, meta in files:
                existing = c.execute(
                    "SELECT id FROM items WHERE sha256 = ?", (f.sha256,)
                ).fetchone()
                if existing is not None:
                    self._occurrence(f, existing["id"], now)
                else:
                    fresh.append((f, meta))
            if not fresh:
                return 0
            cur = c.execute(
                "INSERT INTO batches (watch, opened_at, last_added_at, closed_at)"
                " VALUES (?, ?, ?, ?)",
                (watch, now, now, now),
            )
            batch_id = cur.lastrowid
            c.execute(
                "INSERT OR IGNORE INTO sequences (id, batch_id, state, image_count,"
                " first_capture, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    seq_id,
                    batch_id,
                    SequenceState.UPLOADING,
                    len(fresh),
                    fresh[0][1].capture_time,
                    now,
                    now,
                ),
            )
            for index, (f, meta) in enumerate(fresh):
                values: dict[str, Any] = {
                    "sha256": f.sha256,
                    "kind": f.kind,
                    "size": f.size,
                    "source_path": f.source_path,
                    "data_path": f.data_path,
                    "watch": f.watch,
                    "batch_id": batch_id,
                    "state": ItemState.QUEUED,
                    "sequence_id": seq_id,
                    "seq_index": index,
                    "created_at": now,
                    "updated_at": now,
                    **vars(meta),
                }
                cols, marks = ", ".join(values), ", ".join("?" for _ in values)
                item = c.execute(
                    f"INSERT INTO items ({cols}) VALUES ({marks})", tuple(values.values())
                ).lastrowid
                assert item is not None
                self._occurrence(f, item, now)
            return len(fresh)

    def add_frames(
        self,
        batch_id: int,
        video_id: int,
        frames: Sequence[tuple[NewFile, Metadata]],
        now: float,
    ) -> int:
        """Record a video's sampled frames as ingested images of ``batch_id`` and mark the video
        sampled, in one transaction; return how many frames were new."""
        with db.write(self.conn) as c:
            added = 0
            for f, meta in frames:
                if c.execute("SELECT 1 FROM items WHERE sha256 = ?", (f.sha256,)).fetchone():
                    continue
                values: dict[str, Any] = {
                    "sha256": f.sha256, "kind": f.kind, "size": f.size,
                    "source_path": f.source_path, "data_path": f.data_path, "watch": f.watch,
                    "batch_id": batch_id, "state": ItemState.INGESTED, "created_at": now,
                    "updated_at": now, **vars(meta),
                }  # fmt: skip
                cols, marks = ", ".join(values), ", ".join("?" for _ in values)
                c.execute(f"INSERT INTO items ({cols}) VALUES ({marks})", tuple(values.values()))
                added += 1
            c.execute(
                "UPDATE items SET state = ?, reason = ?, detail = ?, updated_at = ? WHERE id = ?",
                (ItemState.SAMPLED, "sampled_into_frames", f"{len(frames)} frames", now, video_id),
            )
            return added

    def requeue_held(self, watch: str, reasons: Iterable[str], now: float) -> int:
        """Give held items of ``watch`` with one of ``reasons`` back to processing, in a fresh
        open batch (a GPS track arrived that may place them); return how many."""
        return self._requeue(watch, ItemState.HELD, reasons, now, kind=None)

    def requeue_rejected_videos(self, watch: str, reasons: Iterable[str], now: float) -> int:
        """Give videos of ``watch`` refused for one of ``reasons`` back to processing (a side
        track named after one of them may have arrived); return how many."""
        return self._requeue(watch, ItemState.REJECTED, reasons, now, kind="video")

    def _requeue(
        self, watch: str, state: ItemState, reasons: Iterable[str], now: float, kind: str | None
    ) -> int:
        wanted = tuple(reasons)
        marks = ", ".join("?" for _ in wanted)
        of_kind = "" if kind is None else " AND kind = ?"
        with db.write(self.conn) as c:
            ids = [
                r["id"]
                for r in c.execute(
                    f"SELECT id FROM items WHERE watch = ? AND state = ? AND reason IN ({marks})"
                    + of_kind,
                    (watch, state, *wanted, *((kind,) if kind else ())),
                ).fetchall()
            ]
            if not ids:
                return 0
            batch_id = self._open_batch(watch, now)
            c.execute("UPDATE batches SET last_added_at = ? WHERE id = ?", (now, batch_id))
            c.executemany(
                "UPDATE items SET state = ?, batch_id = ?, reason = NULL, detail = NULL,"
                " updated_at = ? WHERE id = ?",
                [(ItemState.INGESTED, batch_id, now, i) for i in ids],
            )
            return len(ids)

    def sequence_states(self, seq_ids: Sequence[str]) -> dict[str, str]:
        marks = ", ".join("?" for _ in seq_ids)
        rows = self.conn.execute(
            f"SELECT id, state FROM sequences WHERE id IN ({marks})", tuple(seq_ids)
        ).fetchall()
        return {r["id"]: r["state"] for r in rows}

    # --- uploading images -----------------------------------------------------------------

    def claim_item(self, owner: str, now: float) -> Item | None:
        """Lease the next image due for upload to ``owner``, oldest sequence first."""
        with db.write(self.conn) as c:
            row = c.execute(
                "SELECT i.* FROM items i JOIN sequences s ON s.id = i.sequence_id"
                " WHERE i.state = ? AND i.next_attempt_at <= ?"
                " ORDER BY s.created_at, s.id, i.seq_index LIMIT 1",
                (ItemState.QUEUED, now),
            ).fetchone()
            if row is None:
                return None
            c.execute(
                "UPDATE items SET state = ?, lease_owner = ?, updated_at = ? WHERE id = ?",
                (ItemState.UPLOADING, owner, now, row["id"]),
            )
            return Item.from_row(row)

    def next_due(self) -> float | None:
        """The earliest ``next_attempt_at`` of any queued image or finishing sequence."""
        row = self.conn.execute(
            "SELECT min(t) FROM (SELECT min(next_attempt_at) t FROM items WHERE state = ?"
            " UNION ALL SELECT min(next_attempt_at) FROM sequences WHERE state = ?"
            " AND lease_owner IS NULL)",
            (ItemState.QUEUED, SequenceState.FINISHING),
        ).fetchone()
        return None if row[0] is None else float(row[0])

    def item_uploaded(self, item_id: int, session_key: str, handle: str, now: float) -> None:
        """Store the image's handle; mark its sequence finishing once every image is settled."""
        with db.write(self.conn) as c:
            c.execute(
                "UPDATE items SET state = ?, session_key = ?, handle = ?, lease_owner = NULL,"
                " reason = NULL, detail = NULL, updated_at = ? WHERE id = ?",
                (ItemState.UPLOADED, session_key, handle, now, item_id),
            )
            self._settle_sequence_of(item_id, now)

    def item_retry(
        self,
        item_id: int,
        next_attempt_at: float,
        reason: str,
        detail: str,
        now: float,
        *,
        count_attempt: bool = True,
    ) -> None:
        """Put a claimed image back, due at ``next_attempt_at``, saying why it waits."""
        with db.write(self.conn) as c:
            c.execute(
                "UPDATE items SET state = ?, lease_owner = NULL, next_attempt_at = ?,"
                " attempts = attempts + ?, reason = ?, detail = ?, updated_at = ? WHERE id = ?",
                (
                    ItemState.QUEUED,
                    next_attempt_at,
                    1 if count_attempt else 0,
                    reason,
                    detail,
                    now,
                    item_id,
                ),
            )

    def hurry_waiting(self, reasons: Iterable[str], now: float, spread: float) -> int:
        """Bring forward every image and sequence waiting for one of ``reasons`` (network
        failures, once the network is back): each becomes due at a random moment in the next
        ``spread`` seconds, so the backlog resumes at once but not in one burst. Returns how
        many were moved."""
        wanted = tuple(reasons)
        marks = ", ".join("?" for _ in wanted)
        later = "? + (abs(random()) % 1000000) / 1000000.0 * ?"
        with db.write(self.conn) as c:
            moved = c.execute(
                f"UPDATE items SET next_attempt_at = {later} WHERE state = ? AND reason IN"
                f" ({marks}) AND next_attempt_at > ?",
                (now, spread, ItemState.QUEUED, *wanted, now + spread),
            ).rowcount
            moved += c.execute(
                f"UPDATE sequences SET next_attempt_at = {later} WHERE state = ?"
                f" AND lease_owner IS NULL AND reason IN ({marks}) AND next_attempt_at > ?",
                (now, spread, SequenceState.FINISHING, *wanted, now + spread),
            ).rowcount
        return moved

    def item_failed(self, item_id: int, verdict: Verdict, now: float) -> None:
        """A claimed image will not be uploaded; its sequence goes on without it."""
        with db.write(self.conn) as c:
            c.execute(
                "UPDATE items SET state = ?, reason = ?, detail = ?, lease_owner = NULL,"
                " updated_at = ? WHERE id = ?",
                (verdict.state, verdict.reason, verdict.detail, now, item_id),
            )
            self._settle_sequence_of(item_id, now)

    def _settle_sequence_of(self, item_id: int, now: float) -> None:
        row = self.conn.execute("SELECT sequence_id FROM items WHERE id = ?", (item_id,)).fetchone()
        if row is None or row["sequence_id"] is None:
            return
        seq_id = row["sequence_id"]
        marks = ", ".join("?" for _ in SETTLED_IN_SEQUENCE)
        pending = self.conn.execute(
            f"SELECT count(*) FROM items WHERE sequence_id = ? AND state NOT IN ({marks})",
            (seq_id, *SETTLED_IN_SEQUENCE),
        ).fetchone()[0]
        if pending:
            return
        uploaded = self.conn.execute(
            "SELECT count(*) FROM items WHERE sequence_id = ? AND state = ?",
            (seq_id, ItemState.UPLOADED),
        ).fetchone()[0]
        state = SequenceState.FINISHING if uploaded else SequenceState.FAILED
        self.conn.execute(
            "UPDATE sequences SET state = ?, updated_at = ?, reason = ? WHERE id = ? AND state = ?",
            (state, now, None if uploaded else "no_images", seq_id, SequenceState.UPLOADING),
        )

    # --- finishing sequences --------------------------------------------------------------

    def claim_sequence(self, owner: str, now: float) -> SequenceRow | None:
        """Lease the next sequence whose manifest or ``finish_upload`` is due."""
        with db.write(self.conn) as c:
            row = c.execute(
                "SELECT * FROM sequences WHERE state = ? AND lease_owner IS NULL"
                " AND next_attempt_at <= ? ORDER BY created_at, id LIMIT 1",
                (SequenceState.FINISHING, now),
            ).fetchone()
            if row is None:
                return None
            c.execute("UPDATE sequences SET lease_owner = ? WHERE id = ?", (owner, row["id"]))
            return _sequence(row)

    def image_handles(self, seq_id: str) -> list[str]:
        """The handles of the sequence's uploaded images, in sequence order."""
        rows = self.conn.execute(
            "SELECT handle FROM items WHERE sequence_id = ? AND state IN (?, ?) ORDER BY seq_index",
            (seq_id, ItemState.UPLOADED, ItemState.DONE),
        ).fetchall()
        return [r["handle"] for r in rows]

    def video_handle(self, seq_id: str) -> str | None:
        """The handle of the sequence's video when it is a video sequence (else None)."""
        row = self.conn.execute(
            "SELECT handle FROM items WHERE sequence_id = ? AND kind = 'video' AND state IN (?, ?)",
            (seq_id, ItemState.UPLOADED, ItemState.DONE),
        ).fetchone()
        return None if row is None else str(row["handle"])

    def manifest_uploaded(self, seq_id: str, key: str, handle: str, now: float) -> None:
        with db.write(self.conn) as c:
            c.execute(
                "UPDATE sequences SET manifest_key = ?, manifest_handle = ?, updated_at = ?"
                " WHERE id = ?",
                (key, handle, now, seq_id),
            )

    def sequence_done(self, seq_id: str, cluster_id: str, now: float) -> None:
        """Record the cluster id and mark the sequence and its uploaded images done."""
        with db.write(self.conn) as c:
            c.execute(
                "UPDATE sequences SET state = ?, cluster_id = ?, lease_owner = NULL, reason = NULL,"
                " detail = NULL, updated_at = ? WHERE id = ?",
                (SequenceState.DONE, cluster_id, now, seq_id),
            )
            c.execute(
                "UPDATE items SET state = ?, reason = NULL, detail = NULL, updated_at = ?"
                " WHERE sequence_id = ? AND state = ?",
                (ItemState.DONE, now, seq_id, ItemState.UPLOADED),
            )

    def data_paths(self, seq_id: str) -> list[str]:
        """Where the bytes of the sequence's done images are (spool copies or originals)."""
        rows = self.conn.execute(
            "SELECT data_path FROM items WHERE sequence_id = ? AND state = ?",
            (seq_id, ItemState.DONE),
        ).fetchall()
        return [r["data_path"] for r in rows]

    def needed_data_paths(self) -> set[str]:
        """Data paths of every item that is not done: what the spool must keep."""
        rows = self.conn.execute(
            "SELECT data_path FROM items WHERE state != ?", (ItemState.DONE,)
        ).fetchall()
        return {r["data_path"] for r in rows}

    def sequence_retry(
        self,
        seq_id: str,
        next_attempt_at: float,
        reason: str,
        detail: str,
        now: float,
    ) -> None:
        """Release a claimed sequence, due again at ``next_attempt_at``, saying why it waits."""
        with db.write(self.conn) as c:
            c.execute(
                "UPDATE sequences SET lease_owner = NULL, next_attempt_at = ?,"
                " attempts = attempts + 1, reason = ?, detail = ?, updated_at = ? WHERE id = ?",
                (next_attempt_at, reason, detail, now, seq_id),
            )

    def sequence_failed(self, seq_id: str, verdict: Verdict, now: float) -> None:
        """The server refused the sequence for good; its images say so too."""
        with db.write(self.conn) as c:
            c.execute(
                "UPDATE sequences SET state = ?, lease_owner = NULL, reason = ?, detail = ?,"
                " updated_at = ? WHERE id = ?",
                (SequenceState.FAILED, verdict.reason, verdict.detail, now, seq_id),
            )
            c.execute(
                "UPDATE items SET state = ?, reason = ?, detail = ?, updated_at = ?"
                " WHERE sequence_id = ? AND state = ?",
                (ItemState.FAILED, verdict.reason, verdict.detail, now, seq_id, ItemState.UPLOADED),
            )

    # --- leases, holds, status ------------------------------------------------------------

    def release_stale(self, owner: str, now: float) -> int:
        """Free every lease not held by ``owner`` (an earlier boot); return how many."""
        with db.write(self.conn) as c:
            n = c.execute(
                "UPDATE items SET state = ?, lease_owner = NULL, updated_at = ?"
                " WHERE state = ? AND (lease_owner IS NULL OR lease_owner != ?)",
                (ItemState.QUEUED, now, ItemState.UPLOADING, owner),
            ).rowcount
            n += c.execute(
                "UPDATE sequences SET lease_owner = NULL WHERE lease_owner IS NOT NULL"
                " AND lease_owner != ?",
                (owner,),
            ).rowcount
            return n

    def reset_attempts(self, item_id: int) -> None:
        """Start the image's attempt count again (its upload made progress since it failed)."""
        with db.write(self.conn) as c:
            c.execute("UPDATE items SET attempts = 0 WHERE id = ?", (item_id,))

    def release_item(self, item_id: int, now: float) -> None:
        """Give a claimed image back untouched (shutdown, or a hold began)."""
        with db.write(self.conn) as c:
            c.execute(
                "UPDATE items SET state = ?, lease_owner = NULL, updated_at = ? WHERE id = ?"
                " AND state = ?",
                (ItemState.QUEUED, now, item_id, ItemState.UPLOADING),
            )

    def release_sequence(self, seq_id: str) -> None:
        with db.write(self.conn) as c:
            c.execute("UPDATE sequences SET lease_owner = NULL WHERE id = ?", (seq_id,))

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def set_meta(self, key: str, value: str | None) -> None:
        with db.write(self.conn) as c:
            if value is None:
                c.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                c.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )

    def counts(self) -> dict[str, int]:
        """Items per state."""
        rows = self.conn.execute("SELECT state, count(*) n FROM items GROUP BY state").fetchall()
        return {r["state"]: int(r["n"]) for r in rows}

    def sequence_counts(self) -> dict[str, int]:
        rows = self.conn.execute(
            "SELECT state, count(*) n FROM sequences GROUP BY state"
        ).fetchall()
        return {r["state"]: int(r["n"]) for r in rows}

    def items_not_done(self, limit: int | None = None) -> list[Item]:
        """Every item that is not uploaded, most recent first."""
        sql = "SELECT * FROM items WHERE state != ? ORDER BY updated_at DESC, id DESC"
        params: tuple[Any, ...] = (ItemState.DONE,)
        if limit is not None:
            sql += " LIMIT ?"
            params += (limit,)
        return [Item.from_row(r) for r in self.conn.execute(sql, params).fetchall()]

    def batch_notes(self, limit: int = 10) -> list[dict[str, Any]]:
        """The most recent batches' processing notes (newest first)."""
        rows = self.conn.execute(
            "SELECT id, watch, closed_at, notes FROM batches WHERE notes IS NOT NULL"
            " ORDER BY id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            {"batch": r["id"], "watch": r["watch"], "notes": json.loads(r["notes"])} for r in rows
        ]

    def occurrence_count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM occurrences").fetchone()[0])

    def sequences(self) -> list[SequenceRow]:
        rows = self.conn.execute("SELECT * FROM sequences ORDER BY created_at, id").fetchall()
        return [_sequence(r) for r in rows]

    # --- pulled cards ---------------------------------------------------------------------

    def item_source_missing(self, item_id: int, detail: str, now: float) -> None:
        """A claimed item's file is gone (card pulled): it waits for the volume its file was
        found on (``wait_volume``), released from its lease, attempts not counted."""
        with db.write(self.conn) as c:
            c.execute(
                "UPDATE items SET state = ?, lease_owner = NULL, reason = ?, detail = ?,"
                " wait_volume = coalesce(wait_volume, (SELECT o.volume FROM occurrences o"
                " WHERE o.path = items.source_path)),"
                " updated_at = ? WHERE id = ?",
                (ItemState.SOURCE_MISSING, "source_missing", detail, now, item_id),
            )

    def mark_source_missing_under(
        self, watch: str, root: str, volume: str | None, now: float
    ) -> int:
        """The volume at ``root`` went away: queued items of ``watch`` whose bytes are read
        from under ``root`` (in place, videos) wait for ``volume`` instead of being claimed and
        failing one by one, or worse, read from another card mounted at the same place.
        Return how many."""
        prefix = root.rstrip("/") + "/"
        with db.write(self.conn) as c:
            return c.execute(
                "UPDATE items SET state = ?, reason = ?, detail = ?,"
                " wait_volume = coalesce(wait_volume, ?),"
                " updated_at = ? WHERE watch = ? AND state = ? AND substr(data_path, 1, ?) = ?",
                (
                    ItemState.SOURCE_MISSING,
                    "source_missing",
                    f"{root} went away; waiting for its volume to come back",
                    volume,
                    now,
                    watch,
                    ItemState.QUEUED,
                    len(prefix),
                    prefix,
                ),
            ).rowcount

    def resume_source_missing(
        self, watch: str, volumes: Collection[str], present: Callable[[str, int], bool], now: float
    ) -> int:
        """Queue again the items of ``watch`` that wait for one of ``volumes`` (the identities
        of the volume now at the root) or for no volume in particular, and whose file
        ``present(data_path, size)`` says is back; return how many.
        Items waiting for another volume keep waiting: a different card at the same mount point
        is not the one their bytes are on."""
        rows = self.conn.execute(
            "SELECT id, data_path, size, wait_volume FROM items WHERE watch = ? AND state = ?",
            (watch, ItemState.SOURCE_MISSING),
        ).fetchall()
        back = [
            r["id"]
            for r in rows
            if (r["wait_volume"] is None or r["wait_volume"] in volumes)
            and present(r["data_path"], r["size"])
        ]
        if not back:
            return 0
        with db.write(self.conn) as c:
            c.executemany(
                "UPDATE items SET state = ?, reason = NULL, detail = NULL,"
                " next_attempt_at = 0, updated_at = ? WHERE id = ? AND state = ?",
                [(ItemState.QUEUED, now, i, ItemState.SOURCE_MISSING) for i in back],
            )
        return len(back)

    def release_owned(self, owner_prefix: str, now: float) -> int:
        """Give back every image and sequence leased by an owner whose name starts with
        ``owner_prefix`` (a worker that crashed or did not stop in time); return how many."""
        like = owner_prefix.replace("%", "").replace("_", "") + "%"
        with db.write(self.conn) as c:
            n = c.execute(
                "UPDATE items SET state = ?, lease_owner = NULL, updated_at = ?"
                " WHERE state = ? AND lease_owner LIKE ?",
                (ItemState.QUEUED, now, ItemState.UPLOADING, like),
            ).rowcount
            n += c.execute(
                "UPDATE sequences SET lease_owner = NULL WHERE lease_owner LIKE ?", (like,)
            ).rowcount
            return n

    # --- wall-clock jumps -----------------------------------------------------------------

    def shift_schedule(self, delta: float) -> int:
        """The wall clock jumped by ``delta`` seconds: move every stored wall-clock deadline
        (retry times, open batches' quiet windows) with it, so each wait keeps the length it
        had — no hang after a jump back, no burst after a jump forward. Return rows moved."""
        with db.write(self.conn) as c:
            n = c.execute(
                "UPDATE items SET next_attempt_at = next_attempt_at + ? WHERE next_attempt_at > 0",
                (delta,),
            ).rowcount
            n += c.execute(
                "UPDATE sequences SET next_attempt_at = next_attempt_at + ?"
                " WHERE next_attempt_at > 0",
                (delta,),
            ).rowcount
            n += c.execute(
                "UPDATE batches SET last_added_at = last_added_at + ? WHERE closed_at IS NULL",
                (delta,),
            ).rowcount
            return n

    def clamp_schedule(self, now: float, horizon: float) -> int:
        """Deadlines further than ``horizon`` seconds ahead (stored before the clock was set
        back while the daemon was down) are due now instead of years from now; return how
        many."""
        limit = now + horizon
        with db.write(self.conn) as c:
            n = c.execute(
                "UPDATE items SET next_attempt_at = ? WHERE next_attempt_at > ?", (now, limit)
            ).rowcount
            n += c.execute(
                "UPDATE sequences SET next_attempt_at = ? WHERE next_attempt_at > ?", (now, limit)
            ).rowcount
            return n

    # --- freeing cards --------------------------------------------------------------------

    def freeable(self, root: str, limit: int = 100) -> list[FreeCandidate]:
        """Files found under ``root`` (with a known volume) whose content is done, i.e. its
        cluster id is committed, and that were not freed or deliberately kept yet."""
        prefix = root.rstrip("/") + "/"
        rows = self.conn.execute(
            "SELECT o.path, o.size, o.mtime_ns, o.volume, i.id item_id, i.sha256,"
            " (SELECT f.id FROM freed f WHERE f.path = o.path AND f.item_id = i.id"
            "  AND f.outcome = 'pending' ORDER BY f.id DESC LIMIT 1) pending_id"
            " FROM occurrences o JOIN items i ON i.id = o.item_id"
            " WHERE i.state = ? AND o.volume IS NOT NULL AND substr(o.path, 1, ?) = ?"
            " AND NOT EXISTS (SELECT 1 FROM freed f WHERE f.path = o.path AND f.item_id = i.id"
            "  AND f.outcome != 'pending')"
            " ORDER BY o.path LIMIT ?",
            (ItemState.DONE, len(prefix), prefix, limit),
        ).fetchall()
        out = []
        for r in rows:
            action = moved_to = None
            if r["pending_id"] is not None:
                p = self.conn.execute(
                    "SELECT action, moved_to FROM freed WHERE id = ?", (r["pending_id"],)
                ).fetchone()
                action, moved_to = p["action"], p["moved_to"]
            out.append(
                FreeCandidate(
                    r["path"], r["item_id"], r["sha256"], r["size"], r["mtime_ns"], r["volume"],
                    r["pending_id"], action, moved_to,
                )
            )  # fmt: skip
        return out

    def freeing_started(
        self, c: FreeCandidate, action: str, moved_to: str | None, now: float
    ) -> int:
        """Durably note the intent to free ``c`` before touching the card; return its row id."""
        with db.write(self.conn) as conn:
            cur = conn.execute(
                "INSERT INTO freed (path, item_id, sha256, volume, action, moved_to, outcome, at)"
                " VALUES (?, ?, ?, ?, ?, ?, 'pending', ?)",
                (c.path, c.item_id, c.sha256, c.volume, action, moved_to, now),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

    def freeing_finished(self, row_id: int, outcome: str, detail: str, now: float) -> None:
        """Record how a freeing ended: ``freed`` (deleted or moved) or ``kept`` (and why)."""
        with db.write(self.conn) as c:
            c.execute(
                "UPDATE freed SET outcome = ?, detail = ?, at = ? WHERE id = ?",
                (outcome, detail, now, row_id),
            )

    def freed_counts(self) -> dict[str, int]:
        """Card files per freeing outcome (``freed``, ``kept``, ``pending``)."""
        rows = self.conn.execute(
            "SELECT outcome, count(*) n FROM freed GROUP BY outcome"
        ).fetchall()
        return {r["outcome"]: int(r["n"]) for r in rows}

    def freed_rows(self, limit: int = 20) -> list[dict[str, Any]]:
        """The most recent freeing records, newest first."""
        rows = self.conn.execute(
            "SELECT path, action, moved_to, outcome, detail, at FROM freed"
            " ORDER BY id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [dict(r) for r in rows]


def _sequence(row: sqlite3.Row) -> SequenceRow:
    return SequenceRow(
        id=row["id"],
        state=row["state"],
        image_count=row["image_count"],
        manifest_key=row["manifest_key"],
        manifest_handle=row["manifest_handle"],
        cluster_id=row["cluster_id"],
        attempts=row["attempts"],
    )
