"""Uncompressed tar per finished sequence folder (JPEG and WebP do not compress further).

The tar is built next to the folder under a temporary name, fsync'd and renamed, and only then
are the folder's files removed: a kill at any moment leaves the folder, the tar, or both.
Members are stored as ``<sequence>/<file>`` (relative), sorted, with the files' mtimes.
A tar that already exists (new images arrived for a packed sequence) is rebuilt with its old
members plus the folder's files.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tarfile
from pathlib import Path

from daemon.archive.files import PART_SUFFIX, fsync_dir


def pack(folder: Path, tar: Path) -> list[str]:
    """Pack ``folder`` into ``tar`` (merging an existing one); return the names packed from the
    folder. The folder is removed once the tar is durable."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        return []
    tmp = tar.with_name(f".{tar.name}.{secrets.token_hex(4)}{PART_SUFFIX}")
    names = {p.name for p in files}
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as out:
            if tar.exists():
                with tarfile.open(tar, "r") as old:
                    for member in old.getmembers():
                        if member.isfile() and Path(member.name).name not in names:
                            src = old.extractfile(member)
                            if src is not None:
                                out.addfile(member, src)
            for p in files:
                out.add(p, arcname=f"{folder.name}/{p.name}", recursive=False)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, tar)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(tar.parent)
    for p in files:
        p.unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()
    fsync_dir(tar.parent)
    return sorted(names)
