"""Prometheus metrics in the text exposition format (version 0.0.4). Pure: a status report in,
text out.

The numbers come from the same report as ``/api/status`` and ``mapillaryd status --json``, so
a scrape and the page agree. Counters that live in the queue database (bytes uploaded, retries)
survive restarts; ``mapillaryd_upload_sent_bytes_total`` counts what this process sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Keys of the backup summary that may hold the time of the last successful run.
LAST_SUCCESS_KEYS = ("last_success", "last_success_at", "last_ok", "last_run", "last_run_at")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Iterable[tuple[dict[str, str], float]],
    ) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        sample_name = f"{name}_total" if kind == "counter" else name
        for labels, value in samples:
            self.lines.append(f"{sample_name}{_labels(labels)} {_number(value)}")


def render_metrics(
    rep: dict[str, Any],
    reasons: Sequence[tuple[str, str, int]],
    *,
    sent_bytes: int,
    now: float,
) -> str:
    """The exposition of ``rep`` (a :func:`daemon.status.report`), ``reasons`` ((state, reason,
    count) of items not done, from :func:`daemon.control.reason_counts`), the bytes this process
    sent, and the backup's age at ``now`` (epoch seconds)."""
    w = _Writer()
    w.family(
        "mapillaryd_queue_items",
        "gauge",
        "Files in the queue by state.",
        (({"state": s}, n) for s, n in rep["items"].items()),
    )
    w.family(
        "mapillaryd_sequences",
        "gauge",
        "Sequences by state.",
        (({"state": s}, n) for s, n in sorted(rep["sequences"].items())),
    )
    w.family(
        "mapillaryd_items_not_uploaded",
        "gauge",
        "Files not uploaded, by state and reason (failures, rejections, waits).",
        (({"state": s, "reason": r}, n) for s, r, n in reasons),
    )
    w.family(
        "mapillaryd_uploaded_bytes",
        "counter",
        "Bytes of media files uploaded (their sizes on disk), from the queue.",
        [({}, rep["uploaded_bytes"])],
    )
    w.family(
        "mapillaryd_upload_sent_bytes",
        "counter",
        "Bytes sent by the uploads of this daemon process.",
        [({}, sent_bytes)],
    )
    w.family(
        "mapillaryd_upload_retries",
        "counter",
        "Failed upload attempts that were retried or are waiting to be (images and sequences).",
        [({}, rep["retries"])],
    )
    w.family(
        "mapillaryd_uploads_in_flight",
        "gauge",
        "Files being uploaded now.",
        [({}, len(rep["uploading"]))],
    )
    w.family(
        "mapillaryd_uploads_paused",
        "gauge",
        "1 while uploads are paused by a person.",
        [({}, 1 if rep["paused"] else 0)],
    )
    hold = rep["hold"]
    w.family(
        "mapillaryd_uploads_held",
        "gauge",
        "1 while uploads are held (token missing or rejected), by reason.",
        [({"reason": hold["reason"]}, 1)] if hold else [({"reason": "none"}, 0)],
    )
    waiting = rep["waiting"]["by_reason"]
    w.family(
        "mapillaryd_uploads_waiting",
        "gauge",
        "Files waiting for their next upload attempt, by the reason of the last failure.",
        (({"reason": r}, n) for r, n in sorted(waiting.items())),
    )
    disks = [d for d in rep.get("disk") or [] if "free_bytes" in d]
    w.family(
        "mapillaryd_disk_free_bytes",
        "gauge",
        "Free bytes on the disks of the state directory and the spool.",
        (({"role": d["role"]}, d["free_bytes"]) for d in disks),
    )
    backup = rep.get("backup") or {}
    w.family(
        "mapillaryd_backup_configured",
        "gauge",
        "1 when an archive backup is configured.",
        [({}, 1 if backup.get("configured") else 0)],
    )
    last = last_backup_success(backup)
    if last is not None:
        w.family(
            "mapillaryd_backup_last_success_timestamp_seconds",
            "gauge",
            "When the last archive backup run succeeded (Unix time).",
            [({}, last)],
        )
        w.family(
            "mapillaryd_backup_age_seconds",
            "gauge",
            "Seconds since the last successful archive backup run.",
            [({}, max(0.0, round(now - last, 3)))],
        )
    return "\n".join(w.lines) + "\n"


def last_backup_success(backup: dict[str, Any]) -> float | None:
    """The epoch time of the last successful backup in a backup summary, if it says one.

    The summary is the archive package's; its time may be epoch seconds, an ISO 8601 string, or
    a dict holding one of those under ``finished_at``/``at``/``time``.
    """
    for key in LAST_SUCCESS_KEYS:
        value = backup.get(key)
        if isinstance(value, dict):
            if value.get("result", "ok") not in ("ok", "success", "succeeded", True):
                continue
            value = value.get("finished_at") or value.get("at") or value.get("time")
        t = _epoch(value)
        if t is not None:
            return t
    return None


def _epoch(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed.timestamp() if parsed.tzinfo is not None else None
    return None
