"""The backup's state for ``mapillaryd backup status`` and the status page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from daemon.archive.index import ArchiveIndex, index_path
from daemon.archive.scheduler import LAST_FIRE_KEY, cron_trigger, next_fire, plan
from daemon.clock import SYSTEM_CLOCK, Clock
from daemon.config import Config, resolve_time_zone


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else None


def backup_summary(cfg: Config, clock: Clock = SYSTEM_CLOCK) -> dict[str, Any]:
    """``{"configured": False}`` without ``[backup]``; else the archive folder, schedule, the
    last run (start, end, result, reason, counts), the next scheduled run, the index counts,
    and ``failure``: the last run's reason when it did not end ``ok``. Reads only (the index
    is created if missing)."""
    b = cfg.backup
    if b is None:
        return {"configured": False}
    out: dict[str, Any] = {
        "configured": True,
        "dir": str(b.dir),
        "username": b.username,
        "schedule": b.schedule,
        "time_zone": b.time_zone,
    }
    zone = resolve_time_zone(b.time_zone)
    trigger = cron_trigger(b.schedule, zone)
    ipath = index_path(cfg.state.dir, b.dir)
    if not ipath.exists():
        nxt = next_fire(trigger, clock.now())
        out.update(
            last_run=None, next_run=nxt.isoformat() if nxt else None, counts=None, failure=None
        )
        return out
    index = ArchiveIndex(ipath)
    try:
        runs = index.runs(limit=1)
        last_fire = index.get_meta(LAST_FIRE_KEY)
        counts = index.counts()
    finally:
        index.close()
    last = runs[0] if runs else None
    now = clock.now()
    p = plan(
        trigger,
        datetime.fromisoformat(last_fire) if last_fire else None,
        now,
        timedelta(hours=b.misfire_grace_hours),
    )
    nxt = now if p.run else p.next_run
    out["last_run"] = (
        {
            **last.as_json(),
            "started_at": _iso(last.started_at),
            "finished_at": _iso(last.finished_at),
        }
        if last
        else None
    )
    out["next_run"] = nxt.astimezone(zone).isoformat() if nxt else None
    out["counts"] = counts
    out["failure"] = last.reason if last and last.result not in ("ok", "running") else None
    return out
