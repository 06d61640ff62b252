"""The pure and queue-level parts behind the chaos suite (tests/chaos): the freeing decision,
volume identity, mount-table parsing, disk-room arithmetic, and the queue's source_missing,
freeing and wall-clock operations on a real SQLite file."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from daemon import diskspace, volumes
from daemon.diskspace import DiskFull
from daemon.freeing import CardFreer, Verdict, decide, is_moved_aside, uploaded_path
from daemon.store import db
from daemon.store.queue import FreeCandidate, ItemState, Metadata, NewFile, Queue
from tests.conftest import ManualClock

META = Metadata(capture_time="2026-06-01T09:00:00+00:00", lat=46.0, lon=14.5)


def candidate(**kw: object) -> FreeCandidate:
    base: dict[str, object] = dict(
        path="/card/IMG_1.jpg",
        item_id=1,
        sha256="a" * 64,
        size=10,
        mtime_ns=5,
        volume="marker:x",
        pending_id=None,
        pending_action=None,
        pending_moved_to=None,
    )
    base.update(kw)
    return FreeCandidate(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("vols", "stat", "sha", "pending", "verdict"),
    [
        ({"marker:x"}, (10, 5), "a" * 64, None, Verdict.FREE),
        ({"marker:y"}, (10, 5), "a" * 64, None, Verdict.WAIT),  # another card in the slot
        (set(), (10, 5), "a" * 64, None, Verdict.WAIT),  # no card at all
        ({"marker:x"}, (11, 5), None, None, Verdict.KEEP),  # rewritten since
        ({"marker:x"}, (10, 6), None, None, Verdict.KEEP),
        ({"marker:x"}, (10, 5), "b" * 64, None, Verdict.KEEP),  # same size and time, other bytes
        ({"marker:x"}, None, None, None, Verdict.GONE),
        ({"marker:x"}, None, None, 7, Verdict.ALREADY),  # an interrupted freeing did it
        ({"marker:x", "fsid:1"}, (10, 5), None, None, Verdict.FREE),  # not hashed yet: so far ok
    ],
)
def test_the_freeing_decision(
    vols: set[str],
    stat: tuple[int, int] | None,
    sha: str | None,
    pending: int | None,
    verdict: Verdict,
) -> None:
    assert decide(candidate(pending_id=pending), vols, stat, sha).verdict is verdict


def test_moved_aside_paths(tmp_path: Path) -> None:
    dest = uploaded_path(tmp_path, str(tmp_path / "DCIM" / "A.jpg"))
    assert dest == tmp_path / "uploaded" / "DCIM" / "A.jpg"
    assert is_moved_aside(tmp_path, str(dest))
    assert not is_moved_aside(tmp_path, str(tmp_path / "uploadedX" / "A.jpg"))


def test_a_volume_is_its_filesystem_until_freeing_writes_a_marker(tmp_path: Path) -> None:
    fs = volumes.fs_identity(tmp_path)
    assert fs is not None and fs.split(":")[0] in ("uuid", "fsid", "dev")
    assert volumes.identify(tmp_path) == fs
    assert volumes.identities(tmp_path) == {fs}
    ident = volumes.ensure_marker(tmp_path)
    assert ident is not None
    assert volumes.ensure_marker(tmp_path) == ident  # written once
    assert volumes.identify(tmp_path) == f"marker:{ident}"
    assert volumes.identities(tmp_path) == {fs, f"marker:{ident}"}
    assert volumes.identify(tmp_path / "missing") is None
    assert volumes.identities(tmp_path / "missing") == frozenset()


MOUNTS = """\
/dev/vda / ext4 rw,relatime 0 0
tmpfs /run tmpfs rw,nosuid 0 0
/dev/sda1 /media/pi/MY\\040CARD vfat rw 0 0
tmpfs /media/pi/MY\\040CARD/ram tmpfs rw 0 0
"""


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/var/lib/mapillaryd", "ext4"),
        ("/run/mapillaryd", "tmpfs"),
        ("/run", "tmpfs"),
        ("/runner/x", "ext4"),  # a prefix of the name is not the mount
        ("/media/pi/MY CARD/DCIM", "vfat"),
        ("/media/pi/MY CARD/ram/x", "tmpfs"),
    ],
)
def test_the_filesystem_type_of_a_path_from_the_mount_table(path: str, kind: str) -> None:
    assert diskspace.mount_fs_type(path, MOUNTS) == kind


def test_room_arithmetic_and_full_errors(tmp_path: Path) -> None:
    assert diskspace.has_room(free=100, needed=40, reserve=60)
    assert not diskspace.has_room(free=100, needed=41, reserve=60)
    with pytest.raises(DiskFull) as info:
        diskspace.room_for(tmp_path, 10**18, 0)
    assert str(tmp_path) in str(info.value)
    assert diskspace.is_full_error(OSError(28, "No space left on device"))
    assert not diskspace.is_full_error(OSError(2, "No such file"))
    assert diskspace.is_full_error(sqlite3.OperationalError("database or disk is full"))


def test_a_full_database_disk_rolls_the_whole_transaction_back(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "q.sqlite3")
    conn.execute("CREATE TABLE t (x BLOB)")
    conn.execute("PRAGMA max_page_count = 60")  # a tiny disk, in SQLite's own terms
    with pytest.raises(DiskFull), db.write(conn) as c:
        c.execute("INSERT INTO t VALUES (1)")
        c.execute("INSERT INTO t VALUES (zeroblob(1000000))")
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    assert not conn.in_transaction
    conn.close()


# --- the queue --------------------------------------------------------------------------------


def record(q: Queue, n: int, data_path: str, volume: str | None, watch: str = "/card") -> int:
    f = NewFile(watch, f"{watch}/IMG_{n}.jpg", 10 + n, n, f"{n:064x}", "image", data_path, volume)
    item, _ = q.record_file(f, META, 0.0)
    return item.id


def test_source_missing_items_resume_only_for_their_own_volume(tmp_path: Path) -> None:
    q = Queue.open(tmp_path / "q.sqlite3")
    a = record(q, 1, "/card/IMG_1.jpg", "marker:A")
    b = record(q, 2, "/card/IMG_2.jpg", "marker:B")
    q.conn.execute("UPDATE items SET state = 'queued'")
    q.item_source_missing(a, "gone", 1.0)
    assert q.mark_source_missing_under("/card", "/card", "marker:B", 1.0) == 1  # b
    assert q.counts() == {ItemState.SOURCE_MISSING: 2}
    waits = dict(q.conn.execute("SELECT id, wait_volume FROM items").fetchall())
    assert waits == {a: "marker:A", b: "marker:B"}

    def present(path: str, size: int) -> bool:
        return True

    assert q.resume_source_missing("/card", {"marker:C"}, present, 2.0) == 0  # another card
    assert q.resume_source_missing("/card", {"fsid:1", "marker:B"}, present, 2.0) == 1
    assert q.resume_source_missing("/card", {"marker:A"}, lambda p, s: False, 2.0) == 0
    assert q.counts() == {ItemState.QUEUED: 1, ItemState.SOURCE_MISSING: 1}
    q.close()


def test_only_done_content_on_a_known_volume_is_freeable_and_each_file_once(
    tmp_path: Path,
) -> None:
    card = tmp_path / "card"
    card.mkdir()
    q = Queue.open(tmp_path / "q.sqlite3")
    paths = []
    for n in range(3):
        p = card / f"IMG_{n}.jpg"
        p.write_bytes(b"x" * (10 + n))
        paths.append(p)
    ids = []
    for n, p in enumerate(paths):
        st = p.stat()
        sha = hashlib.sha256(p.read_bytes()).hexdigest()
        vol = None if n == 2 else volumes.identify(card)
        f = NewFile(str(card), str(p), st.st_size, st.st_mtime_ns, sha, "image", str(p), vol)
        ids.append(q.record_file(f, META, 0.0)[0].id)
    q.conn.execute("UPDATE items SET state = 'done' WHERE id IN (?, ?)", (ids[0], ids[2]))
    found = q.freeable(str(card))
    assert [c.path for c in found] == [str(paths[0])]  # 1 not done, 2 has no known volume

    freer = CardFreer(q, ManualClock())
    assert freer.free_under(card, "delete", {"marker:other"}) == 0  # another card is there
    assert paths[0].exists()
    assert freer.free_under(card, "delete", volumes.identities(card)) == 1
    assert not paths[0].exists() and paths[1].exists() and paths[2].exists()
    assert q.freed_counts() == {"freed": 1}
    assert q.freeable(str(card)) == []
    q.close()


def test_a_changed_file_is_kept_and_recorded(tmp_path: Path) -> None:
    card = tmp_path / "card"
    card.mkdir()
    p = card / "IMG_1.jpg"
    p.write_bytes(b"original")
    st = p.stat()
    q = Queue.open(tmp_path / "q.sqlite3")
    vol = volumes.identify(card)
    f = NewFile(str(card), str(p), st.st_size, st.st_mtime_ns, "0" * 64, "image", str(p), vol)
    item = q.record_file(f, META, 0.0)[0].id
    q.conn.execute("UPDATE items SET state = 'done' WHERE id = ?", (item,))
    freer = CardFreer(q, ManualClock())
    assert freer.free_under(card, "move", volumes.identities(card)) == 0
    assert p.exists() and not (card / "uploaded").exists()
    assert q.freed_counts() == {"kept": 1}
    assert "differ" in q.freed_rows()[0]["detail"]
    q.close()


def test_shift_and_clamp_move_only_scheduled_deadlines(tmp_path: Path) -> None:
    q = Queue.open(tmp_path / "q.sqlite3")
    a = record(q, 1, "/s/1.jpg", None)
    b = record(q, 2, "/s/2.jpg", None)
    q.conn.execute("UPDATE items SET next_attempt_at = 500 WHERE id = ?", (a,))
    q.shift_schedule(-100)
    got = dict(q.conn.execute("SELECT id, next_attempt_at FROM items").fetchall())
    assert got == {a: 400, b: 0}  # 0 means "never waited": left alone
    last = q.conn.execute("SELECT last_added_at FROM batches").fetchone()[0]
    assert last == -100  # the open batch's quiet window moved too
    q.conn.execute("UPDATE items SET next_attempt_at = 1e12 WHERE id = ?", (b,))
    assert q.clamp_schedule(1000.0, 3600.0) == 1
    got = dict(q.conn.execute("SELECT id, next_attempt_at FROM items").fetchall())
    assert got == {a: 400, b: 1000.0}
    q.close()


def test_a_file_missing_because_its_card_was_pulled_is_not_recorded_as_gone(
    tmp_path: Path,
) -> None:
    """The freer's view of the volume is taken again after each look at a file: a card pulled
    during a pass (here: its folder renamed away) is "another volume", not "file removed"."""
    card = tmp_path / "card"
    card.mkdir()
    p = card / "IMG_1.jpg"
    p.write_bytes(b"content")
    st = p.stat()
    q = Queue.open(tmp_path / "q.sqlite3")
    sha = hashlib.sha256(b"content").hexdigest()
    vol = volumes.ensure_marker(card)
    f = NewFile(
        str(card), str(p), st.st_size, st.st_mtime_ns, sha, "image", str(p), f"marker:{vol}"
    )
    item = q.record_file(f, META, 0.0)[0].id
    q.conn.execute("UPDATE items SET state = 'done' WHERE id = ?", (item,))
    seen_before_the_pull = volumes.identities(card)
    card.rename(tmp_path / "elsewhere")  # pulled after the pass looked at the volume
    card.mkdir()  # the empty mount point left behind
    freer = CardFreer(q, ManualClock())
    assert freer.free_under(card, "delete", seen_before_the_pull) == 0
    assert q.freed_counts() == {}
    (card).rmdir()
    (tmp_path / "elsewhere").rename(card)  # back
    assert freer.free_under(card, "delete", volumes.identities(card)) == 1
    assert not p.exists()
    q.close()
