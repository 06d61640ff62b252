"""Composition for one run: from the configuration to a :class:`~daemon.archive.job.Job`.

Used by the daemon's scheduler and the one-shot commands alike, so both take the same lock,
write the same index and lay files out the same way.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from daemon.archive.client import ArchiveClient, Throttle
from daemon.archive.download import DiskGuard, Downloader
from daemon.archive.exif_restore import ZoneLookup, timezonefinder_lookup
from daemon.archive.index import ArchiveIndex, index_path
from daemon.archive.job import Job, Progress, RunResult, archive_lock
from daemon.clock import SYSTEM_CLOCK, Clock
from daemon.config import BackupConfig, Config
from daemon.credentials import TokenSource
from daemon.logsetup import REDACTOR


class NoToken(Exception):
    """No token is configured: nothing can be listed."""


@dataclass(frozen=True)
class Options:
    """What a run is asked to do, from ``[backup]`` and command-line flags."""

    root: Path
    username: str | None = None
    quality: str = "original"
    fmt: str = "jpeg"
    webp_quality: int = 90
    tar: bool = False
    workers: int = 4
    rate: float = 50.0
    page_size: int = 2000
    retries: int = 5
    timeout: float = 60.0
    min_free_mb: float = 500.0

    @classmethod
    def from_config(cls, b: BackupConfig) -> Options:
        return cls(
            root=b.dir,
            username=b.username,
            quality=b.quality,
            fmt=b.format,
            webp_quality=b.webp_quality,
            tar=b.tar,
            workers=b.workers,
            rate=b.max_requests_per_second,
            page_size=b.page_size,
            retries=b.retries,
            timeout=b.timeout_seconds,
            min_free_mb=b.min_free_mb,
        )


_ZONES: list[ZoneLookup] = []


def default_zone_lookup() -> ZoneLookup:
    if not _ZONES:
        _ZONES.append(timezonefinder_lookup())
    return _ZONES[0]


@contextmanager
def open_job(
    cfg: Config,
    opts: Options,
    *,
    clock: Clock = SYSTEM_CLOCK,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
) -> Iterator[Job]:
    """A :class:`Job` holding the archive's lock and index, closed on exit.

    Raise :class:`~daemon.archive.job.RunBusy` if another run holds the lock, NoToken without a
    token."""
    token = TokenSource(cfg.mapillary).current()
    if not token:
        raise NoToken(TokenSource(cfg.mapillary).problem or "no token")
    REDACTOR.add(token)
    stop = stop or threading.Event()
    ipath = index_path(cfg.state.dir, opts.root)
    with archive_lock(ipath):
        index = ArchiveIndex(ipath)
        client = ArchiveClient(
            cfg.mapillary.graph_endpoint,
            token,
            clock=clock,
            throttle=Throttle(opts.rate, clock),
            retries=opts.retries,
            timeout=opts.timeout,
            should_stop=stop.is_set,
            rng=random.Random(),
        )
        guard = DiskGuard(opts.root, int(opts.min_free_mb * (1 << 20)))
        zones = default_zone_lookup()

        def downloader_for(user: str) -> Downloader:
            return Downloader(
                client,
                opts.root,
                user,
                zones,
                guard,
                quality=opts.quality,
                fmt=opts.fmt,
                webp_quality=opts.webp_quality,
                attempts=max(1, opts.retries),
                clock=clock,
            )

        try:
            yield Job(
                client,
                index,
                opts.root,
                clock,
                downloader_for,
                workers=opts.workers,
                page_size=opts.page_size,
                tar=opts.tar,
                stop=stop,
                progress=progress,
            )
        finally:
            client.close()
            index.close()


def run_backup(
    cfg: Config,
    *,
    clock: Clock = SYSTEM_CLOCK,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
    on_result: Callable[[RunResult], None] | None = None,
) -> RunResult:
    """One scheduled-style backup per ``[backup]``. Raise ValueError without a [backup] table,
    RunBusy / NoToken as :func:`open_job`."""
    if cfg.backup is None:
        raise ValueError("no [backup] table in the configuration")
    opts = Options.from_config(cfg.backup)
    with open_job(cfg, opts, clock=clock, stop=stop, progress=progress) as job:
        result = job.run(opts.username)
    if on_result is not None:
        on_result(result)
    return result
