"""Uncompressed tar per finished sequence folder (JPEG and WebP do not compress further).

The tar is built next to the folder under a temporary name, fsync'd and renamed, and only then
are the folder's files removed: a kill at any moment leaves the folder, the tar, or both, and
never a partial file under the tar's name (the temporary is swept by the next run, which packs
the folder again: the job packs every folder whose images the index does not note as packed).
Members are stored as ``<sequence>/<file>`` (relative), sorted, with the files' mtimes.
A tar that already exists (new images arrived for a packed sequence, or a killed run left tar
and folder both) is rebuilt with its old members plus the folder's files, each name once.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tarfile
from pathlib import Path

from daemon.archive.files import PART_SUFFIX, fsync_dir


def has_files(folder: Path) -> bool:
    """Does ``folder`` hold a file to pack (dot-files are temporaries, not packed)?"""
    if not folder.is_dir():
        return False
    return any(p.is_file() and not p.name.startswith(".") for p in folder.iterdir())


def pack(folder: Path, tar: Path) -> list[str]:
    """Pack ``folder`` into ``tar`` (merging an existing one); return the names packed from the
    folder. The folder is removed once the tar is durable."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        return []
    tmp = tar.with_name(f".{tar.name}.{secrets.token_hex(4)}{PART_SUFFIX}")
    names = {p.name for p in files}
    try:
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT))
            kept: dict[str, tarfile.TarInfo] = {}
            old = stack.enter_context(tarfile.open(tar, "r")) if tar.exists() else None
            if old is not None:
                for member in old.getmembers():
                    if member.isfile() and Path(member.name).name not in names:
                        kept[Path(member.name).name] = member
            for name in sorted(names | kept.keys()):
                if name in kept:
                    src = old.extractfile(kept[name]) if old is not None else None
                    if src is not None:
                        out.addfile(kept[name], src)
                else:
                    out.add(folder / name, arcname=f"{folder.name}/{name}", recursive=False)
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
