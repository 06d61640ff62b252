"""Where each contender's wall time goes, read from its own log after the run (best effort).

Milestones are seconds from the process start. mapillaryd's JSON log carries ISO timestamps per
event (``started``, ``scan_found``, ``ingested``, ``batch_cut``, ``sequence_uploaded``);
mapillary_tools logs ``HH:MM:SS.mmm - LEVEL - message`` lines (local time, ``TZ=UTC`` here)
with ``==> Processing``, ``==> Uploading`` and ``==> Upload summary`` headings. Either log may
change shape in another version: a milestone that is not found is simply left out, and so is
every phase that needs it. Timings never depend on these logs.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

#: mapillaryd events → milestone names (first occurrence, except ``ingested``: first and last).
DAEMON_EVENTS = {
    "started": "started",
    "scan_found": "scan_found",
    "batch_cut": "batch_cut",
    "sequence_uploaded": "sequence_uploaded",
}
#: (phase, from milestone, to milestone), in order; "start" is the process start.
DAEMON_PHASES = (
    ("start-up", "start", "started"),
    ("settle window", "scan_found", "first_ingested"),
    ("ingest", "first_ingested", "all_ingested"),
    ("batch quiet + cut", "all_ingested", "batch_cut"),
    ("image uploads", "batch_cut", "all_uploaded"),
    ("manifest + finish", "all_uploaded", "all_done"),
)
MT_HEADINGS = {
    "==> Processing": "processing",
    "==> Uploading": "uploading",
    "==> Upload summary": "upload_summary",
}
MT_PHASES = (
    ("start-up", "start", "first_log"),
    ("process", "processing", "uploading"),
    ("uploads", "uploading", "upload_summary"),
    ("summary + exit", "upload_summary", "exit"),
)
_MT_LINE = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) - [A-Z]+\s+- (.*)$")
DAY_S = 86_400


def daemon_milestones(log: Path, started_wall: float) -> dict[str, float]:
    """Milestones from mapillaryd's JSON log lines (other lines are skipped)."""
    out: dict[str, float] = {}
    for line in _lines(log):
        try:
            event = json.loads(line)
            name, ts = event["event"], event["timestamp"]
            t = datetime.fromisoformat(ts).timestamp() - started_wall
        except (ValueError, KeyError, TypeError):
            continue
        if name == "ingested":
            out.setdefault("first_ingested", t)
            out["all_ingested"] = t
        elif name in DAEMON_EVENTS:
            out.setdefault(DAEMON_EVENTS[name], t)
    return {k: round(v, 3) for k, v in out.items()}


def mapillary_tools_milestones(log: Path, started_wall: float) -> dict[str, float]:
    """Milestones from mapillary_tools' log lines (its progress bars are skipped)."""
    start = datetime.fromtimestamp(started_wall, UTC)
    start_s = start.hour * 3600 + start.minute * 60 + start.second + start.microsecond / 1e6
    out: dict[str, float] = {}
    for raw in _lines(log):
        for line in raw.split("\r"):
            m = _MT_LINE.match(line.strip())
            if m is None:
                continue
            h, mi, s, ms, message = m.groups()
            tod = int(h) * 3600 + int(mi) * 60 + int(s) + int(ms) / 1000
            t = (tod - start_s) % DAY_S
            out.setdefault("first_log", t)
            for heading, name in MT_HEADINGS.items():
                if message.startswith(heading):
                    out.setdefault(name, t)
    return {k: round(v, 3) for k, v in out.items()}


def phases(
    milestones: dict[str, float], spec: tuple[tuple[str, str, str], ...]
) -> dict[str, float]:
    """Durations of the phases in ``spec`` whose two milestones are both known."""
    known = {"start": 0.0, **milestones}
    return {
        name: round(known[b] - known[a], 3)
        for name, a, b in spec
        if a in known and b in known and known[b] >= known[a]
    }


def _lines(log: Path) -> list[str]:
    try:
        return log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
