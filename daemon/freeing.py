"""Freeing the card: removing (or moving aside) files whose upload is confirmed.

Opt-in per watch folder (``free_card = "delete" | "move"``, default ``"off"``). A file on the
card is touched only when all of these hold, checked right before acting:

1. its content's item is ``done``: the cluster id is committed (``synchronous=FULL``), so the
   bytes are on Mapillary whatever happens next;
2. the volume now at the watch root is the one the file was found on (a marker id or the
   filesystem identity, :mod:`daemon.volumes`), so a different card mounted at the same place
   is never touched;
3. the file still has the size and mtime it was recorded with, and its bytes still hash to the
   item's SHA-256.

Otherwise the file stays, and a file that changed is recorded as ``kept`` with the reason. Each
freeing is written down as ``pending`` before the card is touched and ``freed`` after, so a
power cut in between is finished (or found already done) on the next pass, and
``status`` can list what left the card.

``"move"`` renames the file into ``uploaded/`` at the watch root, keeping its relative path
(the same filesystem, so nothing is copied); that folder is then not scanned.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import structlog

from daemon.clock import Clock
from daemon.ingest import SourceChanged, hash_in_place
from daemon.store.queue import FreeCandidate, Queue
from daemon.volumes import identities
from daemon.watch import Stat, stat_file

log = structlog.get_logger(__name__)

#: Where ``free_card = "move"`` puts freed files, relative to the watch root.
UPLOADED_DIR = "uploaded"


class Verdict(StrEnum):
    FREE = "free"  # every check passed
    WAIT = "wait"  # not now (another card is in the slot, or the card is busy): ask again later
    KEEP = "keep"  # never: the file is not the content that was uploaded
    ALREADY = "already"  # an interrupted freeing already removed it
    GONE = "gone"  # someone else removed it


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    detail: str


def decide(
    c: FreeCandidate,
    volumes_now: Collection[str],
    stat_now: Stat | None,
    sha_now: str | None,
) -> Decision:
    """Whether the card file of candidate ``c`` may go (pure).

    ``volumes_now`` are the identities of the volume at the root now, ``stat_now`` the file's
    (size, mtime_ns) now (None: not there), ``sha_now`` its SHA-256 if it was hashed (None:
    not hashed, decide on the rest).
    """
    if c.volume not in volumes_now:
        return Decision(Verdict.WAIT, "another volume is mounted there (or none)")
    if stat_now is None:
        if c.pending_id is not None:
            return Decision(Verdict.ALREADY, "removed before an interruption; recorded now")
        return Decision(Verdict.GONE, "no longer on the card (removed by someone else)")
    if stat_now != (c.size, c.mtime_ns):
        return Decision(Verdict.KEEP, "changed since it was uploaded (size or time differ)")
    if sha_now is not None and sha_now != c.sha256:
        return Decision(Verdict.KEEP, "its bytes differ from what was uploaded")
    return Decision(Verdict.FREE, "")


def uploaded_path(root: Path, path: str) -> Path:
    """Where ``free_card = "move"`` puts ``path`` (a file under ``root``)."""
    return root / UPLOADED_DIR / Path(path).relative_to(root)


def is_moved_aside(root: Path, path: str) -> bool:
    """True for paths inside the ``uploaded/`` folder of ``root`` (never scanned in move mode)."""
    prefix = str(root / UPLOADED_DIR).rstrip(os.sep) + os.sep
    return path.startswith(prefix)


class CardFreer:
    """Frees the confirmed files of the watch folders that ask for it. One per thread."""

    def __init__(self, queue: Queue, clock: Clock) -> None:
        self.queue, self.clock = queue, clock

    def now(self) -> float:
        return self.clock.now().timestamp()

    def free_under(
        self,
        root: Path,
        mode: str,
        volumes_now: Collection[str],
        stop: threading.Event | None = None,
        limit: int = 200,
    ) -> int:
        """One pass over ``root``: free what may go (``mode`` "delete" or "move"); return how
        many files left the card. ``volumes_now`` is what :mod:`daemon.volumes` says is at
        ``root`` (files recorded on another volume are skipped); it is looked at again after
        every look at a file, and before each file is touched."""
        freed = 0
        for c in self.queue.freeable(str(root), limit):
            if stop is not None and stop.is_set():
                break
            if c.volume not in volumes_now:
                continue
            if self._one(root, mode, c):
                freed += 1
        return freed

    def _one(self, root: Path, mode: str, c: FreeCandidate) -> bool:
        # Each look at the file is followed by a look at the volume: a file "gone" or
        # "changed" only because the card was pulled (or swapped) meanwhile then reads as
        # "another volume", never as a verdict about the file.
        sha = None
        st = stat_file(c.path)
        if decide(c, identities(root), st, None).verdict is Verdict.FREE:
            try:
                sha = hash_in_place(c.path).sha256
            except SourceChanged as exc:  # pulled or written to while hashing: next pass
                log.info("free_deferred", path=c.path, why=str(exc))
                return False
        st = stat_file(c.path)
        d = decide(c, identities(root), st, sha)
        if d.verdict is Verdict.WAIT:
            return False
        if d.verdict in (Verdict.KEEP, Verdict.GONE):
            row = c.pending_id or self.queue.freeing_started(c, mode, None, self.now())
            self.queue.freeing_finished(row, "kept", d.detail, self.now())
            log.info("card_file_kept", path=c.path, why=d.detail)
            return False
        if d.verdict is Verdict.ALREADY:
            assert c.pending_id is not None
            self.queue.freeing_finished(c.pending_id, "freed", d.detail, self.now())
            return True
        dest = uploaded_path(root, c.path) if mode == "move" else None
        row = c.pending_id or self.queue.freeing_started(
            c, mode, str(dest) if dest else None, self.now()
        )
        try:
            where = _move(c.path, dest) if dest is not None else _delete(c.path)
        except OSError as exc:  # read-only card, pulled now: keep it, try again next pass
            log.warning("free_failed", path=c.path, error=exc.strerror)
            return False
        self.queue.freeing_finished(row, "freed", where, self.now())
        log.info("card_file_freed", path=c.path, action=mode, to=where or None)
        return True


def _delete(path: str) -> str:
    os.unlink(path)
    _fsync_dir(os.path.dirname(path))
    return ""


def _move(path: str, dest: Path) -> str:
    """Rename ``path`` to ``dest`` (or ``dest`` with a counter when taken); return where."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    target, n = dest, 1
    while target.exists():
        target = dest.with_name(f"{dest.stem}.{n}{dest.suffix}")
        n += 1
    os.rename(path, target)
    _fsync_dir(str(target.parent))
    _fsync_dir(os.path.dirname(path))
    return str(target)


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):  # some filesystems (vfat via some drivers) refuse
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
