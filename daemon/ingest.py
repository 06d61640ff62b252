"""Ingest: a settled file becomes a queue item (or an occurrence of one it already has).

Order of steps, chosen so that a kill at any instant loses nothing and duplicates nothing:

1. Hash the file — in ``copy`` mode while copying it into the spool under a temporary name,
   fsync'd, then verified by hashing the copy again and renamed to its content address
   ``spool/ab/abcdef….ext``. A file that changed or vanished meanwhile (still being written,
   card pulled) is dropped for now; the next scan finds it again.
2. Read its metadata (only for content not seen before).
3. One transaction records the item, or just the new path for known content.

A crash between 1 and 3 leaves at most a spool file, which the next ingest of the same content
reuses.

Each occurrence records the identity of the volume it was found on (:mod:`daemon.volumes`),
taken before and checked again after hashing: a card swapped meanwhile defers the file. A
disk too full for the copy (or for the queue) raises :class:`daemon.diskspace.DiskFull` before
anything is written, or as soon as the kernel says ``ENOSPC``; the caller holds and retries.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, tzinfo
from pathlib import Path
from typing import BinaryIO

import structlog

from daemon import volumes
from daemon.clock import Clock
from daemon.diskspace import DiskFull, is_full_error, room_for
from daemon.errors import CorruptMediaError, ItemError
from daemon.media.exif import read_exif_facts
from daemon.media.jpeg import check_jpeg
from daemon.store.queue import Item, ItemState, Metadata, NewFile, Queue, Verdict
from daemon.watch import media_kind, stat_file

log = structlog.get_logger(__name__)

CHUNK = 1 << 20


class SourceChanged(Exception):
    """The file changed or disappeared while it was being read; try again later."""


@dataclass(frozen=True)
class Hashed:
    sha256: str
    size: int
    mtime_ns: int
    data_path: str


def hash_in_place(path: str) -> Hashed:
    """SHA-256 of ``path``; raise :class:`SourceChanged` if it changed while being read."""
    before = stat_file(path)
    if before is None:
        raise SourceChanged(f"{path}: gone")
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise SourceChanged(f"{path}: {exc.strerror}") from exc
    if stat_file(path) != before:
        raise SourceChanged(f"{path}: changed while being read")
    return Hashed(digest.hexdigest(), before[0], before[1], path)


def copy_to_spool(path: str, spool: Path) -> Hashed:
    """Copy ``path`` into the content-addressed spool, verified; return where the copy lives."""
    before = stat_file(path)
    if before is None:
        raise SourceChanged(f"{path}: gone")
    tmp_dir = spool / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f"{uuid.uuid4().hex}.part"
    digest = hashlib.sha256()
    try:
        with _open_source(path) as src, open(tmp, "wb") as dst:
            while chunk := _read_source(src, path):
                digest.update(chunk)
                _write_spool(dst, chunk, spool)
            _write_spool(dst, b"", spool)
        if stat_file(path) != before:
            raise SourceChanged(f"{path}: changed while being copied")
        sha = digest.hexdigest()
        if _sha256_of(tmp) != sha:
            raise SourceChanged(f"{path}: the spool copy does not match the card (read error?)")
        dest = spool_path(spool, sha, path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
        return Hashed(sha, before[0], before[1], str(dest))
    finally:
        tmp.unlink(missing_ok=True)


def _write_spool(dst: BinaryIO, chunk: bytes, spool: Path) -> None:
    """Write ``chunk`` to the spool copy (an empty chunk: flush and fsync it). A full disk
    becomes :class:`DiskFull`; any other OSError is ours too and propagates as is."""
    try:
        if chunk:
            dst.write(chunk)
        else:
            dst.flush()
            os.fsync(dst.fileno())
    except OSError as exc:
        if is_full_error(exc):
            raise DiskFull(str(spool), f"no space left while copying ({exc.strerror})") from exc
        raise


def _open_source(path: str) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise SourceChanged(f"{path}: {exc.strerror}") from exc


def _read_source(src: BinaryIO, path: str) -> bytes:
    try:
        return src.read(CHUNK)
    except OSError as exc:  # EIO when a card is pulled mid-read
        raise SourceChanged(f"{path}: {exc.strerror}") from exc


def spool_path(spool: Path, sha256: str, original: str) -> Path:
    """Where content ``sha256`` lives in the spool (keeping the original's extension)."""
    ext = os.path.splitext(original)[1].lower()
    return spool / sha256[:2] / f"{sha256}{ext}"


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: A video's own GPS reasons a side track can make irrelevant.
UNPLACED_VIDEO = frozenset({"no_video_gps", "gps_noise", "null_island"})


def read_outcome(kind: str, data_path: str, name: str, tz: tzinfo) -> Metadata | Verdict:
    """What ingest can say about one file: its EXIF facts, or why it cannot go on at all.

    A missing time or position is not decided here: a GPS track may supply them when the
    batch is processed (:mod:`daemon.process`).
    """
    if kind == "video":
        return _video_outcome(data_path, name)
    try:
        with open(data_path, "rb") as fh:
            data = fh.read()
        check_jpeg(data, name)
        facts = read_exif_facts(data, name, default_tz=tz)
    except CorruptMediaError as exc:
        return Verdict(ItemState.QUARANTINED, exc.reason, str(exc))
    except ItemError as exc:
        return Verdict(ItemState.REJECTED, exc.reason, str(exc))
    return Metadata(
        capture_time=facts.capture_time.astimezone(UTC).isoformat() if facts.capture_time else None,
        lat=facts.lat,
        lon=facts.lon,
        alt=facts.alt,
        heading=facts.heading,
        make=facts.make,
        model=facts.model,
        width=facts.width,
        height=facts.height,
        orientation=facts.orientation,
    )


def _video_outcome(data_path: str, name: str) -> Metadata | Verdict:
    """A video's GPS track summarised (first point, start time, device), or why it cannot go
    on. A recording cut short by a power loss (no index) is quarantined, never retried. A video
    without usable GPS of its own goes on unplaced, like a photo without EXIF GPS: a side
    track beside it may place it when its batch is processed (:mod:`daemon.video_track`)."""
    # Imported with the first video, not at the top: the video stack slows the daemon's start.
    from daemon.media.video import read_video_track

    try:
        vt = read_video_track(data_path)
    except CorruptMediaError as exc:
        return Verdict(ItemState.QUARANTINED, exc.reason, str(exc))
    except ItemError as exc:
        if exc.reason in UNPLACED_VIDEO:
            return Metadata(capture_time=None, lat=None, lon=None)
        state = ItemState.QUARANTINED if exc.reason == "truncated_mp4" else ItemState.REJECTED
        return Verdict(state, exc.reason, str(exc))
    first = vt.points[0]
    return Metadata(
        capture_time=vt.start_time.astimezone(UTC).isoformat(),
        lat=first.lat,
        lon=first.lon,
        alt=first.alt,
        heading=None,
        make=vt.make or None,
        model=vt.model or None,
    )


class Ingester:
    """Turns settled paths into queue rows. One per ingest thread (it owns a queue connection)."""

    def __init__(
        self,
        queue: Queue,
        spool: Path,
        clock: Clock,
        outcome: Callable[[str, str, str, tzinfo], Metadata | Verdict] = read_outcome,
        *,
        state_dir: Path | None = None,
        reserve: int = 0,
    ) -> None:
        self.queue, self.spool, self.clock, self.outcome = queue, spool, clock, outcome
        #: Bytes that must stay free on the spool's and the state dir's disks.
        self.state_dir, self.reserve = state_dir, reserve

    def ingest(
        self, path: str, watch_root: Path, copy: bool, tz: tzinfo, *, mark_volume: bool = False
    ) -> Item | None:
        """Record ``path`` found under ``watch_root``; return its item, or None if skipped now.

        ``mark_volume``: write a volume marker on the card first if it has none (only for
        watches that free the card). Raise :class:`DiskFull` when the spool or the state disk
        has no room (nothing recorded: retry once there is room), OSError for other failures
        on our side; problems with the source file are logged and the file is left for the
        next scan.
        """
        kind = media_kind(path)
        st = stat_file(path)
        if kind is None or st is None or self.queue.is_known(path, *st):
            return None
        if self.state_dir is not None:
            room_for(self.state_dir, 0, self.reserve)
        if mark_volume:
            volumes.ensure_marker(watch_root)
        volume = volumes.identify(watch_root)
        # Videos are read where they are: a dashcam card holds more footage than a Pi's disk,
        # and the upload streams from the source anyway. A card pulled mid-upload makes the
        # video wait for it (source_missing), never fail.
        copy = copy and kind != "video"
        if copy:
            room_for(self.spool, st[0], self.reserve)
        try:
            hashed = copy_to_spool(path, self.spool) if copy else hash_in_place(path)
            if volumes.identify(watch_root) != volume:
                raise SourceChanged(f"{path}: the card changed while it was being read")
        except SourceChanged as exc:
            log.info("ingest_deferred", path=path, why=str(exc))
            return None
        name = os.path.basename(path)
        known = self.queue.item_by_sha(hashed.sha256)
        outcome: Metadata | Verdict
        if known is None:
            outcome = self.outcome(kind, hashed.data_path, name, tz)
        else:
            outcome = Verdict(ItemState.REJECTED, "duplicate", "")  # unused: content is known
        f = NewFile(
            watch=str(watch_root),
            source_path=path,
            size=hashed.size,
            mtime_ns=hashed.mtime_ns,
            sha256=hashed.sha256,
            kind=kind,
            data_path=hashed.data_path,
            volume=volume,
        )
        item, new = self.queue.record_file(f, outcome, self.clock.now().timestamp())
        if new:
            log.info("ingested", path=path, item=item.id, state=item.state, reason=item.reason)
        else:
            log.info("already_known", path=path, item=item.id, first_seen=item.source_path)
            if copy and hashed.data_path != item.data_path:
                Path(hashed.data_path).unlink(missing_ok=True)
        return item
