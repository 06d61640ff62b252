"""What the queue says, as data (``status --json``, the status page's ``/api/status``) and as a
table for people.

Read straight from the queue database, so it works whether or not the daemon is running. The
daemon's status page adds what only the running process knows (uploads in flight with their
bytes sent, a server-requested pause) through ``live``.
"""

from __future__ import annotations

import importlib
import json
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from daemon import control
from daemon.diskspace import INGEST_HOLD_KEY
from daemon.progress import Transfer
from daemon.store.queue import ItemState, Queue
from daemon.upload import HOLD_KEY, OFFLINE_KEY, WINDOW_KEY

if TYPE_CHECKING:
    from daemon.config import Config

STATE_ORDER = [s.value for s in ItemState]
#: Where the status page's address is recorded while the daemon runs (``mapillaryd status``).
STATUS_URL_KEY = "status_url"


def report(
    queue: Queue,
    *,
    limit: int | None = None,
    cfg: Config | None = None,
    now: float | None = None,
    live: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Counts per state, the hold and pause if any, sequences, every item not uploaded with its
    reason, what waits for a retry (offline), upload totals, disk room and the backup.

    ``limit`` caps the item list (``None``: all of them). ``cfg`` adds the disk and backup
    sections; ``now`` (epoch seconds, default the system clock) dates the waiting items;
    ``live`` is the running daemon's own view: ``transfers`` (a list of
    :class:`daemon.progress.Transfer`), ``upstream_pause_seconds`` and ``sent_bytes``.
    """
    now = time.time() if now is None else now
    counts = queue.counts()
    hold_raw = queue.get_meta(HOLD_KEY)
    items = queue.items_not_done(limit)
    return {
        "items": {state: counts.get(state, 0) for state in STATE_ORDER},
        "total": sum(counts.values()),
        "files_seen": queue.occurrence_count(),
        "sequences": queue.sequence_counts(),
        "clusters": [
            {"sequence": s.id, "cluster_id": s.cluster_id, "images": s.image_count}
            for s in queue.sequences()
            if s.cluster_id
        ],
        "hold": json.loads(hold_raw) if hold_raw else None,
        "processing_notes": queue.batch_notes(),
        "not_uploaded": [
            {
                "path": i.source_path,
                "state": i.state,
                "reason": i.reason or _implicit_reason(i.state),
                "detail": i.detail or "",
                "sha256": i.sha256,
                "attempts": i.attempts,
            }
            for i in items
        ],
        "paused": control.pause_state(queue),
        "uploading": _uploading(queue, live),
        "waiting": control.waiting(queue, now),
        "upstream_pause_seconds": round(float((live or {}).get("upstream_pause_seconds", 0)), 1),
        "uploaded_bytes": control.uploaded_bytes(queue),
        "retries": control.retries(queue),
        "disk": _disk(cfg) if cfg is not None else None,
        "backup": backup_section(cfg) if cfg is not None else {"configured": False},
        "status_page": queue.get_meta(STATUS_URL_KEY),
        "generated_at": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
        "ingest_hold": _json_meta(queue, INGEST_HOLD_KEY),
        "card_files": queue.freed_counts(),
        "offline": _json_meta(queue, OFFLINE_KEY),
        "window": _json_meta(queue, WINDOW_KEY),
    }


def _json_meta(queue: Queue, key: str) -> Any:
    raw = queue.get_meta(key)
    return json.loads(raw) if raw else None


def _uploading(queue: Queue, live: dict[str, Any] | None) -> list[dict[str, Any]]:
    """What is being uploaded: the daemon's transfers with bytes, else the leased items."""
    if live is not None:
        transfers: list[Transfer] = live.get("transfers", [])
        return [
            {"id": t.item_id, "path": t.path, "kind": t.kind, "sent": t.sent, "total": t.total}
            for t in transfers
        ]
    return [
        {"id": r.id, "path": r.path, "kind": r.kind, "sent": None, "total": None}
        for r in control.list_items(queue, [ItemState.UPLOADING])
    ]


