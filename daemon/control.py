"""What a person can do to the queue: pause and resume uploads, retry now, list and forget items.

Everything goes through the queue database, so ``mapillaryd pause`` on the command line, the
status page's button and a restart all agree: the pause is a row in the ``meta`` table that the
upload workers read before each unit of work (see ``Upstream.usable_token``).

Retry-now makes every waiting unit due at once and gives failed images another chance:

* a failed image whose sequence can still take it (not finished yet, not being finished right
  now) goes back to ``queued`` in that sequence; a sequence that had failed or was waiting to be
  finished is reopened (its manifest is rebuilt, so it includes the image);
* an image the server refused at ``finish_upload`` (it has a handle) goes back to ``uploaded``
  and its sequence is finished again;
* failed images of a sequence that is already done are queued as a new sequence of their own
  (a sequence on Mapillary cannot grow), named from their content like every sequence.

Rejected and quarantined files are processing's verdicts: retrying cannot change them; the file
must be fixed and dropped again. Forgetting a file marks it ``rejected`` with reason
``forgotten`` (it stays known by content, so a rescan does not take it again) and frees its spool
copy; files uploaded or being uploaded cannot be forgotten.

Every change is one transaction (``BEGIN IMMEDIATE``), so a worker never sees half of it. The
planning of a retry is a pure function (:func:`plan_retry`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from daemon import spool
from daemon.store import db
from daemon.store.queue import ItemState, Queue, SequenceState

PAUSE_KEY = "paused"
FORGOTTEN = "forgotten"

#: States an item can be forgotten in: nothing of it is on Mapillary or on its way there.
FORGETTABLE = (
    ItemState.INGESTED,
    ItemState.QUEUED,
    ItemState.HELD,
    ItemState.REJECTED,
    ItemState.QUARANTINED,
    ItemState.FAILED,
)
_SHA_PREFIX = re.compile(r"[0-9a-f]{8,64}")


# --- pause ---------------------------------------------------------------------------------------


def pause_state(queue: Queue) -> dict[str, str] | None:
    """The pause in force (``{"since": iso time, "by": who}``), or None when uploads run."""
    raw = queue.get_meta(PAUSE_KEY)
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return {"since": "", "by": "unknown"}
    return value if isinstance(value, dict) else {"since": "", "by": "unknown"}


def is_paused(queue: Queue) -> bool:
    """True while uploads are paused (read on every worker step: one indexed lookup)."""
    return queue.get_meta(PAUSE_KEY) is not None


def pause(queue: Queue, now: datetime, by: str) -> bool:
    """Pause uploads (the ones in flight finish); return False if they were paused already."""
    if is_paused(queue):
        return False
    queue.set_meta(PAUSE_KEY, json.dumps({"since": now.isoformat(), "by": by}))
    return True


def resume(queue: Queue) -> bool:
    """Let uploads run again; return False if they were not paused."""
    if not is_paused(queue):
        return False
    queue.set_meta(PAUSE_KEY, None)
    return True


# --- retry now -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FailedItem:
    """A failed image as retry planning sees it."""

    id: int
    sha256: str
    sequence_id: str | None
    seq_index: int | None
    has_handle: bool


@dataclass(frozen=True)
class SequenceInfo:
    state: str
    leased: bool
    batch_id: int | None = None


@dataclass
class RetryPlan:
    """What :func:`plan_retry` decided. Item and sequence ids; nothing is applied yet."""

    to_queued: list[int] = field(default_factory=list)
    to_uploaded: list[int] = field(default_factory=list)
    #: Sequences that get images back: they upload again, then are finished.
    reopen: set[str] = field(default_factory=set)
    #: Failed sequences whose images all kept their handles: only finishing is repeated.
    refinish: set[str] = field(default_factory=set)
    #: New sequence id → (the done sequence it comes from, its images in order).
    new_sequences: dict[str, tuple[str, list[int]]] = field(default_factory=dict)
    skipped: list[tuple[int, str]] = field(default_factory=list)


def retry_sequence_id(shas: Sequence[str]) -> str:
    """The id of a sequence of retried images: a digest of their content hashes, in order
    (distinct from :func:`daemon.process.sequence_id` of the same images)."""
    return hashlib.sha256(("retry\n" + "\n".join(shas)).encode()).hexdigest()[:32]


def plan_retry(failed: Iterable[FailedItem], sequences: Mapping[str, SequenceInfo]) -> RetryPlan:
    """Decide where each failed image goes (see the module docstring). Pure."""
    plan = RetryPlan()
    orphans: dict[str, list[FailedItem]] = {}
    for item in failed:
        seq = sequences.get(item.sequence_id) if item.sequence_id else None
        if seq is None:
            plan.skipped.append((item.id, "not in a sequence"))
        elif seq.state == SequenceState.FAILED and item.has_handle:
            plan.to_uploaded.append(item.id)
            plan.refinish.add(str(item.sequence_id))
        elif seq.state == SequenceState.DONE or seq.leased:
            orphans.setdefault(str(item.sequence_id), []).append(item)
        else:
            plan.to_queued.append(item.id)
            plan.reopen.add(str(item.sequence_id))
    plan.refinish -= plan.reopen
    for old, items in orphans.items():
        items.sort(key=lambda i: (i.seq_index or 0, i.id))
        new_id = retry_sequence_id([i.sha256 for i in items])
        plan.new_sequences[new_id] = (old, [i.id for i in items])
    return plan


@dataclass(frozen=True)
class RetryResult:
    """What retry-now changed: units made due, failed images given another try, and why some
    were left alone."""

    made_due: int
    requeued: int
    sequences: int
    new_sequences: int
    skipped: list[tuple[int, str]]


def retry_now(queue: Queue, now: float, item_ids: Sequence[int] | None = None) -> RetryResult:
    """Make waiting work due now and give failed images another try (all, or ``item_ids``)."""
    only = "" if item_ids is None else f" AND id IN ({', '.join('?' for _ in item_ids)})"
    args: tuple[Any, ...] = () if item_ids is None else tuple(item_ids)
    with db.write(queue.conn) as c:
        made_due = c.execute(
            "UPDATE items SET next_attempt_at = 0, updated_at = ?"
            f" WHERE state = ? AND next_attempt_at > 0{only}",
            (now, ItemState.QUEUED, *args),
        ).rowcount
        if item_ids is None:
            made_due += c.execute(
                "UPDATE sequences SET next_attempt_at = 0 WHERE state = ? AND next_attempt_at > 0",
                (SequenceState.FINISHING,),
            ).rowcount
        rows = c.execute(
            "SELECT id, sha256, sequence_id, seq_index, handle FROM items"
            f" WHERE state = ?{only} ORDER BY id",
            (ItemState.FAILED, *args),
        ).fetchall()
        failed = [
            FailedItem(r["id"], r["sha256"], r["sequence_id"], r["seq_index"], bool(r["handle"]))
            for r in rows
        ]
        seq_ids = {f.sequence_id for f in failed if f.sequence_id}
        sequences = _sequence_infos(queue, seq_ids)
        plan = plan_retry(failed, sequences)
        _apply(queue, plan, sequences, now)
        skipped = list(plan.skipped)
        if item_ids is not None:
            found = {f.id for f in failed}
            skipped += _not_retriable(queue, [i for i in item_ids if i not in found], now)
    return RetryResult(
        made_due=made_due,
        requeued=len(plan.to_queued)
        + len(plan.to_uploaded)
        + sum(len(v[1]) for v in plan.new_sequences.values()),
        sequences=len(plan.reopen) + len(plan.refinish),
        new_sequences=len(plan.new_sequences),
        skipped=skipped,
    )


def _sequence_infos(queue: Queue, seq_ids: Iterable[str]) -> dict[str, SequenceInfo]:
    ids = sorted(seq_ids)
    if not ids:
        return {}
    marks = ", ".join("?" for _ in ids)
    rows = queue.conn.execute(
        f"SELECT id, state, lease_owner, batch_id FROM sequences WHERE id IN ({marks})", ids
    ).fetchall()
    return {
        r["id"]: SequenceInfo(r["state"], r["lease_owner"] is not None, r["batch_id"]) for r in rows
    }


def _apply(
    queue: Queue, plan: RetryPlan, sequences: Mapping[str, SequenceInfo], now: float
) -> None:
    """Write ``plan`` (inside the caller's transaction)."""
    c = queue.conn
    c.executemany(
        "UPDATE items SET state = ?, handle = NULL, session_key = NULL, next_attempt_at = 0,"
        " reason = NULL, detail = NULL, updated_at = ? WHERE id = ? AND state = ?",
        [(ItemState.QUEUED, now, i, ItemState.FAILED) for i in plan.to_queued],
    )
    c.executemany(
        "UPDATE items SET state = ?, reason = NULL, detail = NULL, updated_at = ?"
        " WHERE id = ? AND state = ?",
        [(ItemState.UPLOADED, now, i, ItemState.FAILED) for i in plan.to_uploaded],
    )
    # A reopened sequence gets a new manifest: the one stored (if any) lacks the new images.
    c.executemany(
        "UPDATE sequences SET state = ?, manifest_key = NULL, manifest_handle = NULL,"
        " next_attempt_at = 0, reason = NULL, detail = NULL, updated_at = ? WHERE id = ?",
        [(SequenceState.UPLOADING, now, s) for s in sorted(plan.reopen)],
    )
    c.executemany(
        "UPDATE sequences SET state = ?, next_attempt_at = 0, reason = NULL, detail = NULL,"
        " updated_at = ? WHERE id = ?",
        [(SequenceState.FINISHING, now, s) for s in sorted(plan.refinish)],
    )
    for new_id, (old, ids) in plan.new_sequences.items():
        row = c.execute("SELECT capture_time FROM items WHERE id = ?", (ids[0],)).fetchone()
        first = row["capture_time"]
        c.execute(
            "INSERT OR IGNORE INTO sequences (id, batch_id, state, image_count, first_capture,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (new_id, sequences[old].batch_id, SequenceState.UPLOADING, len(ids), first, now, now),
        )
        c.executemany(
            "UPDATE items SET state = ?, sequence_id = ?, seq_index = ?, handle = NULL,"
            " session_key = NULL, next_attempt_at = 0, reason = NULL, detail = NULL,"
            " updated_at = ? WHERE id = ? AND state = ?",
            [
                (ItemState.QUEUED, new_id, index, now, item_id, ItemState.FAILED)
                for index, item_id in enumerate(ids)
            ],
        )


def _not_retriable(queue: Queue, ids: Sequence[int], now: float) -> list[tuple[int, str]]:
    """Why each of ``ids`` (asked for, not failed) was left alone."""
    out = []
    for item_id in ids:
        row = queue.conn.execute(
            "SELECT state, reason, next_attempt_at FROM items WHERE id = ?", (item_id,)
        ).fetchone()
        if row is None:
            out.append((item_id, "no such item"))
        elif row["state"] == ItemState.QUEUED:
            continue  # made due above (or due already)
        elif row["state"] in (ItemState.REJECTED, ItemState.QUARANTINED):
            out.append(
                (item_id, f"{row['state']} ({row['reason']}): fix the file and drop it again")
            )
        else:
            out.append((item_id, f"{row['state']}: nothing to retry"))
    return out


# --- list and forget -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemRow:
    """One line of ``queue list``."""

    id: int
    state: str
    reason: str | None
    detail: str | None
    path: str
    sha256: str
    kind: str
    attempts: int
    next_attempt_at: float
    sequence_id: str | None
    updated_at: float


def list_items(queue: Queue, states: Sequence[str] = (), limit: int | None = None) -> list[ItemRow]:
    """Items (of ``states``, all when empty), most recently changed first."""
    sql = (
        "SELECT id, state, reason, detail, source_path, sha256, kind, attempts, next_attempt_at,"
        " sequence_id, updated_at FROM items"
    )
    args: list[Any] = []
    if states:
        sql += f" WHERE state IN ({', '.join('?' for _ in states)})"
        args += list(states)
    sql += " ORDER BY updated_at DESC, id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    return [
        ItemRow(
            r["id"],
            r["state"],
            r["reason"],
            r["detail"],
            r["source_path"],
            r["sha256"],
            r["kind"],
            r["attempts"],
            r["next_attempt_at"],
            r["sequence_id"],
            r["updated_at"],
        )
        for r in queue.conn.execute(sql, args).fetchall()
    ]


