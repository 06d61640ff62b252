"""Finding files: watchdog events as hints, full scans as truth, and the settle rule.

A file is *ready* only when it has stopped changing: its (size, mtime) stayed the same for the
watch's settle window, or it was closed after writing (inotify ``IN_CLOSE_WRITE``) and has not
changed since. Scans at start-up, on a timer and when a watch root (re)appears find whatever
events missed: files a camera wrote before the card was mounted produce no events at all.

A watch root that is missing (card pulled, not yet mounted) is not "every file deleted": it is
only re-checked on each scan, and nothing already recorded is touched.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

log = structlog.get_logger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe"})
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".mov", ".avi", ".m4v", ".mts", ".m2ts", ".ts", ".mkv", ".360", ".insv", ".lrv"}
)
#: Names that are still being written by someone (browsers, rsync, editors, cameras).
TEMPORARY_SUFFIXES = (".part", ".partial", ".tmp", ".temp", ".crdownload", ".download", ".swp")
#: Folders on a card that never hold the user's media.
IGNORED_DIRS = frozenset({"System Volume Information", "$RECYCLE.BIN", "LOST.DIR", "__MACOSX"})

Stat = tuple[int, int]  # (size, mtime_ns)


#: A GPS logger's files: not uploaded, but their arrival can place images that waited for them.
TRACK_EXTENSIONS = frozenset({".gpx", ".nmea", ".nma"})


def is_track_file(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in TRACK_EXTENSIONS


def media_kind(path: str) -> str | None:
    """``"image"`` or ``"video"`` by extension, else None (not ours to upload)."""
    ext = os.path.splitext(path)[1].lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    return None


def is_ignored_name(name: str) -> bool:
    """Hidden and temporary names: ``.x``, ``~x``, ``x.part`` and friends."""
    return name.startswith((".", "~")) or name.lower().endswith(TEMPORARY_SUFFIXES)


def is_candidate(root: Path, path: str) -> bool:
    """True if ``path`` under ``root`` is a media or track file outside hidden or ignored
    folders."""
    try:
        rel = Path(path).relative_to(root)
    except ValueError:
        return False
    parts = rel.parts
    if not parts or any(is_ignored_name(p) or p in IGNORED_DIRS for p in parts):
        return False
    return media_kind(path) is not None or is_track_file(path)


def stat_file(path: str) -> Stat | None:
    """(size, mtime_ns) of a regular file, or None if it is gone or not a regular file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not os.path.isfile(path):
        return None
    return st.st_size, st.st_mtime_ns


def scan(root: Path, recursive: bool = True) -> Iterator[tuple[str, Stat]]:
    """Every candidate media or track file under ``root`` with its stat; unreadable folders
    are skipped."""
    stack = [str(root)]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            log.warning("scan_folder_unreadable", folder=folder, error=exc.strerror)
            continue
        for entry in sorted(entries, key=lambda e: e.name):
            if is_ignored_name(entry.name) or entry.name in IGNORED_DIRS:
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    if recursive:
                        stack.append(entry.path)
                elif entry.is_file() and (media_kind(entry.name) or is_track_file(entry.name)):
                    st = entry.stat()
                    yield entry.path, (st.st_size, st.st_mtime_ns)
            except OSError:
                continue


@dataclass
class _Pending:
    stat: Stat
    since: float  # monotonic time the current stat was first seen
    closed: bool  # closed after writing, with this stat