def _disk(cfg: Config) -> list[dict[str, Any]]:
    """Room on the disks of the state directory and the spool (one entry per distinct disk)."""
    out: list[dict[str, Any]] = []
    seen: set[tuple[int, int]] = set()
    for role, path in (("state", cfg.state.dir), ("spool", cfg.state.spool_dir)):
        p = path
        while not p.exists() and p != p.parent:
            p = p.parent
        try:
            usage = shutil.disk_usage(p)
        except OSError as exc:
            out.append({"role": role, "path": str(path), "error": exc.strerror or str(exc)})
            continue
        key = (usage.total, p.stat().st_dev)
        if key in seen:
            continue
        seen.add(key)
        out.append(
            {
                "role": role,
                "path": str(path),
                "free_bytes": usage.free,
                "total_bytes": usage.total,
                # below [state] min_free_mb, ingest holds (see daemon/diskspace.py)
                "low": usage.free < cfg.state.min_free_bytes,
            }
        )
    return out


def _backup_summary() -> Callable[[Config], Any] | None:
    """The archive backup's ``backup_summary(cfg)``, when this mapillaryd has one (looked up at
    run time: the status works the same with or without the archive package)."""
    try:
        module = importlib.import_module("daemon.archive")
    except ImportError:
        return None
    fn = getattr(module, "backup_summary", None)
    return fn if callable(fn) else None


def backup_section(cfg: Config) -> dict[str, Any]:
    """The archive backup's summary (last and next run, …), or ``{"configured": False}``.

    A summary that fails is shown as such: the status page must never break on it.
    """
    summary = _backup_summary()
    if summary is None:
        return {"configured": False}
    try:
        result = summary(cfg)
    except Exception as exc:
        return {"configured": True, "error": f"{type(exc).__name__}: {exc}"}
    if not isinstance(result, dict):
        return {"configured": True, "error": f"unexpected summary {type(result).__name__}"}
    return {"configured": result.get("configured", True), **result}


def empty_report(note: str, cfg: Config | None = None) -> dict[str, Any]:
    """The report of a queue that does not exist yet (without creating it)."""
    return {
        "items": dict.fromkeys(STATE_ORDER, 0),
        "total": 0,
        "files_seen": 0,
        "sequences": {},
        "clusters": [],
        "hold": None,
        "processing_notes": [],
        "not_uploaded": [],
        "paused": None,
        "uploading": [],
        "waiting": {"by_reason": {}, "next_attempt_at": None},
        "upstream_pause_seconds": 0.0,
        "uploaded_bytes": 0,
        "retries": 0,
        "disk": None,
        "backup": backup_section(cfg) if cfg is not None else {"configured": False},
        "status_page": None,
        "note": note,
        "ingest_hold": None,
        "card_files": {},
        "offline": None,
        "window": None,
    }


def _implicit_reason(state: str) -> str:
    """Why an item without a recorded reason is not uploaded yet: its state says it."""
    return {
        ItemState.INGESTED: "waiting for its batch to settle",
        ItemState.QUEUED: "waiting for an upload slot",
        ItemState.UPLOADING: "uploading now",
        ItemState.UPLOADED: "waiting for the rest of its sequence",
    }.get(ItemState(state), state)


def needs_attention(rep: dict[str, Any]) -> list[dict[str, Any]]:
    """The items of ``rep`` a person should look at: refused, failed, held, or waiting with a
    reason. Forgotten files and videos sampled into frames are not problems."""
    return [
        r
        for r in rep["not_uploaded"]
        if r["reason"] != control.FORGOTTEN
        and r["state"] != ItemState.SAMPLED
        and (r["state"] not in ("queued", "uploading", "uploaded", "ingested") or r["detail"])
    ]


