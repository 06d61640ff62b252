"""The user-archive backup: the user's own Mapillary imagery, kept on local disk.

Modules, pure ones marked ★: ``meta`` ★ (API fields → typed values), ``layout`` ★ (where files
go), ``exif_restore`` (EXIF/XMP from the API metadata), ``sidecar`` ★ (GeoJSON), ``files``
(atomic writes), ``index`` (SQLite: known/archived ids, listing cursor, runs), ``client``
(Graph API + CDN, throttle, retries), ``download`` (one image), ``tarball``, ``job`` (one run),
``runner`` (config → job), ``scheduler`` (cron, coalesce, grace, clock sync), ``summary``
(status), ``commands`` (the CLI: its parser and dispatch, light), ``actions`` (what the CLI's
commands do).

:func:`backup_summary` is what the status page shows; :func:`start_backup_scheduler` is what
the daemon calls when ``[backup]`` is configured. Both import the rest of the package (and
apscheduler) only when ``[backup]`` is configured, so importing this package is cheap.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from daemon.clock import SYSTEM_CLOCK, Clock
from daemon.config import Config, resolve_time_zone

if TYPE_CHECKING:
    from daemon.archive.scheduler import BackupScheduler

__all__ = ["backup_summary", "start_backup_scheduler"]

log = structlog.get_logger(__name__)


def backup_summary(cfg: Config, clock: Clock = SYSTEM_CLOCK) -> dict[str, Any]:
    """:func:`daemon.archive.summary.backup_summary`: ``{"configured": False}`` without
    ``[backup]``, else the archive's last and next run, counts and failure.

    The summary module (the index, the scheduler, apscheduler) is imported on the first call
    with ``[backup]``, not with this package: the daemon's start-up does not pay for it.
    """
    if cfg.backup is None:
        return {"configured": False}
    from daemon.archive import summary

    return summary.backup_summary(cfg, clock)


def start_backup_scheduler(
    cfg: Config, stop: threading.Event, clock: Clock = SYSTEM_CLOCK
) -> BackupScheduler | None:
    """Start the scheduled backup per ``[backup]`` (None when not configured). Call
    ``shutdown()`` on the result after setting ``stop`` (a run in progress stops then)."""
    if cfg.backup is None:
        return None
    from daemon.archive.index import ArchiveIndex, index_path
    from daemon.archive.job import RunBusy
    from daemon.archive.runner import NoToken, run_backup
    from daemon.archive.scheduler import LAST_FIRE_KEY, BackupScheduler, cron_trigger

    b = cfg.backup
    ipath = index_path(cfg.state.dir, b.dir)

    def load_last() -> datetime | None:
        index = ArchiveIndex(ipath)
        try:
            value = index.get_meta(LAST_FIRE_KEY)
        finally:
            index.close()
        return datetime.fromisoformat(value) if value else None

    def save_last(when: datetime) -> None:
        index = ArchiveIndex(ipath)
        try:
            index.set_meta(LAST_FIRE_KEY, when.isoformat())
        finally:
            index.close()

    def job() -> tuple[str, str | None]:
        try:
            result = run_backup(cfg, clock=clock, stop=stop)
        except (RunBusy, NoToken) as exc:
            log.warning("backup_not_run", reason=str(exc))
            return "failed", str(exc)
        return result.result, result.reason

    scheduler = BackupScheduler(
        cron_trigger(b.schedule, resolve_time_zone(b.time_zone)),
        clock=clock,
        job=job,
        load_last=load_last,
        save_last=save_last,
        grace=timedelta(hours=b.misfire_grace_hours),
        clock_synced=(lambda: True) if not b.require_clock_sync else _synced,
        retry_after=b.disk_retry_minutes * 60,
    )
    scheduler.start()
    log.info("backup_scheduled", schedule=b.schedule, time_zone=b.time_zone, dir=str(b.dir))
    return scheduler


def _synced() -> bool:
    from daemon.archive.scheduler import system_clock_synced

    return system_clock_synced()