@dataclass(frozen=True)
class ForgetResult:
    forgotten: list[int]
    refused: list[tuple[str, str]]


def forget(queue: Queue, refs: Sequence[str], now: float, spool_dir: Path | None) -> ForgetResult:
    """Forget the items named by ``refs`` (ids, or sha256 prefixes of at least 8 hex digits).

    A forgotten item is never uploaded and no longer listed as needing attention; its content
    stays known, so the same file found again is not taken again. Its spool copy is deleted.
    Items uploaded, being uploaded or done are refused, with the reason.
    """
    forgotten: list[int] = []
    refused: list[tuple[str, str]] = []
    freed: list[str] = []
    with db.write(queue.conn) as c:
        for ref in refs:
            rows = _resolve(queue, ref)
            if isinstance(rows, str):
                refused.append((ref, rows))
                continue
            row = rows
            if row["state"] not in FORGETTABLE:
                refused.append((ref, f"it is {row['state']}: only files not uploaded can go"))
                continue
            c.execute(
                "UPDATE items SET state = ?, reason = ?, detail = ?, next_attempt_at = 0,"
                " updated_at = ? WHERE id = ? AND state = ?",
                (
                    ItemState.REJECTED,
                    FORGOTTEN,
                    f"forgotten on request (was {row['state']}: {row['reason'] or '-'})",
                    now,
                    row["id"],
                    row["state"],
                ),
            )
            # The rest of its sequence may now be complete: settle it as an upload would.
            queue._settle_sequence_of(row["id"], now)
            forgotten.append(int(row["id"]))
            freed.append(row["data_path"])
    if spool_dir is not None:
        spool.release(spool_dir, freed)
    return ForgetResult(forgotten, refused)


