"""Logs under systemd: when ``$JOURNAL_STREAM`` names the process's stdout, log lines go to
stdout as JSON with journald priority prefixes; otherwise they stay on stderr without them.
A subprocess with its stdout on a real file plays the journal's stream (same device:inode
check systemd documents); the token is redacted in both."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import structlog
from daemon import logsetup
logsetup.configure("info", "auto")
logsetup.REDACTOR.add("tok-5ecret-77")
log = structlog.get_logger("t")
log.info("started", note="token tok-5ecret-77")
log.warning("low_space")
log.error("uploads_held", header="Authorization: OAuth tok-5ecret-77")
"""


def run(tmp_path: Path, journal: bool) -> tuple[str, str]:
    out, err = tmp_path / f"out-{journal}", tmp_path / f"err-{journal}"
    out.touch()
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    if journal:
        st = out.stat()
        env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    with out.open("w") as o, err.open("w") as e:
        subprocess.run(
            [sys.executable, "-c", SCRIPT], stdout=o, stderr=e, env=env, check=True, timeout=60
        )
    return out.read_text(), err.read_text()


def test_under_the_journal_lines_carry_priorities_on_stdout(tmp_path: Path) -> None:
    out, err = run(tmp_path, journal=True)
    assert err == ""
    lines = out.splitlines()
    assert [line[:3] for line in lines] == ["<6>", "<4>", "<3>"]
    events = [json.loads(line[3:]) for line in lines]
    assert [e["event"] for e in events] == ["started", "low_space", "uploads_held"]
    assert "tok-5ecret-77" not in out


def test_elsewhere_json_lines_on_stderr_without_prefixes(tmp_path: Path) -> None:
    out, err = run(tmp_path, journal=False)
    assert out == ""
    assert [json.loads(line)["level"] for line in err.splitlines()] == ["info", "warning", "error"]
    assert "tok-5ecret-77" not in err
