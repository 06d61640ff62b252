"""Archive one image: fresh URL → bytes → checked → EXIF restored → (WebP) → atomic write.

The signed URL is asked for just before the download (listing URLs expire within the hour);
an expired one is replaced and the download tried again. The served bytes must be a complete
JPEG, and so must the result after the EXIF is rebuilt, before anything is written; a file is
never left empty or partial (see :mod:`daemon.archive.files`).
"""

from __future__ import annotations

import io
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from daemon.archive.client import ArchiveClient, GraphError, UrlExpired
from daemon.archive.exif_restore import ZoneLookup, build_exif, gpano_xmp, restore
from daemon.archive.files import DiskFullError, write_atomic
from daemon.archive.layout import image_path
from daemon.archive.meta import ImageMeta, thumb_field
from daemon.clock import SYSTEM_CLOCK, Clock
from daemon.errors import AuthError, CorruptMediaError, UploadError
from daemon.media.jpeg import check_jpeg, frame_size

#: A URL fetched in a batch is used only this soon after (real CDN URLs live for hours).
URL_MAX_AGE_S = 60.0
#: Ids per batch URL request (the Graph API takes at most 50 ``image_ids``).
URL_BATCH = 50


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
        clock: Clock = SYSTEM_CLOCK,
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
        self.clock = clock
        self._urls: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def prefetch(self, metas: list[ImageMeta]) -> None:
        """Fresh URLs for the next images in one request (``GET /images?image_ids=``), used if
        their download starts within :data:`URL_MAX_AGE_S`. A failed batch is not an error:
        each image then asks for its own URL."""
        if not metas:
            return
        params = {"image_ids": ",".join(m.id for m in metas), "fields": self.field}
        try:
            found = self.client.search(params)
        except (UploadError, GraphError) as exc:
            if isinstance(exc, AuthError):
                raise
            return
        now = self.clock.monotonic()
        with self._lock:
            for d in found:
                url = d.get(self.field)
                if isinstance(url, str) and url:
                    self._urls[str(d.get("id"))] = (url, now)

    def _url(self, meta: ImageMeta, *, fresh: bool) -> str:
        with self._lock:
            cached = self._urls.pop(meta.id, None)
        if cached is not None and not fresh:
            url, at = cached
            if self.clock.monotonic() - at < URL_MAX_AGE_S:
                return url
        fetched = self.client.image(meta.id, [self.field]).get(self.field)
        if not isinstance(fetched, str) or not fetched:
            raise ItemFailed(f"image {meta.id}: the API gives no {self.field}")
        return fetched

    def relative_path(self, meta: ImageMeta) -> str:
        return str(image_path(self.username, meta, "webp" if self.fmt == "webp" else "jpg"))

    def fetch_checked(self, meta: ImageMeta) -> bytes:
        """The served JPEG, complete, from a URL fetched just now. Raise ItemFailed."""
        problem = "no attempt"
        for attempt in range(self.attempts):
            url = self._url(meta, fresh=attempt > 0)
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
