"""Running the real ``mapillaryd`` as a subprocess against the sandbox, for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.sandbox import Sandbox
from daemon.sandbox.app import Request
from daemon.sandbox.replies import Reply

TOKEN = "e2e-user-token-5f3a9c"


def write_config(root: Path, watches: list[Path], *, extra: str = "") -> Path:
    """A config with its state under ``root`` watching ``watches`` (copy mode, UTC cameras)."""
    watch_tables = "".join(f'\n[[watch]]\npath = "{w}"\ningest = "copy"\n' for w in watches)
    cfg = root / "config.toml"
    cfg.write_text(
        f"""[state]
dir = "{root / "state"}"
{watch_tables}
[process]
time_zone = "UTC"
batch_quiet_seconds = 3

[scan]
interval_seconds = 5

[upload]
retry_base_seconds = 0.2
retry_cap_seconds = 2

[log]
format = "json"
level = "info"
{extra}""",
        encoding="utf-8",
    )
    return cfg


def daemon_env(sandbox: Sandbox) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        MAPILLARY_TOKEN=TOKEN,
        MAPILLARY_UPLOAD_ENDPOINT=sandbox.upload_endpoint,
        MAPILLARY_GRAPH_API_ENDPOINT=sandbox.graph_endpoint,
    )
    return env


class Daemon:
    """``mapillaryd run`` in a subprocess; its output appended to ``log``."""

    def __init__(self, config: Path, env: dict[str, str], log: Path) -> None:
        self.config, self.env, self.log = config, env, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "daemon", "run", "--config", str(self.config)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        """SIGTERM and wait; return the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def status(self) -> dict[str, Any]:
        """``mapillaryd status --json`` as a separate process, as a user would run it."""
        out = subprocess.run(
            [sys.executable, "-m", "daemon", "status", "--json", "--config", str(self.config)],
            env=self.env,
            capture_output=True,
            check=True,
            timeout=60,
        )
        result: dict[str, Any] = json.loads(out.stdout)
        return result


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.5
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def strip_exif(data: bytes) -> bytes:
    """The JPEG without its EXIF APP1 segment(s): everything else, byte for byte.

    Written independently of daemon.media so the test does not check the code with itself.
    """
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    out, i = bytearray(data[:2]), 2
    while i < len(data):
        assert data[i] == 0xFF, f"bad marker at {i}"
        marker = data[i + 1]
        if marker == 0xDA:  # start of scan: the rest is entropy-coded data + EOI
            out += data[i:]
            break
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        segment = data[i : i + 2 + length]
        if not (marker == 0xE1 and segment[4:10] == b"Exif\x00\x00"):
            out += segment
        i += 2 + length
    return bytes(out)


class SlowUploads:
    """A sandbox fault hook that makes every upload POST take ``seconds`` longer: a slow
    uplink, so that a test's kills can land while uploads are in flight."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def before(self, request: Request) -> Reply | None:
        if request.route == "POST /upload/{session_key}":
            time.sleep(self.seconds)
        return None
