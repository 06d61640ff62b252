"""Cards pulled 20 times mid-copy or mid-upload (issue #5 point 3), with real mounts.

Each card's content lives on its own tmpfs ("the card's flash"); the card is *inserted* by bind-
mounting it at the watched mount point and *pulled* by a lazy unmount of that mount point — the
path is gone at once (new opens fail, the folder left behind is empty and belongs to another
filesystem), as when udisks cleans up after a yanked card. We are root here; where mounting is
not permitted the test skips and says so. A lazy unmount lets files opened before the pull be
read to the end, so a pull shows up as "gone" at the next open or stat, not as EIO mid-read.

Card A is copied into the spool and freed by deleting; card B is read in place (its images and,
with ../shared present, a GoPro video) and freed by moving files into ``uploaded/``. The daemon
runs as a real process (tests/e2e/harness.py) against the sandbox with slow uploads, so pulls
land while files are being copied and uploaded.

Checked at every pull, and at the end:
* nothing is failed, rejected or quarantined; every item marked done is on the sandbox;
* a file that left a card is confirmed: its image is in a cluster on the sandbox, and on card B
  it is in ``uploaded/``;
* in the end every file is uploaded exactly once and has left its card, each recorded as freed.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon import synth
from daemon.sandbox import Sandbox
from tests.chaos._support import (
    bind,
    get_json,
    is_mounted,
    mounted_tmpfs,
    query,
    queue_counts,
    unmount,
    uploaded_names,
    video_clusters,
    write_config,
)
from tests.conftest import CORPUS
from tests.e2e.harness import TOKEN, Daemon, SlowUploads, daemon_env, wait_until

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("CHAOS_SEED", "20261121"))
PULLS = 20
FRAMES_A, FRAMES_B = 60, 40
VIDEO = CORPUS / "video" / "gpmfparser__max-heromode.mp4"
BAD_STATES = ("failed", "rejected", "quarantined")


def _files(root: Path) -> set[str]:
    """Media file names under ``root`` (outside ``uploaded/``)."""
    return {
        p.name
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in (".jpg", ".mp4") and "uploaded" not in p.parts
    }


def test_cards_pulled_twenty_times_lose_nothing_and_free_only_confirmed_files(
    tmp_path: Path,
) -> None:
    print(f"card removal chaos: seed {SEED} (CHAOS_SEED=... to repeat)")
    rng = random.Random(SEED)
    flash_a, flash_b = tmp_path / "flashA", tmp_path / "flashB"
    card_a, card_b = tmp_path / "media" / "CARD_A", tmp_path / "media" / "CARD_B"
    with mounted_tmpfs(flash_a, "32m"), mounted_tmpfs(flash_b, "64m"):
        frames_a = synth.write_drive(flash_a / "DCIM" / "100DRIVE", FRAMES_A, seed=61, prefix="A_")
        later = datetime(2026, 6, 1, 11, 0, tzinfo=UTC)
        frames_b = synth.write_drive(
            flash_b / "DCIM" / "100CAM", FRAMES_B, seed=62, prefix="B_", start=later
        )
        names_a = {f.path.name for f in frames_a}
        names_b = {f.path.name for f in frames_b}
        has_video = VIDEO.is_file()
        if has_video:
            (flash_b / "DCIM" / "100GOPRO").mkdir(parents=True)
            shutil.copy(VIDEO, flash_b / "DCIM" / "100GOPRO" / "GOPR0001.MP4")
        else:
            print(f"no video: {VIDEO} is absent (../shared missing); images only")
        card_a.mkdir(parents=True)
        card_b.mkdir(parents=True)
        cfg = write_config(
            tmp_path,
            [
                {"path": str(card_a), "ingest": "copy", "free_card": "delete"},
                {"path": str(card_b), "ingest": "in_place", "free_card": "move"},
            ],
            upload="max_parallel_uploads = 2",
        )
        db = tmp_path / "state" / "queue.sqlite3"
        stats: Counter[str] = Counter()
        try:
            with Sandbox(tmp_path / "sandbox", TOKEN, faults=SlowUploads(0.5)) as sandbox:
                daemon = Daemon(cfg, daemon_env(sandbox), tmp_path / "daemon.log")
                daemon.start()
                try:
                    bind(flash_a, card_a)
                    bind(flash_b, card_b)
                    for n in range(PULLS):
                        time.sleep(rng.uniform(0.3, 1.5))
                        which = rng.choice(["A", "B", "AB"])
                        counts = queue_counts(db)
                        stats[_phase(counts, FRAMES_A + FRAMES_B + has_video)] += 1
                        for name, card in (("A", card_a), ("B", card_b)):
                            if name in which:
                                unmount(card)
                        _check(db, sandbox, flash_a, flash_b, names_a, names_b)
                        time.sleep(rng.uniform(0.5, 1.5))
                        out = queue_counts(db)  # while the card is out
                        _check(db, sandbox, flash_a, flash_b, names_a, names_b)
                        stats["pulls_with_items_waiting_for_a_card"] += bool(
                            out.get("source_missing", 0)
                        )
                        for name, flash, card in (("A", flash_a, card_a), ("B", flash_b, card_b)):
                            if name in which:
                                bind(flash, card)
                        freed = query(db, "SELECT count(*) FROM freed WHERE outcome = 'freed'")
                        print(f"pull {n + 1:2d} ({which:>2}): at pull {counts}, out {out},")
                        print(f"         card files freed so far: {freed[0][0]}")
                    total = FRAMES_A + FRAMES_B + has_video

                    def finished() -> bool:
                        freed = query(db, "SELECT count(*) FROM freed WHERE outcome = 'freed'")
                        return queue_counts(db) == {"done": total} and freed[0][0] == total

                    wait_until(finished, 240, "every file done and freed")
                    _check(db, sandbox, flash_a, flash_b, names_a, names_b)
                    names = uploaded_names(sandbox)
                    assert names == {n: 1 for n in names_a | names_b}, "not exactly once"
                    if has_video:
                        assert len(video_clusters(sandbox)) == 1
                    assert not _files(flash_a), "card A still holds uploaded files"
                    assert not _files(flash_b), "card B still holds files outside uploaded/"
                    moved = {p.name for p in (flash_b / "uploaded").rglob("*") if p.is_file()}
                    assert names_b <= moved
                    kept = query(db, "SELECT path, detail FROM freed WHERE outcome != 'freed'")
                    assert kept == [], kept
                    assert daemon.alive()
                finally:
                    assert daemon.stop() == 0
        finally:
            for card in (card_a, card_b):
                while is_mounted(card):
                    unmount(card)
    print("pulls by phase:", dict(stats))
    assert stats["ingest"] + stats["upload"] >= PULLS // 2, "too few pulls landed mid-work"
    log = (tmp_path / "daemon.log").read_text()
    assert "Traceback" not in log and "_crashed" not in log


def _phase(counts: dict[str, int], total: int) -> str:
    """Where the work stood at a pull: copying/hashing files off the cards, uploading, or idle."""
    seen = sum(counts.values())
    if seen < total or counts.get("ingested", 0):
        return "ingest"
    if any(counts.get(s, 0) for s in ("queued", "uploading", "uploaded", "source_missing")):
        return "upload"
    return "idle"


def _check(
    db: Path,
    sandbox: Sandbox,
    flash_a: Path,
    flash_b: Path,
    names_a: set[str],
    names_b: set[str],
) -> None:
    """The invariants that hold at any instant, cards in or out."""
    counts = queue_counts(db)
    assert not any(counts.get(s, 0) for s in BAD_STATES), counts
    uploaded = set(uploaded_names(sandbox))
    done = {
        os.path.basename(p)
        for (p,) in query(db, "SELECT source_path FROM items WHERE state = 'done'")
    }
    done_images = {n for n in done if n.endswith(".jpg")}
    assert done_images <= uploaded, f"marked done but not on the sandbox: {done_images - uploaded}"
    gone_a = names_a - _files(flash_a)
    assert gone_a <= uploaded, f"left card A unconfirmed: {sorted(gone_a - uploaded)}"
    gone_b = names_b - _files(flash_b)
    assert gone_b <= uploaded, f"left card B unconfirmed: {sorted(gone_b - uploaded)}"
    moved = {p.name for p in (flash_b / "uploaded").rglob("*") if p.is_file()}
    assert gone_b <= moved, f"left card B without being moved: {sorted(gone_b - moved)}"
    freed = query(db, "SELECT path, sha256 FROM freed WHERE outcome = 'freed'")
    for path, sha in freed:
        assert os.path.basename(path) in uploaded or path.lower().endswith(".mp4"), path
        assert len(sha) == 64


def test_a_card_pulled_before_its_batch_is_cut_makes_the_batch_wait_quietly(
    tmp_path: Path,
) -> None:
    """A video is read in place: when its card is pulled between ingest and the batch cut, the
    cut waits for the card (one log line, no traceback storm) and runs once it is back."""
    if not VIDEO.is_file():
        pytest.skip(f"the shared corpus video is not at {VIDEO}")
    flash, card = tmp_path / "flash", tmp_path / "media" / "CARD"
    with mounted_tmpfs(flash, "16m"):
        (flash / "DCIM" / "100GOPRO").mkdir(parents=True)
        shutil.copy(VIDEO, flash / "DCIM" / "100GOPRO" / "GOPR0001.MP4")
        card.mkdir(parents=True)
        cfg = write_config(
            tmp_path, [{"path": str(card), "ingest": "in_place"}], process="batch_quiet_seconds = 4"
        )
        cfg.write_text(cfg.read_text().replace("batch_quiet_seconds = 2\n", "", 1))
        db = tmp_path / "state" / "queue.sqlite3"
        try:
            with Sandbox(tmp_path / "sandbox", TOKEN) as sandbox:
                daemon = Daemon(cfg, daemon_env(sandbox), tmp_path / "daemon.log")
                daemon.start()
                try:
                    bind(flash, card)
                    wait_until(lambda: queue_counts(db) == {"ingested": 1}, 60, "the video in")
                    unmount(card)
                    log = tmp_path / "daemon.log"
                    wait_until(
                        lambda: '"batch_waits_for_files"' in log.read_text(), 30, "the cut to wait"
                    )
                    time.sleep(3)
                    assert queue_counts(db) == {"ingested": 1}
                    bind(flash, card)
                    wait_until(lambda: queue_counts(db) == {"done": 1}, 90, "the video done")
                    assert len(video_clusters(sandbox)) == 1
                finally:
                    assert daemon.stop() == 0
        finally:
            while is_mounted(card):
                unmount(card)
    text = (tmp_path / "daemon.log").read_text()
    assert text.count('"batch_waits_for_files"') == 1
    assert "Traceback" not in text and "batch_cut_failed" not in text


def test_another_card_in_the_same_slot_is_never_taken_for_the_pulled_one(tmp_path: Path) -> None:
    """Dashcams reuse file names on every card. Card A (read in place, freed by deleting) is
    pulled while its images wait to be uploaded; card X, whose files have the *same names* but
    other pictures, goes into the same slot. A's items keep waiting for A (none is uploaded
    from X's bytes, none refused), X's files become items of their own and are freed only once
    their own upload is confirmed. When A is back, its items finish and A is freed."""
    flash_a, flash_x = tmp_path / "flashA", tmp_path / "flashX"
    card = tmp_path / "media" / "CARD"
    with mounted_tmpfs(flash_a, "16m"), mounted_tmpfs(flash_x, "16m"):
        frames_a = synth.write_drive(flash_a / "DCIM", 12, seed=71)
        later = datetime(2026, 6, 2, 9, 0, tzinfo=UTC)
        frames_x = synth.write_drive(flash_x / "DCIM", 12, seed=72, start=later)
        assert [f.path.name for f in frames_a] == [f.path.name for f in frames_x]
        card.mkdir(parents=True)
        cfg = write_config(
            tmp_path,
            [{"path": str(card), "ingest": "in_place", "free_card": "delete"}],
            upload="max_parallel_uploads = 1",
        )
        db = tmp_path / "state" / "queue.sqlite3"
        hook = SlowUploads(0.4)
        try:
            with Sandbox(tmp_path / "sandbox", TOKEN, faults=hook) as sandbox:
                daemon = Daemon(cfg, daemon_env(sandbox), tmp_path / "daemon.log")
                daemon.start()
                try:
                    bind(flash_a, card)
                    wait_until(
                        lambda: queue_counts(db).get("queued", 0) >= 6, 60, "A's images queued"
                    )
                    unmount(card)
                    bind(flash_x, card)  # the other card, same names, same slot
                    wait_until(
                        lambda: sum(queue_counts(db).values()) == 24,
                        60,
                        "X's files recorded as items of their own",
                    )
                    wait_until(lambda: _days_uploaded(sandbox)["06_02"] == 12, 90, "X uploaded")
                    counts = queue_counts(db)
                    print("while X is in:", counts)
                    assert counts.get("source_missing", 0) > 0, "A's items did not wait for A"
                    assert not any(counts.get(s, 0) for s in BAD_STATES), counts
                    assert len(list(flash_a.rglob("*.jpg"))) == 12, "card A touched while out"
                    wait_until(lambda: not list(flash_x.rglob("*.jpg")), 30, "X freed")

                    unmount(card)
                    bind(flash_a, card)
                    wait_until(lambda: queue_counts(db) == {"done": 24}, 90, "A's images done")
                    wait_until(lambda: not list(flash_a.rglob("*.jpg")), 30, "card A freed")
                    assert _days_uploaded(sandbox) == {"06_01": 12, "06_02": 12}
                    assert all(n == 1 for n in _uploaded_keys(sandbox).values()), "twice"
                finally:
                    hook.seconds = 0
                    assert daemon.stop() == 0
        finally:
            while is_mounted(card):
                unmount(card)
    log = (tmp_path / "daemon.log").read_text()
    assert "Traceback" not in log


def _uploaded_keys(sandbox: Sandbox) -> Counter[tuple[str, str]]:
    """Uploaded images by (file name, capture time): the two cards share their file names."""
    keys: Counter[tuple[str, str]] = Counter()
    for c in get_json(sandbox, "/_sandbox/clusters"):
        for img in c.get("images", []):
            d = img["description"]
            keys[(str(d["MAPFilename"]), str(d["MAPCaptureTime"]))] += 1
    return keys


def _days_uploaded(sandbox: Sandbox) -> Counter[str]:
    """Uploaded images per capture day (``MM_DD`` of MAPCaptureTime): card A drove on June 1,
    card X on June 2."""
    days: Counter[str] = Counter()
    for (_, when), n in _uploaded_keys(sandbox).items():
        days[when[5:10]] += n
    return days
