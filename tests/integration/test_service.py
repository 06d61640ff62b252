"""The service in-process with real parts: watchdog observers on temp folders, a real SQLite
queue, the sandbox on 127.0.0.1. Each test runs ``Service.run`` in a thread and stops it."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from daemon import synth
from daemon.config import Config, load_config
from daemon.sandbox import Sandbox
from daemon.sandbox.app import Request
from daemon.sandbox.replies import Reply, graph_error
from daemon.service import Service
from daemon.status import report
from daemon.store.queue import Queue
from tests.e2e.harness import wait_until

TOKEN = "service-test-token-9d1e"


def make_config(
    tmp: Path,
    sandbox: Sandbox,
    *,
    ingest: str = "copy",
    token_file: Path | None = None,
    env_token: str | None = TOKEN,
) -> Config:
    card = tmp / "card"
    card.mkdir(exist_ok=True)
    cfg = tmp / "config.toml"
    token_line = f'token_file = "{token_file}"' if token_file else ""
    cfg.write_text(
        f"""[state]
dir = "{tmp / "state"}"
[[watch]]
path = "{card}"
ingest = "{ingest}"
[mapillary]
upload_endpoint = "{sandbox.upload_endpoint}"
graph_endpoint = "{sandbox.graph_endpoint}"
{token_line}
[process]
time_zone = "UTC"
batch_quiet_seconds = 1
[scan]
interval_seconds = 60
[upload]
retry_base_seconds = 0.1
retry_cap_seconds = 0.5
""",
        encoding="utf-8",
    )
    env = {"MAPILLARY_TOKEN": env_token} if env_token else {}
    return load_config(cfg, env=env)


@contextmanager
def running(cfg: Config) -> Iterator[Service]:
    service = Service(cfg)
    stop = threading.Event()
    ready = threading.Event()
    t = threading.Thread(target=service.run, args=(stop,), kwargs={"on_ready": ready.set})
    t.start()
    try:
        assert ready.wait(10)
        yield service
    finally:
        stop.set()
        t.join(30)
        assert not t.is_alive(), "the service did not stop within 30 s"


def status(cfg: Config) -> dict[str, object]:
    q = Queue.open(cfg.state.database)
    try:
        return report(q)
    finally:
        q.close()


def counts(cfg: Config) -> dict[str, int]:
    items = status(cfg)["items"]
    assert isinstance(items, dict)
    return items


def stats(sandbox: Sandbox) -> dict[str, int]:
    with urllib.request.urlopen(f"{sandbox.url}/_sandbox/stats", timeout=10) as r:
        data: dict[str, int] = json.loads(r.read())["requests"]
        return data


def upstream_requests(sandbox: Sandbox) -> int:
    """Requests the sandbox got from clients (its own /_sandbox inspection routes not counted)."""
    return sum(n for route, n in stats(sandbox).items() if "/_sandbox/" not in route)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    with Sandbox(tmp_path / "sandbox", TOKEN) as s:
        yield s


def test_a_file_still_being_written_is_never_taken(tmp_path: Path, sandbox: Sandbox) -> None:
    cfg = make_config(tmp_path, sandbox)
    frame = synth.write_drive(tmp_path / "src", 1)[0].path.read_bytes()
    target = tmp_path / "card" / "SLOW.jpg"
    with running(cfg):
        with target.open("wb") as fh:  # a camera writing slowly: 6 pieces over ~4.5 s
            step = len(frame) // 6 + 1
            for i in range(0, len(frame), step):
                fh.write(frame[i : i + step])
                fh.flush()
                time.sleep(0.75)
                assert sum(counts(cfg).values()) == 0, "taken while still being written"
        wait_until(lambda: counts(cfg)["done"] == 1, 60, "the slow file to be uploaded")
        rep = status(cfg)
    assert rep["files_seen"] == 1
    q = Queue.open(cfg.state.database)
    [row] = q.conn.execute("SELECT sha256, state FROM items").fetchall()
    assert row["sha256"] == hashlib.sha256(frame).hexdigest()


def test_in_place_mode_uploads_without_a_spool_copy(tmp_path: Path, sandbox: Sandbox) -> None:
    cfg = make_config(tmp_path, sandbox, ingest="in_place")
    with running(cfg):
        synth.write_drive(tmp_path / "card" / "DCIM", 5)
        wait_until(lambda: counts(cfg)["done"] == 5, 60, "5 images uploaded")
    spool_files = [p for p in cfg.state.spool_dir.rglob("*") if p.is_file()]
    assert spool_files == []
    assert len(sandbox.clusters()) == 1


def test_a_rejected_token_holds_everything_quietly_until_the_token_file_changes(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("revoked-token-0000\n")
    cfg = make_config(tmp_path, sandbox, token_file=token_file, env_token=None)
    with running(cfg):
        synth.write_drive(tmp_path / "card" / "DCIM", 8)
        wait_until(lambda: status(cfg)["hold"] is not None, 60, "uploads to be held")
        hold = status(cfg)["hold"]
        assert isinstance(hold, dict) and hold["reason"] == "auth_rejected"
        assert "rejected the token" in hold["detail"]
        # Workers already in flight when the first 401 came back each get theirs too; after
        # that, silence: nothing more is sent, not even retries.
        time.sleep(1)
        sent = upstream_requests(sandbox)
        assert sent <= cfg.upload.max_parallel_uploads  # at most one request per worker
        time.sleep(2)
        assert upstream_requests(sandbox) == sent
        assert counts(cfg)["done"] == 0
        token_file.write_text(TOKEN + "\n")  # the user fixes the token: no restart
        wait_until(lambda: counts(cfg)["done"] == 8, 60, "uploads to resume")
        assert status(cfg)["hold"] is None
    assert "revoked-token-0000" not in json.dumps(status(cfg))


class FailFinish:
    """Answers finish_upload with 500 for the first ``n`` calls."""

    def __init__(self, n: int) -> None:
        self.left = n
        self.lock = threading.Lock()

    def before(self, request: Request) -> Reply | None:
        if request.route == "POST /finish_upload":
            with self.lock:
                if self.left > 0:
                    self.left -= 1
                    return graph_error(500, "An unexpected error has occurred.")
        return None


def test_a_failed_finish_upload_is_retried_with_the_stored_handle(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    sandbox.faults = FailFinish(3)
    cfg = make_config(tmp_path, sandbox)
    with running(cfg):
        synth.write_drive(tmp_path / "card" / "DCIM", 6)
        wait_until(lambda: counts(cfg)["done"] == 6, 60, "the sequence to finish")
    s = stats(sandbox)
    assert s["POST /finish_upload"] == 4  # three failures, then success
    manifest_posts = s["POST /upload/{session_key}"] - 6
    assert manifest_posts == 1  # the manifest was sent once; its stored handle was reused
    [cluster] = sandbox.clusters()
    assert len(cluster["images"]) == 6


def test_an_existing_card_is_found_by_the_start_up_scan(tmp_path: Path, sandbox: Sandbox) -> None:
    cfg = make_config(tmp_path, sandbox)
    synth.write_drive(tmp_path / "card" / "DCIM" / "100CAM", 4)  # written before the daemon runs
    (tmp_path / "card" / ".hidden.jpg").write_bytes(b"not for us")
    (tmp_path / "card" / "DCIM" / "clip.jpg.part").write_bytes(b"still copying")
    with running(cfg):
        wait_until(lambda: counts(cfg)["done"] == 4, 60, "the card's 4 images uploaded")
    assert status(cfg)["files_seen"] == 4
    # Done: the spool copies are gone, the card's files untouched.
    assert [p for p in cfg.state.spool_dir.rglob("*") if p.is_file()] == []
    assert len(list((tmp_path / "card" / "DCIM" / "100CAM").glob("*.jpg"))) == 4


def test_a_missing_watch_folder_is_waited_for(tmp_path: Path, sandbox: Sandbox) -> None:
    cfg = make_config(tmp_path, sandbox)
    (tmp_path / "card").rmdir()  # the card is not inserted
    with running(cfg):
        time.sleep(1)
        assert counts(cfg)["done"] == 0
        synth.write_drive(tmp_path / "staging", 3)
        (tmp_path / "staging").rename(tmp_path / "card")  # inserted: the folder appears at once
        wait_until(lambda: counts(cfg)["done"] == 3, 60, "the inserted card's images")