def human_bytes(n: float) -> str:
    """``1536`` → ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def render(rep: dict[str, Any], *, max_rows: int = 30) -> str:
    """A plain-text table of ``rep`` for a terminal: what the status page shows."""
    lines = []
    if rep["hold"]:
        h = rep["hold"]
        lines.append(f"UPLOADS HELD ({h['reason']}) since {h['since']}: {h['detail']}")
        lines.append("")
    if rep.get("ingest_hold"):
        h = rep["ingest_hold"]
        lines.append(f"INGEST HELD ({h['reason']}) since {h['since']}: {h['detail']}")
        lines.append("  (nothing more is copied off the cards until there is room again)")
        lines.append("")
    if rep.get("offline"):
        o = rep["offline"]
        lines.append(f"OFFLINE since {o['since']}: {o['error']}")
        lines.append("  (uploads wait and resume by themselves when Mapillary answers again)")
        lines.append("")
    if rep.get("window") and not rep["window"]["open"]:
        w = rep["window"]
        lines.append(f"OUTSIDE THE UPLOAD WINDOWS ({w['windows']}); next opens {w['next_change']}")
        lines.append("")
    if rep.get("paused"):
        p = rep["paused"]
        lines.append(f"UPLOADS PAUSED since {p.get('since', '?')} by {p.get('by', '?')}")
        lines.append("  (mapillaryd resume, or the status page, lets them go on)")
        lines.append("")
    lines.append(f"{'state':<12} {'items':>7}")
    for state, n in rep["items"].items():
        if n:
            lines.append(f"{state:<12} {n:>7}")
    lines.append(f"{'total':<12} {rep['total']:>7}   ({rep['files_seen']} files seen)")
    if rep.get("uploaded_bytes"):
        lines.append(
            f"uploaded: {human_bytes(rep['uploaded_bytes'])}, "
            f"{rep.get('retries', 0)} failed attempts retried so far"
        )
    seqs = rep["sequences"]
    if seqs:
        lines.append("")
        lines.append("sequences: " + ", ".join(f"{n} {s}" for s, n in sorted(seqs.items())))
    uploading = rep.get("uploading") or []
    if uploading:
        lines.append("")
        lines.append("uploading now:")
        for u in uploading[:max_rows]:
            if u["total"]:
                pct = 100 * u["sent"] / u["total"]
                done = f"{human_bytes(u['sent'])} of {human_bytes(u['total'])} ({pct:.0f}%)"
            else:
                done = "in progress"
            lines.append(f"  {done:<34} {u['path']}")
    waiting = (rep.get("waiting") or {}).get("by_reason") or {}
    if waiting or rep.get("upstream_pause_seconds"):
        lines.append("")
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(waiting.items()))
        lines.append(f"waiting to retry: {why or 'nothing'}" + _next_attempt(rep))
        if waiting.get("network"):
            lines.append("  (offline: Mapillary could not be reached on the last attempt)")
    clusters = rep.get("clusters") or []
    if clusters:
        lines.append("")
        lines.append(f"recent clusters ({len(clusters)} in all):")
        for c in clusters[-5:]:
            lines.append(f"  {c['cluster_id']:<20} {c['images']:>5} images")
    notes = rep.get("processing_notes") or []
    if notes:
        lines.append("")
        lines.append("processing notes (recent batches):")
        for n in notes[:5]:
            for text in n["notes"]:
                lines.append(f"  batch {n['batch']} ({n['watch']}): {text}")
    problems = needs_attention(rep)
    if problems:
        lines.append("")
        lines.append("needs attention / not uploaded:")
        for r in problems[:max_rows]:
            lines.append(f"  {r['state']:<11} {r['reason']:<24} {r['path']}")
            if r["detail"]:
                lines.append(f"  {'':<11} {r['detail']}")
        if len(problems) > max_rows:
            lines.append(f"  … and {len(problems) - max_rows} more (status --json lists all)")
    lines += _footer(rep)
    return "\n".join(lines)


def _next_attempt(rep: dict[str, Any]) -> str:
    at = (rep.get("waiting") or {}).get("next_attempt_at")
    if at is None:
        return ""
    return f"; next attempt {datetime.fromtimestamp(at, UTC).isoformat(timespec='seconds')}"


def _footer(rep: dict[str, Any]) -> list[str]:
    """Disk room, the backup and the status page's address."""
    lines = [""]
    for d in rep.get("disk") or []:
        if "error" in d:
            lines.append(f"disk ({d['role']}): {d['path']}: {d['error']}")
        else:
            lines.append(
                f"disk ({d['role']}): {human_bytes(d['free_bytes'])} free of "
                f"{human_bytes(d['total_bytes'])} at {d['path']}"
                + (" — LOW: ingest holds below [state] min_free_mb" if d.get("low") else "")
            )
    freed = rep.get("card_files") or {}
    if freed:
        lines.append(
            "card files freed after confirmed upload: "
            + ", ".join(f"{n} {outcome}" for outcome, n in sorted(freed.items()))
        )
    lines.append("backup: " + backup_line(rep.get("backup") or {}))
    if rep.get("status_page"):
        lines.append(f"status page: {rep['status_page']} (while the daemon runs)")
    return lines


def backup_line(backup: dict[str, Any]) -> str:
    """One line about the archive backup: not configured, its error, or its summary."""
    if not backup.get("configured"):
        return "not configured"
    if backup.get("error") and len(backup) <= 2:
        return f"summary unavailable ({backup['error']})"
    shown = {
        k: v for k, v in backup.items() if k != "configured" and not isinstance(v, dict | list)
    }
    return ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in shown.items()) or "configured"