def _resolve(queue: Queue, ref: str) -> Any:
    """The item row ``ref`` names, or a string saying why there is none."""
    ref = ref.strip().lower()
    if ref.isdigit():
        row = queue.conn.execute("SELECT * FROM items WHERE id = ?", (int(ref),)).fetchone()
        return row if row is not None else "no such item"
    if not _SHA_PREFIX.fullmatch(ref):
        return "not an item id or a sha256 prefix (at least 8 hex digits)"
    rows = queue.conn.execute(
        "SELECT * FROM items WHERE sha256 LIKE ? LIMIT 2", (ref + "%",)
    ).fetchall()
    if not rows:
        return "no item has this sha256"
    if len(rows) > 1:
        return "more than one item starts with this sha256: give more digits"
    return rows[0]


# --- facts for status and metrics ----------------------------------------------------------------


def reason_counts(queue: Queue) -> list[tuple[str, str, int]]:
    """(state, reason, count) of every item not done, reasons made explicit (``-`` if none)."""
    rows = queue.conn.execute(
        "SELECT state, coalesce(reason, '-') reason, count(*) n FROM items WHERE state != ?"
        " GROUP BY state, coalesce(reason, '-') ORDER BY state, reason",
        (ItemState.DONE,),
    ).fetchall()
    return [(r["state"], r["reason"], int(r["n"])) for r in rows]