class Settler:
    """Tracks candidate files until they stop changing. Time is passed in (monotonic seconds)."""

    def __init__(self) -> None:
        self._pending: dict[str, tuple[_Pending, float]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def observe(
        self, path: str, stat: Stat | None, now: float, settle: float, closed: bool = False
    ) -> None:
        """Note that ``path`` was seen (or reported closed) with ``stat`` at ``now``."""
        if stat is None:
            self._pending.pop(path, None)
            return
        current = self._pending.get(path)
        if current is None or current[0].stat != stat:
            self._pending[path] = (_Pending(stat, now, closed), settle)
        elif closed:
            current[0].closed = True

    def due(self, now: float, stat: Callable[[str], Stat | None]) -> list[str]:
        """Paths that are ready now, in name order; changed files restart their window."""
        ready = []
        for path, (p, settle) in list(self._pending.items()):
            fresh = stat(path)
            if fresh is None:
                del self._pending[path]
            elif fresh != p.stat:
                self._pending[path] = (_Pending(fresh, now, False), settle)
            elif p.closed or now - p.since >= settle:
                del self._pending[path]
                ready.append(path)
        return sorted(ready)

    def busy_under(self, root: Path) -> bool:
        """True while any file under ``root`` is still settling."""
        prefix = str(root).rstrip(os.sep) + os.sep
        return any(p.startswith(prefix) for p in self._pending)


class _Handler(FileSystemEventHandler):
    def __init__(self, sink: queue.SimpleQueue[tuple[str, bool]]) -> None:
        self.sink = sink

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            if event.event_type in ("created", "moved"):
                # A folder moved or copied in: its files may come with no event of their own.
                target = event.dest_path if event.event_type == "moved" else event.src_path
                self.sink.put((os.fsdecode(target), False))
            return
        kind = event.event_type
        if kind == "moved":
            self.sink.put((os.fsdecode(event.dest_path), False))
        elif kind in ("created", "modified"):
            self.sink.put((os.fsdecode(event.src_path), False))
        elif kind == "closed":
            self.sink.put((os.fsdecode(event.src_path), True))


class Watcher:
    """watchdog observers over the watch roots, feeding ``(path, closed)`` hints into a queue.

    Roots that do not exist yet are retried by :meth:`ensure`; on an exhausted inotify watch
    limit the root falls back to polling, and says so once.
    """

    def __init__(self) -> None:
        self.events: queue.SimpleQueue[tuple[str, bool]] = queue.SimpleQueue()
        self._observer: BaseObserver = Observer()
        self._fallback: BaseObserver | None = None
        self._watched: dict[Path, object] = {}
        self._lock = threading.Lock()
        self._started = False

    def start(self) -> None:
        self._observer.start()
        self._started = True

    def ensure(self, root: Path, recursive: bool) -> bool:
        """Watch ``root`` if it exists and is not watched yet; return True if it is now watched."""
        with self._lock:
            if root in self._watched:
                if root.is_dir():
                    return True
                self._unwatch(root)
                return False
            if not root.is_dir():
                return False
            handler = _Handler(self.events)
            try:
                self._watched[root] = self._observer.schedule(
                    handler, str(root), recursive=recursive
                )
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EMFILE):
                    log.warning("watch_failed", root=str(root), error=str(exc))
                    return False
                log.warning(
                    "inotify_limit_reached",
                    root=str(root),
                    hint="raise fs.inotify.max_user_watches; polling this folder meanwhile",
                )
                if self._fallback is None:
                    self._fallback = PollingObserver(timeout=5)
                    self._fallback.start()
                self._watched[root] = self._fallback.schedule(
                    handler, str(root), recursive=recursive
                )
            return True

    def forget(self, root: Path) -> None:
        """Stop watching ``root`` (a card that was unmounted), so that a card mounted there
        later gets a fresh watch on its own file system."""
        with self._lock:
            if root in self._watched:
                self._unwatch(root)

    def _unwatch(self, root: Path) -> None:
        watch = self._watched.pop(root)
        for observer in (self._observer, self._fallback):
            if observer is None:
                continue
            with contextlib.suppress(KeyError, OSError):
                observer.unschedule(watch)  # type: ignore[arg-type]

    def stop(self) -> None:
        for observer in (self._observer, self._fallback):
            if observer is not None and observer.is_alive():
                observer.stop()
                observer.join(timeout=5)
