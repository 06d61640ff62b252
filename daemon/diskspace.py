"""Room on the disks we write to: the spool (copies off the card) and the state dir (the queue).

A full disk is an ordinary event on a Pi, not a crash: ingest checks the room before copying a
file (:func:`room_for`), and the places that write translate the kernel's ``ENOSPC``/``EDQUOT``
and SQLite's ``SQLITE_FULL`` into :class:`DiskFull` at the boundary, so callers hold their work
and retry once space returns instead of corrupting anything or losing a file.

Also here: whether a path lives on a RAM filesystem (tmpfs, ramfs), where a queue database
would silently vanish at the next power cut (:func:`volatile_fs_type`).
"""

from __future__ import annotations

import errno
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

#: Filesystems that live in RAM: what is written there is gone after a power cut or reboot.
VOLATILE_FS_TYPES = frozenset({"tmpfs", "ramfs"})
#: errno values meaning "no room": out of blocks or inodes, or over a quota.
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFull(Exception):
    """A disk we write to has no room (or less than the configured reserve).

    ``path`` is the file or folder being written, ``free`` the bytes free there (None when not
    known), ``needed`` the bytes the write wanted (None when not known).
    """

    def __init__(self, path: str, message: str, free: int | None = None, needed: int | None = None):
        super().__init__(f"{path}: {message}")
        self.path, self.free, self.needed = path, free, needed


def is_full_error(exc: BaseException) -> bool:
    """True if ``exc`` says a disk is full: an OSError with ENOSPC/EDQUOT, or SQLITE_FULL."""
    if isinstance(exc, OSError):
        return exc.errno in FULL_ERRNOS
    if isinstance(exc, sqlite3.Error):
        code: int | None = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            return (code & 0xFF) == sqlite3.SQLITE_FULL
        return "database or disk is full" in str(exc)
    return False


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem holding ``path`` (or its
    nearest existing parent, for a folder not created yet)."""
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    st = os.statvfs(p)
    return st.f_bavail * st.f_frsize


def has_room(free: int, needed: int, reserve: int) -> bool:
    """Whether writing ``needed`` bytes leaves at least ``reserve`` bytes free."""
    return free - needed >= reserve


def room_for(path: Path, needed: int, reserve: int) -> None:
    """Raise :class:`DiskFull` unless ``needed`` bytes fit on ``path``'s disk above ``reserve``."""
    free = free_bytes(path)
    if not has_room(free, needed, reserve):
        raise DiskFull(
            str(path),
            f"disk low: {_mb(free)} free, {_mb(needed)} needed plus a reserve of {_mb(reserve)}",
            free=free,
            needed=needed,
        )


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@dataclass(frozen=True)
class SpaceReport:
    """Free space of one of our directories, as ``status`` shows it."""

    role: str  # "state" or "spool"
    path: str
    free_bytes: int | None
    low: bool


def space_report(dirs: dict[str, Path], reserve: int) -> list[SpaceReport]:
    """Free space per role (``{"state": …, "spool": …}``); ``low`` when below ``reserve``.
    A directory that cannot be inspected reports ``free_bytes=None`` and not low."""
    out = []
    for role, path in dirs.items():
        try:
            free: int | None = free_bytes(path)
        except OSError:
            free = None
        out.append(SpaceReport(role, str(path), free, free is not None and free < reserve))
    return out


# --- RAM filesystems -------------------------------------------------------------------------


def mount_fs_type(path: str, mounts: str) -> str | None:
    """The filesystem type of the mount holding absolute ``path``, from the text of
    ``/proc/self/mounts`` (pure: the longest mount point that is a prefix of ``path`` wins)."""
    best, best_type = "", None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = _unescape(fields[1])
        prefix = point.rstrip("/") + "/"
        if (path == point or path.startswith(prefix) or point == "/") and len(point) >= len(best):
            best, best_type = point, fields[2]
    return best_type


def _unescape(field: str) -> str:
    """Mount points in /proc/self/mounts escape space, tab, newline and backslash as octal."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def volatile_fs_type(path: Path, mounts_file: Path = Path("/proc/self/mounts")) -> str | None:
    """``"tmpfs"``/``"ramfs"`` when ``path`` (or the folder it will be created in) lives in RAM,
    else None. None too where there is no mount table to read (macOS has no tmpfs by default)."""
    try:
        mounts = mounts_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    p = path.expanduser()
    while not p.exists() and p != p.parent:
        p = p.parent
    kind = mount_fs_type(str(p.resolve()), mounts)
    return kind if kind in VOLATILE_FS_TYPES else None


#: The queue meta key where a held ingest says why (``status`` shows it).
INGEST_HOLD_KEY = "ingest_hold"
