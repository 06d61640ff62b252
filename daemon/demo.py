"""``mapillaryd demo``: the daemon's main job, end to end, on this machine only.

Starts the sandbox on 127.0.0.1, writes a config into a temporary folder, starts ``mapillaryd
run`` as a real subprocess, then plays a dashcam: a synthesised drive of geotagged JPEG frames
appears on the "SD card" folder. Waits until everything is uploaded, prints what the sandbox
received and the status table, stops the daemon with SIGTERM and exits 0 (1 if anything is
missing).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from daemon import synth
from daemon.sandbox import Sandbox
from daemon.status import render, report
from daemon.store.queue import Queue

TOKEN = "demo-user-token"


def write_config(root: Path, card: Path) -> Path:
    """The demo's config: state under ``root``, the card copied into the spool, UTC camera times."""
    cfg = root / "config.toml"
    cfg.write_text(
        f"""# written by mapillaryd demo
[state]
dir = "{root / "state"}"

[[watch]]
path = "{card}"
ingest = "copy"

[process]
time_zone = "UTC"
batch_quiet_seconds = 3

[scan]
interval_seconds = 30
""",
        encoding="utf-8",
    )
    return cfg


def _status(db: Path) -> dict[str, object] | None:
    if not db.exists():
        return None
    q = Queue.open(db)
    try:
        return report(q)
    finally:
        q.close()


def run_demo(*, frames: int = 60, keep: Path | None = None, timeout: float = 180.0) -> int:
    """Run the demo; return the exit code."""
    root = keep or Path(tempfile.mkdtemp(prefix="mapillaryd-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    card = root / "sdcard"
    card.mkdir(exist_ok=True)
    db = root / "state" / "queue.sqlite3"
    print(f"demo folder: {root}")
    with Sandbox(root / "sandbox", TOKEN) as sandbox:
        print(f"sandbox:     {sandbox.url} (upload service at {sandbox.upload_endpoint})")
        env = dict(os.environ)
        env.update(
            MAPILLARY_TOKEN=TOKEN,
            MAPILLARY_UPLOAD_ENDPOINT=sandbox.upload_endpoint,
            MAPILLARY_GRAPH_API_ENDPOINT=sandbox.graph_endpoint,
        )
        log_path = root / "daemon.log"
        with log_path.open("wb") as log_file:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "daemon", "run", "--config", str(write_config(root, card))],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
            try:
                print(f"daemon:      pid {daemon.pid}, log {log_path}")
                print(f"driving:     {frames} frames onto the card …")
                start = datetime(2026, 6, 1, 9, 0, 0, tzinfo=UTC)
                synth.write_drive(card / "DCIM" / "100DEMO", frames, start=start, prefix="DEMO_")
                ok = _wait_uploaded(db, frames, timeout, daemon)
            finally:
                daemon.send_signal(signal.SIGTERM)
                try:
                    daemon.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    daemon.kill()
        clusters = sandbox.clusters()
    print()
    print(f"the sandbox received {len(clusters)} cluster(s):")
    for c in clusters:
        images = c.get("images", [])
        times = sorted(i["description"].get("MAPCaptureTime", "") for i in images)
        span = f"{times[0]} … {times[-1]}" if times else ""
        print(f"  cluster {c['cluster_id']}: {c['file_type']}, {len(images)} images {span}")
        if images:
            print("    first image description: " + json.dumps(images[0]["description"]))
    rep = _status(db)
    if rep is not None:
        print()
        print(render(rep))
    if keep is None:
        shutil.rmtree(root, ignore_errors=True)
    if not ok or not clusters:
        print(f"\ndemo FAILED: not everything was uploaded within {timeout:g}s", file=sys.stderr)
        return 1
    print("\ndemo OK: every frame is on the sandbox, each exactly once")
    return 0


def _wait_uploaded(db: Path, frames: int, timeout: float, daemon: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            print(f"the daemon exited early with code {daemon.returncode}", file=sys.stderr)
            return False
        rep = _status(db)
        if rep is not None:
            counts = rep["items"]
            assert isinstance(counts, dict)
            line = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
            if line != last:
                print(f"  queue: {line}")
                last = line
            if counts.get("done", 0) >= frames:
                return True
        time.sleep(0.5)
    return False
