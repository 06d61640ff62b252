"""Archive one image: fresh URL → bytes → checked → EXIF restored → (WebP) → atomic write.

The signed URL is asked for just before the download (listing URLs expire within the hour);
an expired one is replaced and the download tried again. The served bytes must be a complete
JPEG, and so must the result after the EXIF is rebuilt, before anything is written; a file is
never left empty or partial (see :mod:`daemon.archive.files`).
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from daemon.archive.client import ArchiveClient, UrlExpired
from daemon.archive.exif_restore import ZoneLookup, build_exif, gpano_xmp, restore
from daemon.archive.files import DiskFullError, write_atomic
from daemon.archive.layout import image_path
from daemon.archive.meta import ImageMeta, thumb_field
from daemon.errors import CorruptMediaError
from daemon.media.jpeg import check_jpeg, frame_size


class ItemFailed(Exception):
    """This image could not be archived in this run (the next run tries again)."""


@dataclass(frozen=True)
class Saved:
    path: str
    size: int


class DiskGuard:
    """Refuses a write that would leave less than ``min_free_bytes`` free under ``root``."""

    def __init__(self, root: Path, min_free_bytes: int) -> None:
        self.root = root
        self.min_free_bytes = min_free_bytes

    def check(self, need: int) -> None:
        probe = self.root
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        free = shutil.disk_usage(probe).free
        if free - need < self.min_free_bytes:
            raise DiskFullError(
                28,
                f"disk full: {free // (1 << 20)} MB free on {self.root}, a backup keeps at least"
                f" {self.min_free_bytes // (1 << 20)} MB free",
            )


def to_webp(jpeg: bytes, meta: ImageMeta, zone_lookup: ZoneLookup, quality: int) -> bytes:
    """The image re-encoded as WebP, carrying the same restored EXIF (and GPano XMP)."""
    try:
        with Image.open(io.BytesIO(jpeg)) as im:
            size = im.size
            out = io.BytesIO()
            extra: dict[str, object] = {}
            if meta.is_pano:
                extra["xmp"] = gpano_xmp(meta, size)
            im.save(out, "WEBP", quality=quality, exif=build_exif(meta, zone_lookup), **extra)
    except (OSError, ValueError) as exc:
        raise CorruptMediaError(f"image {meta.id}: cannot convert to WebP: {exc}") from exc
    data = out.getvalue()
    with Image.open(io.BytesIO(data)) as check:
        check.verify()
    return data


class Downloader:
    """Archives images of one user into ``root``."""

    def __init__(
        self,
        client: ArchiveClient,
        root: Path,
        username: str,
        zone_lookup: ZoneLookup,
        guard: DiskGuard,
        *,
        quality: str = "original",
        fmt: str = "jpeg",
        webp_quality: int = 90,
        attempts: int = 3,
    ) -> None:
        self.client = client
        self.root = root
        self.username = username
        self.zone_lookup = zone_lookup
        self.guard = guard
        self.field = thumb_field(quality)
        self.fmt = fmt
        self.webp_quality = webp_quality
        self.attempts = max(1, attempts)

    def relative_path(self, meta: ImageMeta) -> str:
        return str(image_path(self.username, meta, "webp" if self.fmt == "webp" else "jpg"))

    def fetch_checked(self, meta: ImageMeta) -> bytes:
        """The served JPEG, complete, from a URL fetched just now. Raise ItemFailed."""
        problem = "no attempt"
        for _ in range(self.attempts):
            url = self.client.image(meta.id, [self.field]).get(self.field)
            if not isinstance(url, str) or not url:
                raise ItemFailed(f"image {meta.id}: the API gives no {self.field}")
            try:
                data = self.client.fetch(url)
            except UrlExpired as exc:
                problem = f"CDN refused the URL ({exc})"
                continue
            try:
                check_jpeg(data, f"image {meta.id}")
            except CorruptMediaError as exc:
                problem = str(exc)
                continue
            return data
        raise ItemFailed(f"image {meta.id}: {problem}")

    def archive(self, meta: ImageMeta) -> Saved:
        """Download, restore and write ``meta``'s image. Raise ItemFailed, DiskFullError,
        AuthError (the run must stop) or TransportError (retries exhausted)."""
        data = self.fetch_checked(meta)
        try:
            size = frame_size(data, f"image {meta.id}")
            out = restore(data, meta, self.zone_lookup, size)
            if self.fmt == "webp":
                out = to_webp(out, meta, self.zone_lookup, self.webp_quality)
            else:
                check_jpeg(out, f"image {meta.id}")
        except CorruptMediaError as exc:
            raise ItemFailed(str(exc)) from exc
        rel = self.relative_path(meta)
        self.guard.check(len(out))
        write_atomic(self.root / rel, out)
        return Saved(rel, len(out))
