"""Pause/resume, retry-now, list and forget on a real SQLite queue (files in tmp_path)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from daemon import control
from daemon.config import MapillaryConfig
from daemon.control import FailedItem, SequenceInfo, plan_retry, retry_sequence_id
from daemon.credentials import TokenSource
from daemon.store.queue import (
    Item,
    ItemState,
    Metadata,
    NewFile,
    Placement,
    Queue,
    SequenceState,
    Verdict,
)
from daemon.upload import Upstream
from tests.conftest import ManualClock

NOW = 1_780_000_000.0
OWNER = "boot-1"


def _sha(n: int) -> str:
    return hashlib.sha256(f"file {n}".encode()).hexdigest()


@pytest.fixture
def queue(tmp_path: Path) -> Queue:
    q = Queue.open(tmp_path / "queue.sqlite3")
    yield q  # type: ignore[misc]
    q.close()


def _sequence(q: Queue, n: int, seq_id: str = "seq-a", first: int = 0) -> list[Item]:
    """``n`` images recorded, cut into one sequence ``seq_id``, all queued."""
    items = []
    for i in range(first, first + n):
        path = f"/card/IMG_{i:04d}.jpg"
        f = NewFile("/card", path, 1000 + i, 1, _sha(i), "image", path)
        meta = Metadata(f"2026-06-01T12:00:{i % 60:02d}+00:00", 46.0 + i * 1e-4, 14.5)
        item, _ = q.record_file(f, meta, NOW)
        items.append(item)
    q.close_quiet_batches(NOW + 100, 10, [])
    [batch] = q.batches_to_cut()
    placements = [
        Placement(it.id, str(it.capture_time), float(it.lat or 0), 14.5, None, None) for it in items
    ]
    q.assign_sequences(batch, [(seq_id, placements)], [], NOW)
    return items


def _upload(q: Queue, item_id: int) -> None:
    claimed = q.claim_item(OWNER, NOW)
    assert claimed is not None and claimed.id == item_id
    q.item_uploaded(item_id, f"key-{item_id}", f"handle-{item_id}", NOW)


def _fail(q: Queue, item_id: int) -> None:
    claimed = q.claim_item(OWNER, NOW)
    assert claimed is not None and claimed.id == item_id
    q.item_failed(item_id, Verdict(ItemState.FAILED, "http_400", "bad"), NOW)


def _state(q: Queue, item_id: int) -> str:
    return str(q.conn.execute("SELECT state FROM items WHERE id = ?", (item_id,)).fetchone()[0])


def _seq_state(q: Queue, seq_id: str) -> str:
    return q.sequence_states([seq_id])[seq_id]


# --- pause ---------------------------------------------------------------------------------------


def test_a_pause_is_stored_in_the_queue_and_seen_by_another_connection(tmp_path: Path) -> None:
    clock = ManualClock()
    a = Queue.open(tmp_path / "q.sqlite3")
    b = Queue.open(tmp_path / "q.sqlite3")
    try:
        assert control.pause(a, clock.now(), "command line")
        assert not control.pause(a, clock.now(), "status page")  # already paused
        assert control.is_paused(b)
        state = control.pause_state(b)
        assert state == {"since": clock.now().isoformat(), "by": "command line"}
        assert control.resume(b)
        assert not control.is_paused(a)
        assert not control.resume(a)
    finally:
        a.close()
        b.close()


def test_the_upload_workers_get_no_token_while_paused(queue: Queue) -> None:
    clock = ManualClock()
    upstream = Upstream(clock, TokenSource(MapillaryConfig(token_from_env="tok-123456")))
    assert upstream.usable_token(queue) == "tok-123456"
    control.pause(queue, clock.now(), "test")
    assert upstream.usable_token(queue) is None
    control.resume(queue)
    assert upstream.usable_token(queue) == "tok-123456"


# --- retry now -----------------------------------------------------------------------------------


def test_retry_now_makes_waiting_images_due(queue: Queue) -> None:
    _sequence(queue, 2)
    claimed = queue.claim_item(OWNER, NOW)
    assert claimed is not None
    queue.item_retry(claimed.id, NOW + 3600, "network", "connection refused", NOW)
    assert queue.claim_item(OWNER, NOW + 1) is not None  # the other one
    assert queue.claim_item(OWNER, NOW + 1) is None  # the first waits an hour
    result = control.retry_now(queue, NOW + 2)
    assert result.made_due == 1 and result.requeued == 0
    again = queue.claim_item(OWNER, NOW + 2)
    assert again is not None and again.id == claimed.id


def test_retry_now_makes_a_waiting_sequence_finish_due(queue: Queue) -> None:
    [a] = _sequence(queue, 1)
    _upload(queue, a.id)
    seq = queue.claim_sequence(OWNER, NOW)
    assert seq is not None
    queue.sequence_retry(seq.id, NOW + 3600, "server_error", "500", NOW)
    assert queue.claim_sequence(OWNER, NOW + 1) is None
    assert control.retry_now(queue, NOW + 1).made_due == 1
    assert queue.claim_sequence(OWNER, NOW + 1) is not None


def test_a_failed_image_goes_back_into_its_unfinished_sequence(queue: Queue) -> None:
    a, b, c = _sequence(queue, 3)
    _upload(queue, a.id)
    _fail(queue, b.id)
    _upload(queue, c.id)
    assert _seq_state(queue, "seq-a") == SequenceState.FINISHING
    result = control.retry_now(queue, NOW)
    assert result.requeued == 1 and result.sequences == 1 and not result.skipped
    assert _state(queue, b.id) == ItemState.QUEUED
    assert _seq_state(queue, "seq-a") == SequenceState.UPLOADING  # waits for b again
    _upload(queue, b.id)
    assert _seq_state(queue, "seq-a") == SequenceState.FINISHING
    assert queue.image_handles("seq-a") == [f"handle-{i.id}" for i in (a, b, c)]


def test_a_failed_image_of_a_done_sequence_becomes_a_new_sequence(queue: Queue) -> None:
    a, b = _sequence(queue, 2)
    _upload(queue, a.id)
    _fail(queue, b.id)
    seq = queue.claim_sequence(OWNER, NOW)
    assert seq is not None
    queue.sequence_done(seq.id, "cluster-1", NOW)
    result = control.retry_now(queue, NOW)
    assert result.new_sequences == 1 and result.requeued == 1
    new_id = retry_sequence_id([b.sha256])
    row = queue.conn.execute("SELECT sequence_id FROM items WHERE id = ?", (b.id,)).fetchone()
    assert row[0] == new_id
    assert _seq_state(queue, "seq-a") == SequenceState.DONE  # untouched
    _upload(queue, b.id)
    assert _seq_state(queue, new_id) == SequenceState.FINISHING


def test_images_refused_at_finish_are_finished_again_with_their_handles(queue: Queue) -> None:
    a, b = _sequence(queue, 2)
    _upload(queue, a.id)
    _upload(queue, b.id)
    seq = queue.claim_sequence(OWNER, NOW)
    assert seq is not None
    queue.sequence_failed(seq.id, Verdict(ItemState.FAILED, "http_400", "refused"), NOW)
    assert {_state(queue, a.id), _state(queue, b.id)} == {ItemState.FAILED}
    result = control.retry_now(queue, NOW)
    assert result.requeued == 2 and result.sequences == 1
    assert {_state(queue, a.id), _state(queue, b.id)} == {ItemState.UPLOADED}
    again = queue.claim_sequence(OWNER, NOW)
    assert again is not None and again.id == "seq-a"
    assert queue.image_handles("seq-a") == [f"handle-{a.id}", f"handle-{b.id}"]


def test_retry_of_named_items_says_why_some_were_left_alone(queue: Queue) -> None:
    [a] = _sequence(queue, 1)
    f = NewFile("/card", "/card/broken.jpg", 5, 1, _sha(99), "image", "/card/broken.jpg")
    bad, _ = queue.record_file(f, Verdict(ItemState.QUARANTINED, "corrupt_media", "cut"), NOW)
    result = control.retry_now(queue, NOW, [a.id, bad.id, 12345])
    assert result.skipped == [
        (bad.id, "quarantined (corrupt_media): fix the file and drop it again"),
        (12345, "no such item"),
    ]


def test_plan_retry_never_adds_to_a_sequence_being_finished() -> None:
    failed = [
        FailedItem(1, "a" * 64, "s1", 0, False),
        FailedItem(2, "b" * 64, "s2", 1, False),
        FailedItem(3, "c" * 64, "s2", 0, False),
        FailedItem(4, "d" * 64, None, None, False),
    ]
    seqs = {
        "s1": SequenceInfo(SequenceState.UPLOADING, leased=False),
        "s2": SequenceInfo(SequenceState.FINISHING, leased=True),  # the finisher holds it
    }
    plan = plan_retry(failed, seqs)
    assert plan.to_queued == [1] and plan.reopen == {"s1"}
    assert plan.new_sequences == {retry_sequence_id(["c" * 64, "b" * 64]): ("s2", [3, 2])}
    assert plan.skipped == [(4, "not in a sequence")]


# --- list and forget -----------------------------------------------------------------------------


def test_list_filters_by_state_and_limits(queue: Queue) -> None:
    a = _sequence(queue, 3)[0]
    _fail(queue, a.id)
    assert [r.id for r in control.list_items(queue, [ItemState.FAILED])] == [a.id]
    assert len(control.list_items(queue, [], limit=2)) == 2
    assert {r.state for r in control.list_items(queue, [ItemState.QUEUED])} == {"queued"}


def test_forget_settles_the_sequence_and_frees_the_spool_copy(queue: Queue, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    copy = spool / f"{_sha(7)}.jpg"
    copy.write_bytes(b"x")
    f = NewFile("/card", "/card/IMG_7.jpg", 10, 1, _sha(7), "image", str(copy))
    lone, _ = queue.record_file(f, Metadata("2026-06-01T12:00:00+00:00", 46.0, 14.5), NOW)
    queue.close_quiet_batches(NOW + 100, 10, [])
    [batch] = queue.batches_to_cut()
    queue.assign_sequences(
        batch,
        [("seq-b", [Placement(lone.id, "2026-06-01T12:00:00+00:00", 46, 14.5, None, None)])],
        [],
        NOW,
    )
    a, b = _sequence(queue, 2, first=20)
    _upload(queue, a.id)
    result = control.forget(queue, [str(b.id), _sha(7)[:10]], NOW, spool)
    assert result.forgotten == [b.id, lone.id] and result.refused == []
    assert _seq_state(queue, "seq-a") == SequenceState.FINISHING  # a alone finishes
    assert _seq_state(queue, "seq-b") == SequenceState.FAILED  # nothing left in it
    assert not copy.exists()
    # Still known by content: the file found again is not taken again.
    assert queue.is_known("/card/IMG_7.jpg", 10, 1)
    assert queue.item_by_sha(_sha(7)) is not None
    # Not "needing attention" in the status either.
    from daemon.status import needs_attention, report

    assert needs_attention(report(queue, now=NOW)) == []


def test_forget_refuses_uploaded_and_unknown_items(queue: Queue) -> None:
    a, b = _sequence(queue, 2)
    _upload(queue, a.id)
    claimed = queue.claim_item(OWNER, NOW)
    assert claimed is not None and claimed.id == b.id  # being uploaded right now
    result = control.forget(queue, [str(a.id), str(b.id), "999", "xyz", "0" * 8], NOW, None)
    assert result.forgotten == []
    assert [r for r, _ in result.refused] == [str(a.id), str(b.id), "999", "xyz", "0" * 8]
    assert "uploaded" in result.refused[0][1] and "uploading" in result.refused[1][1]
    assert _state(queue, a.id) == ItemState.UPLOADED and _state(queue, b.id) == "uploading"
