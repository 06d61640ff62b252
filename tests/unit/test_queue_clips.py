"""The queue's clips of trimmed videos (schema 4), on a real database file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from daemon.store import db
from daemon.store.queue import (
    Clip,
    ItemState,
    Metadata,
    NewFile,
    Placement,
    Queue,
    Verdict,
)

NOW = 1_780_000_000.0
VIDEO = NewFile("/card", "/card/GX01.MP4", 5000, 1, "ab" * 32, "video", "/card/GX01.MP4")
META = Metadata("2026-06-01T09:00:00+00:00", 46.0, 14.5, 300.0, None, "GoPro", "MAX")


@pytest.fixture
def queue(tmp_path: Path) -> Queue:
    return Queue.open(tmp_path / "q.sqlite3")


def recorded(queue: Queue) -> tuple[int, int]:
    item, _ = queue.record_file(VIDEO, META, NOW)
    queue.close_quiet_batches(NOW + 100, 1, ())
    assert item.batch_id is not None
    return item.id, item.batch_id


def clip(video_id: int, n: int, start: float, end: float) -> Clip:
    place = Placement(video_id, f"2026-06-01T09:00:0{n}+00:00", 46.0 + n, 14.5, 300.0, None)
    return Clip(f"{n:064x}", f"seq{n}", start, end, place)


def cut(queue: Queue, video_id: int, batch: int, note: str = "GX01.MP4: kept 2 of 3") -> None:
    queue.assign_sequences(
        batch,
        [],
        [(video_id, Verdict(ItemState.TRIMMED, "trimmed", note))],
        NOW,
        [note],
        clips=[clip(video_id, 1, 0.0, 41.0), clip(video_id, 2, 63.0, 120.0)],
    )


def test_each_clip_is_a_queued_video_item_in_its_own_sequence(queue: Queue) -> None:
    video_id, batch = recorded(queue)
    cut(queue, video_id, batch)
    counts = queue.counts()
    assert counts == {"trimmed": 1, "queued": 2}
    [whole] = [i for i in queue.items_not_done() if i.state == "trimmed"]
    assert (whole.reason, whole.detail, whole.clip) == ("trimmed", "GX01.MP4: kept 2 of 3", None)
    assert queue.sequence_counts() == {"uploading": 2}
    assert [s.image_count for s in queue.sequences()] == [1, 1]
    assert queue.batch_notes()[0]["notes"] == ["GX01.MP4: kept 2 of 3"]

    first = queue.claim_item("me", NOW)
    assert first is not None and first.clip == (0.0, 41.0)
    assert (first.kind, first.data_path, first.source_path, first.size) == (
        "video",
        VIDEO.data_path,
        VIDEO.source_path,
        VIDEO.size,
    )
    assert (first.parent_id, first.sequence_id, first.sha256) == (video_id, "seq1", f"{1:064x}")
    assert (first.lat, first.make, first.model) == (47.0, "GoPro", "MAX")
    queue.item_uploaded(first.id, "mly_tools_x.mp4", "h1", NOW)
    row = queue.claim_sequence("me", NOW)
    assert row is not None and row.id == "seq1"
    assert queue.video_handle("seq1") == "h1"
    queue.sequence_done("seq1", "c1", NOW)
    assert queue.counts() == {"trimmed": 1, "queued": 1, "done": 1}
    second = queue.claim_item("me", NOW)
    assert second is not None and second.clip == (63.0, 120.0)


def test_repeating_a_cut_writes_nothing_new(queue: Queue) -> None:
    video_id, batch = recorded(queue)
    cut(queue, video_id, batch)
    cut(queue, video_id, batch)  # the video is no longer ingested: nothing is added
    assert queue.counts() == {"trimmed": 1, "queued": 2}
    assert len(queue.sequences()) == 2
    assert queue.batch_notes()[0]["notes"] == ["GX01.MP4: kept 2 of 3"]


def test_a_cut_that_fails_half_way_leaves_no_clip(queue: Queue) -> None:
    video_id, batch = recorded(queue)
    with pytest.raises(IndexError):  # a sequence without members fails after the clips went in
        queue.assign_sequences(
            batch,
            [("broken", [])],
            [(video_id, Verdict(ItemState.TRIMMED, "trimmed", "n"))],
            NOW,
            clips=[clip(video_id, 1, 0.0, 41.0)],
        )
    assert queue.counts() == {"ingested": 1}
    assert queue.sequences() == []


def test_notes_of_a_batch_accumulate(queue: Queue) -> None:
    video_id, batch = recorded(queue)
    cut(queue, video_id, batch, note="video note")
    queue.assign_sequences(batch, [], [], NOW, ["image note", "video note"])
    assert queue.batch_notes()[0]["notes"] == ["video note", "image note"]


def test_a_schema_3_database_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    conn = sqlite3.connect(path)
    for script in db.MIGRATIONS[:3]:
        for statement in script.split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.execute(
        "INSERT INTO items (sha256, kind, size, source_path, data_path, watch, state,"
        " created_at, updated_at) VALUES ('s', 'video', 1, '/c/v.mp4', '/c/v.mp4', '/c',"
        " 'rejected', 0, 0)"
    )
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    q = Queue.open(path)
    assert q.conn.execute("PRAGMA user_version").fetchone()[0] == len(db.MIGRATIONS) >= 4
    [item] = q.items_not_done()
    assert (item.parent_id, item.clip) == (None, None)
