"""The sandbox's image CDN: signed URLs that expire, and the JPEG bytes they serve.

A URL looks like the Facebook CDN's (``/cdn/m1/v/t6/<image id>_<quality>.jpg?ccb=10-5&oh=00_<sig>
&oe=<hex expiry>&_nc_sid=<id>&_nc_ohc=<serial>``): ``oe`` is the expiry as hexadecimal Unix
seconds, ``_nc_ohc`` the URL's serial number (every URL minted differs, even within a second)
and ``oh`` an HMAC over path, expiry and serial. After the expiry the CDN answers ``403 URL
signature expired`` as text, as fbcdn does; a tampered signature gets ``403 Bad URL hash``. No
token is checked.

``expire_every`` (tests): the first URL used for every N-th distinct image requested is refused
as expired, and keeps being refused: only a freshly minted URL gets that image's bytes. The
count is deterministic (⌊distinct images requested / N⌋) whatever the pace or thread order.

What is served (:class:`ImageArt`): a small synthetic JPEG per image, resized for the ``256``/
``1024``/``2048`` thumbnails when larger, carrying the small EXIF Mapillary leaves
(``ImageDescription={"applied_s236562":true}``), or for some images an EXIF segment whose IFD
runs past its buffer ("IFD exceeds data buffer", the downloaders' 0-byte-file bug).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import re
import struct
import threading
from dataclasses import dataclass
from urllib.parse import urlencode

import piexif
from PIL import Image

from daemon import synth
from daemon.clock import Clock
from daemon.sandbox.replies import Reply

QUALITIES = ("256", "1024", "2048", "original")
_PATH = re.compile(r"m1/v/t6/(?P<image_id>\d+)_(?P<quality>256|1024|2048|original)\.jpg")
SERVED_DESCRIPTION = b'{"applied_s236562":true}'


@dataclass(frozen=True)
class ImageArt:
    """How an image's served JPEG is drawn: pixel seed, size, and whether its EXIF is broken."""

    seed: int
    width: int
    height: int
    corrupt_exif: bool = False


def served_exif(corrupt: bool) -> bytes:
    """The EXIF payload (``Exif\\0\\0`` + TIFF) of a served JPEG; ``corrupt``: an IFD0 that
    claims more entries than the segment holds."""
    payload = bytes(piexif.dump({"0th": {piexif.ImageIFD.ImageDescription: SERVED_DESCRIPTION}}))
    if not corrupt:
        return payload
    tiff = bytearray(payload[6:])
    little = tiff[:2] == b"II"
    ifd0 = struct.unpack_from("<I" if little else ">I", tiff, 4)[0]
    struct.pack_into("<H" if little else ">H", tiff, ifd0, 0x0FFF)
    return payload[:6] + bytes(tiff)


def render(art: ImageArt, quality: str) -> bytes:
    """The JPEG served for ``art`` at ``quality`` (one of :data:`QUALITIES`)."""
    data = synth.jpeg_bytes(art.seed, size=(art.width, art.height), quality=85)
    if quality != "original" and max(art.width, art.height) > int(quality):
        with Image.open(io.BytesIO(data)) as im:
            im.thumbnail((int(quality), int(quality)))
            out = io.BytesIO()
            im.save(out, "JPEG", quality=85)
            data = out.getvalue()
    segment_payload = served_exif(art.corrupt_exif)
    segment = b"\xff\xe1" + struct.pack(">H", len(segment_payload) + 2) + segment_payload
    return data[:2] + segment + data[2:]


class Cdn:
    """Signs URLs and serves bytes. Thread-safe; rendered JPEGs are cached per (id, quality)."""

    def __init__(
        self, secret: bytes, clock: Clock, ttl_seconds: float, *, expire_every: int = 0
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.expire_every = expire_every
        self._secret = secret
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], bytes] = {}
        self._serial = 0
        self._requested: set[str] = set()
        self._refused: set[str] = set()
        self.served = 0
        self.expired = 0
        #: Images whose first URL was refused by ``expire_every``, in the order refused.
        self.refused_images: list[str] = []

    def _sign(self, path: str, oe: str, serial: str) -> str:
        msg = f"{path}|{oe}|{serial}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()[:40]

    def url(self, base: str, image_id: str, quality: str) -> str:
        """A fresh signed URL for ``image_id`` at ``quality``, valid for ``ttl_seconds``."""
        expiry = int(self._clock.now().timestamp() + self.ttl_seconds)
        path = f"m1/v/t6/{image_id}_{quality}.jpg"
        oe = f"{expiry:X}"
        with self._lock:
            self._serial += 1
            serial = f"{self._serial:x}"
        query = {
            "ccb": "10-5",
            "oh": f"00_{self._sign(path, oe, serial)}",
            "oe": oe,
            "_nc_sid": "201bca",
            "_nc_ohc": serial,
        }
        return f"{base}/cdn/{path}?{urlencode(query)}"

    def _refuse_first_use(self, image_id: str, signature: str) -> bool:
        """``expire_every``: is this URL one refused as expired (see the module docstring)?"""
        if self.expire_every <= 0:
            return False
        with self._lock:
            if signature in self._refused:
                return True
            if image_id in self._requested:
                return False
            self._requested.add(image_id)
            if len(self._requested) % self.expire_every:
                return False
            self._refused.add(signature)
            self.refused_images.append(image_id)
            return True

    def serve(self, cdn_path: str, query: dict[str, list[str]], art: ImageArt | None) -> Reply:
        """The reply for ``GET /cdn/{cdn_path}``; ``art`` is None when the image is gone."""
        m = _PATH.fullmatch(cdn_path)
        oe = (query.get("oe") or [""])[0]
        oh = (query.get("oh") or [""])[0].removeprefix("00_")
        serial = (query.get("_nc_ohc") or [""])[0]
        if m is None or not oe or not hmac.compare_digest(oh, self._sign(cdn_path, oe, serial)):
            return Reply(403, b"Bad URL hash", "text/plain")
        try:
            expiry = int(oe, 16)
        except ValueError:
            return Reply(403, b"Bad URL timestamp", "text/plain")
        expired = self._clock.now().timestamp() > expiry
        if expired or self._refuse_first_use(m["image_id"], oh):
            with self._lock:
                self.expired += 1
            return Reply(403, b"URL signature expired", "text/plain")
        if art is None:
            return Reply(404, b"Not Found", "text/plain")
        key = (m["image_id"], m["quality"])
        with self._lock:
            data = self._cache.get(key)
        if data is None:
            data = render(art, m["quality"])
            with self._lock:
                self._cache[key] = data
        with self._lock:
            self.served += 1
        return Reply(200, data, "image/jpeg", {"Cache-Control": "max-age=1209600"})