def uploaded_bytes(queue: Queue) -> int:
    """Bytes of the media files on Mapillary or uploaded and waiting for their sequence."""
    row = queue.conn.execute(
        "SELECT coalesce(sum(size), 0) FROM items WHERE state IN (?, ?)",
        (ItemState.UPLOADED, ItemState.DONE),
    ).fetchone()
    return int(row[0])


def retries(queue: Queue) -> int:
    """Failed upload attempts recorded so far (images and sequences)."""
    row = queue.conn.execute(
        "SELECT (SELECT coalesce(sum(attempts), 0) FROM items)"
        " + (SELECT coalesce(sum(attempts), 0) FROM sequences)"
    ).fetchone()
    return int(row[0])


def waiting(queue: Queue, now: float) -> dict[str, Any]:
    """Queued images waiting for a retry time: how many per reason, and when the next is due."""
    rows = queue.conn.execute(
        "SELECT coalesce(reason, '-') reason, count(*) n, min(next_attempt_at) due FROM items"
        " WHERE state = ? AND next_attempt_at > ? GROUP BY coalesce(reason, '-')",
        (ItemState.QUEUED, now),
    ).fetchall()
    return {
        "by_reason": {r["reason"]: int(r["n"]) for r in rows},
        "next_attempt_at": min((float(r["due"]) for r in rows), default=None),
    }
