"""The SQLite queue on a real database file: identity, batches, claims, leases, sequences."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from daemon.errors import StateError
from daemon.store import db
from daemon.store.queue import (
    ItemState,
    Metadata,
    NewFile,
    Placement,
    Queue,
    SequenceState,
    Verdict,
)


@pytest.fixture
def queue(tmp_path: Path) -> Queue:
    return Queue.open(tmp_path / "q.sqlite3")


def new_file(n: int, sha: str | None = None, watch: str = "/card") -> NewFile:
    return NewFile(
        watch=watch,
        source_path=f"{watch}/IMG_{n}.jpg",
        size=100 + n,
        mtime_ns=n,
        sha256=sha or f"{n:064x}",
        kind="image",
        data_path=f"/spool/{n}.jpg",
    )


META = Metadata(capture_time="2026-06-01T09:00:00+00:00", lat=46.0, lon=14.5)


def _placed(item_id: int) -> Placement:
    return Placement(item_id, "2026-06-01T09:00:00+00:00", 46.0, 14.5, None, 90.0)


def test_database_uses_wal_full_sync_and_records_its_schema_version(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "q.sqlite3")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(db.MIGRATIONS)


def test_a_newer_schema_or_a_non_database_is_refused_with_the_path(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    sqlite3.connect(path).execute("PRAGMA user_version = 99")
    with pytest.raises(StateError, match="newer than this mapillaryd"):
        db.connect(path)
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError, match=r"junk\.sqlite3"):
        db.connect(junk)


def test_same_content_under_another_name_is_one_item(queue: Queue) -> None:
    item, new = queue.record_file(new_file(1), META, now=10)
    assert new and item.state == ItemState.INGESTED
    renamed = NewFile(**{**vars(new_file(1)), "source_path": "/other/renamed.jpg"})
    again, new2 = queue.record_file(renamed, META, now=11)
    assert not new2 and again.id == item.id
    assert queue.counts() == {"ingested": 1}
    assert queue.occurrence_count() == 2
    assert queue.is_known("/other/renamed.jpg", renamed.size, renamed.mtime_ns)
    assert not queue.is_known("/other/renamed.jpg", renamed.size, renamed.mtime_ns + 1)


def test_a_verdict_is_recorded_with_reason_and_detail(queue: Queue) -> None:
    v = Verdict(ItemState.REJECTED, "no_gps", "IMG_2.jpg: no GPS position in EXIF")
    item, _ = queue.record_file(new_file(2), v, now=1)
    assert (item.state, item.reason, item.detail) == ("rejected", "no_gps", v.detail)
    [row] = queue.items_not_done()
    assert row.reason == "no_gps"


def test_batches_close_after_the_quiet_window_and_not_while_busy(queue: Queue) -> None:
    queue.record_file(new_file(1), META, now=100)
    queue.close_quiet_batches(now=105, quiet_seconds=10, busy=[])
    assert queue.batches_to_cut() == []
    queue.close_quiet_batches(now=111, quiet_seconds=10, busy=["/card"])
    assert queue.batches_to_cut() == []
    queue.close_quiet_batches(now=111, quiet_seconds=10, busy=[])
    assert len(queue.batches_to_cut()) == 1
    # A file arriving now starts a new batch.
    queue.record_file(new_file(2), META, now=112)
    assert len({i.batch_id for i in queue.items_not_done()}) == 2


def test_a_clock_jumping_back_does_not_close_or_wedge_a_batch(queue: Queue) -> None:
    queue.record_file(new_file(1), META, now=2_000_000_000)  # recorded with a clock in 2033
    queue.close_quiet_batches(now=1_700_000_000, quiet_seconds=10, busy=[])  # back to 2023
    assert queue.batches_to_cut() == []
    queue.close_quiet_batches(now=1_700_000_011, quiet_seconds=10, busy=[])
    assert len(queue.batches_to_cut()) == 1


def _sequence_of_three(queue: Queue) -> list[int]:
    ids = [queue.record_file(new_file(n), META, now=n)[0].id for n in range(3)]
    queue.close_quiet_batches(now=100, quiet_seconds=10, busy=[])
    [batch] = queue.batches_to_cut()
    queue.assign_sequences(batch, [("seq-a", [_placed(i) for i in ids])], [], now=100)
    return ids


def test_assigning_sequences_is_idempotent(queue: Queue) -> None:
    ids = _sequence_of_three(queue)
    queue.assign_sequences(1, [("seq-a", [_placed(i) for i in ids])], [], now=101)
    assert queue.sequence_counts() == {"uploading": 1}
    assert queue.counts() == {"queued": 3}
    assert queue.batches_to_cut() == []


def test_claims_follow_sequence_order_and_respect_next_attempt(queue: Queue) -> None:
    ids = _sequence_of_three(queue)
    first = queue.claim_item("boot1", now=200)
    assert first is not None and first.id == ids[0]
    queue.item_retry(first.id, next_attempt_at=500, reason="network", detail="reset", now=200)
    second = queue.claim_item("boot1", now=201)
    assert second is not None and second.id == ids[1]
    third = queue.claim_item("boot1", now=201)
    assert third is not None and third.id == ids[2]
    assert queue.claim_item("boot1", now=202) is None  # the first waits until 500
    assert queue.next_due() == 500
    again = queue.claim_item("boot1", now=500)
    assert again is not None and again.id == ids[0] and again.attempts == 1


def test_a_sequence_finishes_when_every_image_is_settled(queue: Queue) -> None:
    ids = _sequence_of_three(queue)
    for n, item_id in enumerate(ids):
        claimed = queue.claim_item("b", now=200)
        assert claimed is not None and claimed.id == item_id
        if n == 1:
            queue.item_failed(item_id, Verdict(ItemState.FAILED, "http_400", "bad"), now=201)
        else:
            queue.item_uploaded(item_id, f"key{n}", f"h{n}", now=201)
        assert queue.claim_sequence("b", now=202) is None or n == 2
    assert queue.image_handles("seq-a") == ["h0", "h2"]
    queue.release_sequence("seq-a")
    seq = queue.claim_sequence("b", now=203)
    assert seq is not None and seq.state == SequenceState.FINISHING
    queue.manifest_uploaded(seq.id, "mkey", "mh", now=204)
    queue.sequence_done(seq.id, "cluster-1", now=205)
    assert queue.counts() == {"done": 2, "failed": 1}
    assert queue.sequences()[0].cluster_id == "cluster-1"


def test_leases_of_an_earlier_boot_are_released_at_start_up(queue: Queue) -> None:
    _sequence_of_three(queue)
    queue.claim_item("old-boot", now=200)
    queue.claim_item("new-boot", now=200)
    assert queue.release_stale("new-boot", now=300) == 1
    assert queue.counts() == {"queued": 2, "uploading": 1}


def test_meta_holds_round_trip(queue: Queue) -> None:
    queue.set_meta("hold", '{"reason": "auth"}')
    assert queue.get_meta("hold") == '{"reason": "auth"}'
    queue.set_meta("hold", None)
    assert queue.get_meta("hold") is None


def test_processing_notes_are_kept_per_batch_newest_first(queue: Queue) -> None:
    ids = [queue.record_file(new_file(n), META, now=n)[0].id for n in range(2)]
    queue.close_quiet_batches(now=100, quiet_seconds=10, busy=[])
    queue.assign_sequences(1, [("s", [_placed(i) for i in ids])], [], 100, ["offset +1 h applied"])
    queue.record_file(new_file(9), META, now=200)
    queue.close_quiet_batches(now=300, quiet_seconds=10, busy=[])
    queue.assign_sequences(2, [], [], 300, ["no track: refused"])
    notes = queue.batch_notes()
    assert [n["notes"] for n in notes] == [["no track: refused"], ["offset +1 h applied"]]


def test_an_old_database_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    conn = sqlite3.connect(path)
    for statement in db.MIGRATIONS[0].split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT INTO batches (watch, opened_at, last_added_at) VALUES ('/c', 1, 1)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    q = Queue.open(path)
    assert q.conn.execute("PRAGMA user_version").fetchone()[0] == len(db.MIGRATIONS)
    assert q.conn.execute("SELECT watch, notes FROM batches").fetchone()[:] == ("/c", None)
