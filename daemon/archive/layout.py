"""Where each archived file goes (pure): ``<root>/<user>/<YYYY-MM-DD>/<sequence>/<id>.<ext>``.

The date is the UTC date of ``captured_at`` (``unknown-date`` without one), the sequence folder
``no-sequence`` for an image without one. Names depend only on the image's own metadata, so a
re-run, a resumed run or a one-shot download puts the same image at the same path.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import PurePosixPath

from daemon.archive.meta import ImageMeta, safe_id

SIDECAR_SUFFIX = ".geojson"


def date_folder(meta: ImageMeta) -> str:
    if meta.captured_at_ms is None:
        return "unknown-date"
    return datetime.fromtimestamp(meta.captured_at_ms / 1000, UTC).strftime("%Y-%m-%d")


def sequence_dir(username: str, meta: ImageMeta) -> PurePosixPath:
    """The sequence folder, relative to the archive root."""
    user = safe_id(username) or "unknown-user"
    return PurePosixPath(user, date_folder(meta), meta.sequence or "no-sequence")


def image_path(username: str, meta: ImageMeta, ext: str) -> PurePosixPath:
    """The image's file, relative to the archive root; ``ext`` is ``jpg`` or ``webp``."""
    return sequence_dir(username, meta) / f"{meta.id}.{ext}"


def sidecar_path(seq_dir: PurePosixPath) -> PurePosixPath:
    """The sequence folder's GeoJSON sidecar: ``<date>/<sequence>/<sequence>.geojson``."""
    return seq_dir / f"{seq_dir.name}{SIDECAR_SUFFIX}"


def tar_path(seq_dir: PurePosixPath) -> PurePosixPath:
    """The uncompressed tar a finished sequence folder is packed into (beside the folder)."""
    return seq_dir.parent / f"{seq_dir.name}.tar"
