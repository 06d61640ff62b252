"""``mapillaryd pause|resume|queue list|retry|forget`` and the ``status`` table, as a user runs
them (real subprocesses on a real queue database)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from daemon.store.queue import ItemState, Metadata, NewFile, Placement, Queue, Verdict

NOW = 1_780_000_000.0


def mapillaryd(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAPILLARY")}
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def _setup(tmp: Path) -> tuple[Path, dict[str, int]]:
    """A config and a queue with a waiting, a failed, a rejected and a queued image."""
    cfg = tmp / "c.toml"
    cfg.write_text(f'[state]\ndir = "{tmp / "state"}"\n')
    q = Queue.open(tmp / "state" / "queue.sqlite3")
    try:
        ids = {}
        for name in ("waiting", "failed", "queued"):
            sha = hashlib.sha256(name.encode()).hexdigest()
            f = NewFile("/card", f"/card/{name}.jpg", 10, 1, sha, "image", f"/card/{name}.jpg")
            item, _ = q.record_file(f, Metadata("2026-06-01T12:00:00+00:00", 46.0, 14.5), NOW)
            ids[name] = item.id
        sha = hashlib.sha256(b"rejected").hexdigest()
        f = NewFile("/card", "/card/rejected.jpg", 10, 1, sha, "image", "/card/rejected.jpg")
        bad, _ = q.record_file(f, Verdict(ItemState.REJECTED, "no_gps", "no position"), NOW)
        ids["rejected"] = bad.id
        q.close_quiet_batches(NOW + 100, 10, [])
        [batch] = q.batches_to_cut()
        places = [
            Placement(ids[n], "2026-06-01T12:00:00+00:00", 46.0, 14.5, None, None)
            for n in ("waiting", "failed", "queued")
        ]
        q.assign_sequences(batch, [("seq", places)], [], NOW)
        a = q.claim_item("b", NOW)
        assert a is not None and a.id == ids["waiting"]
        q.item_retry(a.id, 4_000_000_000.0, "network", "connection refused", NOW)
        b = q.claim_item("b", NOW)
        assert b is not None and b.id == ids["failed"]
        q.item_failed(b.id, Verdict(ItemState.FAILED, "http_400", "refused"), NOW)
    finally:
        q.close()
    return cfg, ids


def test_pause_and_resume_show_in_status_and_survive_the_process(tmp_path: Path) -> None:
    cfg, _ = _setup(tmp_path)
    r = mapillaryd("pause", "--config", str(cfg))
    assert r.returncode == 0 and "paused" in r.stdout
    r = mapillaryd("status", "--json", "--config", str(cfg))
    assert json.loads(r.stdout)["paused"]["by"] == "command line"
    table = mapillaryd("status", "--config", str(cfg)).stdout
    assert "UPLOADS PAUSED" in table
    assert "waiting to retry: 1 network" in table
    assert "backup: not configured" in table
    r = mapillaryd("resume", "--config", str(cfg))
    assert r.returncode == 0 and "resumed" in r.stdout
    assert json.loads(mapillaryd("status", "--json", "--config", str(cfg)).stdout)["paused"] is None


def test_queue_list_retry_and_forget(tmp_path: Path) -> None:
    cfg, ids = _setup(tmp_path)
    r = mapillaryd("queue", "list", "--json", "--state", "failed", "--config", str(cfg))
    assert r.returncode == 0
    assert [row["id"] for row in json.loads(r.stdout)] == [ids["failed"]]
    table = mapillaryd("queue", "list", "--config", str(cfg)).stdout
    assert "/card/waiting.jpg" in table and "network" in table and "http_400" in table

    r = mapillaryd("queue", "retry", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("1 waiting upload(s) due now; 1 failed file(s) given another try")
    listed = json.loads(mapillaryd("queue", "list", "--json", "--config", str(cfg)).stdout)
    states = {row["id"]: (row["state"], row["next_attempt_at"]) for row in listed}
    assert states[ids["waiting"]] == ("queued", 0) and states[ids["failed"]] == ("queued", 0)

    r = mapillaryd("queue", "retry", str(ids["rejected"]), "--config", str(cfg))
    assert r.returncode == 1 and "fix the file and drop it again" in r.stderr

    r = mapillaryd("queue", "forget", str(ids["rejected"]), "--config", str(cfg))
    assert r.returncode == 0 and f"forgotten: {ids['rejected']}" in r.stdout
    r = mapillaryd("queue", "forget", "424242", "--config", str(cfg))
    assert r.returncode == 1 and "no such item" in r.stderr
    assert "rejected.jpg" not in mapillaryd("status", "--config", str(cfg)).stdout
