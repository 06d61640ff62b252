"""Noticing removable cards as they are mounted, so that each new card is scanned whole.

Files a camera wrote make no filesystem events on the machine the card is plugged into: the
mount itself is the only signal. On Linux the kernel marks ``/proc/self/mounts`` readable with
``POLLPRI``/``POLLERR`` after every mount or unmount (proc_mounts(5)); :class:`MountTable`
polls it without blocking, once per main-loop tick, and re-reads it on a timer as well in case
a signal is missed. Elsewhere (macOS) the folders under ``/Volumes`` are listed on that timer.

A mount point is a card when it matches a ``[[mount_root]]`` pattern and passes the root's
filter (:func:`accepts`): a camera's folders (``DCIM/``, a dashcam's ``BlackVue/Record/``…), a
listed volume label, or anything. An unmounted card is a watch that went away, never "every
file deleted".

Parsing and deciding are pure functions; :class:`MountTable` reads, :class:`MountMonitor`
keeps what was seen between reads.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import structlog

from daemon.config import Config, MountRootConfig, MountsConfig, WatchConfig

log = structlog.get_logger(__name__)

PROC_MOUNTS = Path("/proc/self/mounts")
BY_LABEL = Path("/dev/disk/by-label")
VOLUMES = Path("/Volumes")

#: Top-level folders (compared case-insensitively) that say "a camera wrote this card": DCF's
#: DCIM/ (every still camera, GoPro, Insta360, most dashcams) and dashcams' own layouts.
CAMERA_FOLDERS = frozenset(
    {
        "dcim",
        "blackvue",  # BlackVue: BlackVue/Record/
        "record",  # BlackVue cards mounted one level down, and several others
        "normal",  # Vantrue, Viofo (older): Normal/ Event/ Parking/
        "cont_rec",  # Thinkware
        "evt_rec",
        "movie",  # Viofo: Movie/ RO/ Photo/
        "gmic",  # Garmin
    }
)
_OCTAL = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    """One line of the mount table."""

    device: str
    point: str
    fstype: str = ""


@dataclass(frozen=True)
class Card:
    """A mounted volume that was taken: the watch the service runs on it."""

    point: str
    label: str
    watch: WatchConfig


def parse_mounts(text: str) -> list[Mount]:
    """The mounts of a ``/proc/self/mounts`` text, in order; a malformed line is skipped.
    Fields escape space, tab, newline and backslash as octal (``\\040``).

    >>> parse_mounts("/dev/sda1 /media/My\\\\040Card vfat rw 0 0\\n")
    [Mount(device='/dev/sda1', point='/media/My Card', fstype='vfat')]
    """
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            device, point, fstype = (_unescape(f) for f in fields[:3])
            mounts.append(Mount(device, point, fstype))
    return mounts


def _unescape(field: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def root_for(point: str, roots: Sequence[MountRootConfig]) -> MountRootConfig | None:
    """The first root whose pattern matches mount point ``point`` whole (``*`` matches within
    one path segment: ``/media/*`` takes ``/media/CARD``, not ``/media/pi/CARD``)."""
    path = PurePosixPath(point)
    for root in roots:
        pattern = root.pattern.rstrip("/")
        if len(path.parts) == len(PurePosixPath(pattern).parts) and path.match(pattern):
            return root
    return None


def looks_like_camera(top_level: Iterable[str]) -> bool:
    """True if one of the card's top-level names is a camera's folder (:data:`CAMERA_FOLDERS`)."""
    return any(name.lower() in CAMERA_FOLDERS for name in top_level)


def accepts(root: MountRootConfig, label: str, top_level: Iterable[str]) -> tuple[bool, str]:
    """Whether a card mounted under ``root`` is taken, and why (for the log)."""
    if root.labels and label in root.labels:
        return True, f"label {label!r} is listed"
    if root.require == "any":
        return True, "every volume under this root is taken"
    if root.require == "label":
        return False, f"label {label!r} is not in labels {list(root.labels)}"
    if looks_like_camera(top_level):
        return True, "it has a camera's folders"
    return False, 'no DCIM/ or dashcam folder at its top level (require = "camera")'


def card_watch(root: MountRootConfig, point: str) -> WatchConfig:
    """The root's watch options on the card at ``point`` (a relative track path rebased)."""
    track = root.watch.geotag_source_path
    if track is not None and not track.is_absolute():
        track = Path(point) / track
    return replace(root.watch, path=Path(point), geotag_source_path=track)


def labels_by_device(by_label: Path = BY_LABEL) -> dict[str, str]:
    """``{device path: label}`` from udev's ``/dev/disk/by-label`` links (labels escape
    characters as ``\\x20``); empty where there is no such folder."""
    result: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for link in by_label.iterdir():
            with contextlib.suppress(OSError):
                name = re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), link.name)
                result[os.path.realpath(link)] = name
    return result


def top_level_names(point: str) -> list[str]:
    """The names at the top of a mounted card (empty if it cannot be listed)."""
    try:
        return os.listdir(point)
    except OSError as exc:
        log.warning("card_unreadable", point=point, error=str(exc), hint=_permission_hint(exc))
        return []


def _permission_hint(exc: OSError) -> str:
    if sys.platform == "darwin" and isinstance(exc, PermissionError):
        return "macOS: grant Full Disk Access to the Python running mapillaryd (see README)"
    if isinstance(exc, PermissionError):
        return "the card's uid/gid/umask mount options do not let this user read it"
    return ""


class MountTable:
    """The current mount points, and whether they may have changed since the last read.

    Linux: ``/proc/self/mounts`` kept open and polled for ``POLLPRI``/``POLLERR`` with a zero
    timeout. Without it (macOS), every directory under ``volumes`` is a mount point, and
    :meth:`changed` is always False (the monitor's timer re-lists them).
    """

    def __init__(self, proc: Path = PROC_MOUNTS, volumes: Path = VOLUMES) -> None:
        self.proc, self.volumes = proc, volumes
        self._fh: BinaryIO | None = None
        self._poll: select.poll | None = None
        if proc.exists():
            self._fh = proc.open("rb")
            self._poll = select.poll()
            self._poll.register(self._fh, select.POLLPRI | select.POLLERR)

    def read(self) -> list[Mount]:
        if self._fh is not None:
            # Reading it whole from the start re-arms the change signal.
            self._fh.seek(0)
            return parse_mounts(self._fh.read().decode("utf-8", "replace"))
        try:
            entries = list(os.scandir(self.volumes))
        except OSError:
            return []
        return [
            Mount("", e.path, "")
            for e in entries
            if not e.is_symlink() and e.is_dir()  # "Macintosh HD" is a symlink to /
        ]

    def changed(self) -> bool:
        """True if the kernel signalled a change since the last :meth:`read` (never blocks)."""
        if self._poll is None:
            return False
        return bool(self._poll.poll(0))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            self._poll = None


class MountMonitor:
    """Turns mount-table reads into card arrivals and departures.

    :meth:`update` is called from the main loop with the monotonic time; it reads the table when
    the kernel signalled a change or ``rescan_seconds`` passed, and returns ``(new cards, mount
    points gone)``. A volume that was not taken is looked at again on each timed re-read (its
    DCIM/ may appear later).
    """

    def __init__(self, cfg: MountsConfig, table: MountTable | None = None) -> None:
        self.cfg = cfg
        self.table = table if table is not None else MountTable()
        self.cards: dict[str, Card] = {}
        self._refused: dict[str, str] = {}
        self._next_read = float("-inf")

    def update(self, mono: float) -> tuple[list[Card], list[Card]]:
        timed = mono >= self._next_read
        if not (timed or self.table.changed()):
            return [], []
        self._next_read = mono + self.cfg.rescan_seconds
        mounts = {m.point: m for m in self.table.read() if root_for(m.point, self.cfg.roots)}
        gone = [self.cards.pop(p) for p in list(self.cards) if p not in mounts]
        for point in list(self._refused):
            if point not in mounts:
                del self._refused[point]
        for old in gone:
            log.info("card_unmounted", point=old.point, label=old.label)
        fresh = [m for p, m in mounts.items() if p not in self.cards]
        if not timed:
            fresh = [m for m in fresh if m.point not in self._refused]
        new: list[Card] = []
        labels = labels_by_device() if fresh else {}
        for m in fresh:
            card = self._consider(m, labels)
            if card is not None:
                self.cards[m.point] = card
                new.append(card)
        return new, gone

    def _consider(self, m: Mount, labels: dict[str, str]) -> Card | None:
        root = root_for(m.point, self.cfg.roots)
        assert root is not None
        label = labels.get(os.path.realpath(m.device), "") if m.device.startswith("/") else ""
        label = label or PurePosixPath(m.point).name
        taken, why = accepts(root, label, top_level_names(m.point))
        if not taken:
            if self._refused.get(m.point) != why:
                log.info("card_ignored", point=m.point, label=label, why=why, root=root.pattern)
            self._refused[m.point] = why
            return None
        self._refused.pop(m.point, None)
        log.info("card_mounted", point=m.point, label=label, why=why, root=root.pattern)
        return Card(m.point, label, card_watch(root, m.point))

    def close(self) -> None:
        self.table.close()


def watch_at(cfg: Config, root: str) -> WatchConfig | None:
    """The watch options for files found under the watch root ``root``: its ``[[watch]]``
    table, else — for a card mounted there under a ``[[mount_root]]`` pattern, even one pulled
    since or not mounted at this start — that root's options. None for a folder no longer
    configured."""
    for w in cfg.watches:
        if str(w.path) == root:
            return w
    if cfg.mounts.enabled:
        mount_root = root_for(root, cfg.mounts.roots)
        if mount_root is not None:
            return card_watch(mount_root, root)
    return None
