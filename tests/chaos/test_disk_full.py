"""Disk full on the spool and on the state dir (issue #5 point 4), on real small tmpfs mounts
(we are root in the test machine; without permission to mount, the tests skip and say so).

* Spool full: ingest holds before copying (the spool is below ``min_free_mb``), ``status``
  shows the hold and the low disk, nothing is recorded half-way, the card is untouched; once
  the space is freed everything is uploaded exactly once.
* State dir full to the last byte (SQLite gets ``SQLITE_FULL``, the kernel ``ENOSPC``): the
  daemon keeps running, the database stays intact, and everything completes once space returns.
* A state dir on tmpfs without ``allow_tmpfs`` is refused with a clear message (exit 3).
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon import synth
from daemon.sandbox import Sandbox
from tests.chaos._support import (
    fill,
    mounted_tmpfs,
    queue_counts,
    uploaded_names,
    write_config,
)
from tests.e2e.harness import TOKEN, Daemon, SlowUploads, daemon_env, wait_until

pytestmark = pytest.mark.slow


def status_text(daemon: Daemon) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "daemon", "status", "--config", str(daemon.config)],
        env=daemon.env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout


def integrity(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def all_done(db: Path, n: int) -> bool:
    return queue_counts(db) == {"done": n}


def test_a_full_spool_holds_ingest_with_a_status_and_resumes_when_space_returns(
    tmp_path: Path,
) -> None:
    spoolfs = tmp_path / "spoolfs"
    spool = spoolfs / "spool"  # the filler must not sit in the spool: start-up cleans it
    card = tmp_path / "card"
    frames = synth.write_drive(card / "DCIM" / "100DRIVE", 12, seed=41)
    with mounted_tmpfs(spoolfs, "4m"):
        filler = fill(spoolfs, leave=300_000)  # below the 1 MB reserve: held at the first file
        cfg = write_config(
            tmp_path,
            [{"path": str(card), "ingest": "copy"}],
            state=f'spool_dir = "{spool}"\nmin_free_mb = 1\nallow_tmpfs = true',
        )
        db = tmp_path / "state" / "queue.sqlite3"
        with Sandbox(tmp_path / "sandbox", TOKEN) as sandbox:
            daemon = Daemon(cfg, daemon_env(sandbox), tmp_path / "daemon.log")
            daemon.start()
            try:
                wait_until(
                    lambda: (daemon.status().get("ingest_hold") or {}).get("reason") == "disk_low",
                    60,
                    "ingest to be held for disk space",
                )
                rep = daemon.status()
                print("held:", rep["ingest_hold"], "disk:", rep["disk"])
                assert rep["total"] == 0, "something was recorded while the spool was full"
                assert str(spool) in rep["ingest_hold"]["detail"]
                assert [d["low"] for d in rep["disk"] if d["role"] == "spool"] == [True]
                assert "INGEST HELD (disk_low)" in status_text(daemon)
                assert sorted(p.name for p in card.rglob("*.jpg")) == sorted(
                    f.path.name for f in frames
                )
                assert not list(spool.rglob("*.part")), "a partial copy was left behind"

                filler.unlink()  # space returns
                wait_until(lambda: all_done(db, len(frames)), 120, "every frame done")
                rep = daemon.status()
                assert rep["ingest_hold"] is None
                assert "INGEST HELD" not in status_text(daemon)
                names = uploaded_names(sandbox)
                assert names == {f.path.name: 1 for f in frames}
                assert daemon.alive()
            finally:
                assert daemon.stop() == 0
    assert integrity(db) == "ok"
    log = (tmp_path / "daemon.log").read_text()
    assert log.count('"ingest_held"') == 1, "the hold was not said exactly once"
    assert log.count('"ingest_resumed"') == 1
    assert "Traceback" not in log


def test_a_state_disk_full_to_the_last_byte_loses_nothing_and_resumes(tmp_path: Path) -> None:
    state = tmp_path / "statefs"
    card = tmp_path / "card"
    staging = tmp_path / "staging"
    first = synth.write_drive(card / "DCIM" / "A", 10, seed=51)
    later = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    second = synth.write_drive(staging, 10, seed=52, prefix="B_", start=later)
    with mounted_tmpfs(state, "16m"):
        cfg = write_config(
            tmp_path,
            [{"path": str(card), "ingest": "copy"}],
            state_dir=state,
            state=f'spool_dir = "{tmp_path / "spool"}"\nmin_free_mb = 0.5\nallow_tmpfs = true',
        )
        db = state / "queue.sqlite3"
        with Sandbox(tmp_path / "sandbox", TOKEN, faults=SlowUploads(0.2)) as sandbox:
            daemon = Daemon(cfg, daemon_env(sandbox), tmp_path / "daemon.log")
            daemon.start()
            try:
                # Fill the state disk while the first card is being uploaded.
                wait_until(
                    lambda: (
                        queue_counts(db).get("queued", 0) + queue_counts(db).get("uploading", 0) > 0
                    ),
                    60,
                    "uploads to start",
                )
                filler = fill(state, leave=0)
                print("state disk full; queue:", queue_counts(db))
                shutil.copytree(staging, card / "DCIM" / "B")
                time.sleep(6)  # two scan intervals: the new files are found and must wait
                assert daemon.alive(), "the daemon died on a full state disk"
                held = queue_counts(db)
                print("while full:", held)
                assert sum(held.values()) <= len(first), "new files recorded on a full disk?"
                rep = daemon.status()
                assert [d["low"] for d in rep["disk"] if d["role"] == "state"] == [True]

                filler.unlink()
                n = len(first) + len(second)
                wait_until(lambda: all_done(db, n), 180, "every frame done")
                names = uploaded_names(sandbox)
                assert names == {f.path.name: 1 for f in [*first, *second]}
                assert daemon.alive()
            finally:
                assert daemon.stop() == 0
        assert integrity(db) == "ok"
    log = (tmp_path / "daemon.log").read_text()
    assert "Traceback" not in log
    assert "_crashed" not in log


def test_a_state_dir_on_tmpfs_is_refused_unless_allowed(tmp_path: Path) -> None:
    state = tmp_path / "statefs"
    with mounted_tmpfs(state, "4m"), Sandbox(tmp_path / "sandbox", TOKEN) as sandbox:
        cfg = write_config(tmp_path, [{"path": str(tmp_path / "card")}], state_dir=state)
        run = [sys.executable, "-m", "daemon", "run", "--config", str(cfg)]
        env = daemon_env(sandbox)
        out = subprocess.run(run, env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 3, out.stderr
        assert f"state.dir: {state} is on tmpfs" in out.stderr
        assert "allow_tmpfs" in out.stderr
        assert not (state / "queue.sqlite3").exists()
