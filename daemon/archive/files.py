"""Durable file writes: temporary file in the same folder, fsync, rename, fsync of the folder.

A reader (or a run resumed after a power cut) sees either the old file or the complete new
one, never a partial or empty file. Leftover temporaries (``.<name>.<random>.part``) of a
killed run are removed by :func:`sweep_partials`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

PART_SUFFIX = ".part"


class DiskFullError(OSError):
    """No room left on the archive's file system."""


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def makedirs_durable(path: Path) -> None:
    """``mkdir -p`` whose new entries survive a power cut (each parent fsync'd)."""
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir()
        fsync_dir(d.parent)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably. Raise DiskFullError on ENOSPC/EDQUOT
    (the temporary file is removed), other OSErrors as they are."""
    makedirs_durable(path.parent)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{PART_SUFFIX}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(exc.errno, f"no space left writing {path}") from exc
        raise
    fsync_dir(path.parent)


def sweep_partials(root: Path) -> int:
    """Remove the temporary files a killed run left under ``root``; return how many."""
    removed = 0
    for tmp in _partials(root):
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed += 1
    return removed


def _partials(root: Path) -> Iterator[Path]:
    if not root.is_dir():
        return
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            if name.startswith(".") and name.endswith(PART_SUFFIX):
                yield Path(dirpath, name)
