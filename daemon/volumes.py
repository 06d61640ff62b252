"""Which card is in the slot: a volume identity for a watch root.

Why: a pulled card must make its items wait for *that* card, and a file may only be freed from
the card it was found on. A path alone cannot say this — dashcams and cameras reset their file
counters, so ``DCIM/100GOPRO/GOPR0001.MP4`` exists on every card — and a mount point stays an
empty folder after the card is gone.

The identity, strongest first:

1. ``marker:<uuid>`` — a small file :data:`MARKER_NAME` at the watch root holding a random id.
   The daemon writes it **only when freeing is enabled** for the watch (writing to a user's card
   is a change we make only when the user asked us to change the card anyway). It survives
   re-insertion in another reader or another machine, and a reformat removes it.
2. ``uuid:<fs uuid>`` — the filesystem UUID or FAT serial, found by matching the root's
   ``st_dev`` against ``/dev/disk/by-uuid`` (Linux with udev).
3. ``fsid:<hex>`` — ``statvfs().f_fsid``: for ext4 it is derived from the UUID, for vfat from
   the device number, for tmpfs it is new at every mount (a remounted tmpfs is empty anyway).
4. ``dev:<hex>`` — ``st_dev``, where ``f_fsid`` is 0 (macOS, some filesystems).

An identity of None means the root is not there (not a folder, or unreadable).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

#: Hidden (the scanner ignores dot-files), so it is never taken for media.
MARKER_NAME = ".mapillaryd-volume"
BY_UUID = Path("/dev/disk/by-uuid")


def read_marker(root: Path) -> str | None:
    """The id in ``root``'s marker file, or None when there is none (or it is unreadable)."""
    try:
        text = (root / MARKER_NAME).read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return text if text and len(text) <= 64 and text.isprintable() else None


def ensure_marker(root: Path) -> str | None:
    """Write a marker with a fresh id at ``root`` unless one is there; return the id, or None if
    it cannot be written (a read-only or full card: freeing then falls back to the filesystem
    identity, and the file checks still apply)."""
    existing = read_marker(root)
    if existing is not None:
        return existing
    ident = uuid.uuid4().hex
    tmp = root / f"{MARKER_NAME}.{ident[:8]}.tmp"
    try:
        with open(tmp, "w", encoding="ascii") as fh:
            fh.write(ident + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, root / MARKER_NAME)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        log.warning("volume_marker_not_written", root=str(root), error=exc.strerror)
        return None
    log.info("volume_marker_written", root=str(root), volume=f"marker:{ident}")
    return ident


def fs_identity(root: Path, by_uuid: Path = BY_UUID) -> str | None:
    """The identity of the filesystem holding ``root`` (items 2–4 above), or None if ``root``
    is not a readable folder."""
    try:
        st = os.stat(root)
        if not os.path.isdir(root):
            return None
        vfs = os.statvfs(root)
    except OSError:
        return None
    fs_uuid = _uuid_for_device(st.st_dev, by_uuid)
    if fs_uuid is not None:
        return f"uuid:{fs_uuid}"
    if vfs.f_fsid:
        return f"fsid:{vfs.f_fsid:x}"
    return f"dev:{st.st_dev:x}"


def _uuid_for_device(dev: int, by_uuid: Path) -> str | None:
    try:
        links = list(os.scandir(by_uuid))
    except OSError:
        return None
    for link in links:
        try:
            if os.stat(link.path).st_rdev == dev:
                return link.name
        except OSError:
            continue
    return None


def identify(root: Path, by_uuid: Path = BY_UUID) -> str | None:
    """The identity of the volume at ``root`` now: its marker if it has one, else its
    filesystem's; None when ``root`` is not there."""
    fs = fs_identity(root, by_uuid)
    if fs is None:
        return None
    marker = read_marker(root)
    return f"marker:{marker}" if marker is not None else fs


def identities(root: Path, by_uuid: Path = BY_UUID) -> frozenset[str]:
    """Every identity the volume at ``root`` answers to now (its marker's and its filesystem's:
    files recorded before a marker was written carry the latter); empty when it is not there."""
    fs = fs_identity(root, by_uuid)
    if fs is None:
        return frozenset()
    marker = read_marker(root)
    return frozenset({fs, f"marker:{marker}"} if marker is not None else {fs})
