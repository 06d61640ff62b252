"""Put the API's metadata back into a served JPEG (pure apart from the zone lookup passed in).

Mapillary serves its processed copy with the original EXIF stripped (or, for some images,
broken). :func:`restore` replaces the EXIF segment wholesale with one built from the API
fields, so a corrupt served IFD is never parsed, only dropped; every other byte of the JPEG is
kept. Written, when known:

* GPS latitude/longitude as degrees, minutes and seconds, the seconds a rational close to the
  exact decimal (error below 1e-10°), with N/S/E/W refs;
* GPS altitude + ref (below sea level as ref 1; a wrapped unsigned value unwrapped first);
* GPS image direction (true north);
* DateTimeOriginal / DateTime in the local time of the place (zone from the coordinates),
  SubSecTimeOriginal (milliseconds), OffsetTimeOriginal / OffsetTime; UTC without a position;
* GPSDateStamp / GPSTimeStamp in UTC; Make, Model; Artist = the creator's username;
* for panoramas an XMP packet with Google's GPano properties.

Orientation is not written: the served images are already rotated upright.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from fractions import Fraction
from typing import Any
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import piexif

from daemon.archive.meta import ImageMeta
from daemon.errors import CorruptMediaError
from daemon.media.jpeg import XMP_HEADER, replace_exif_segment

#: (lat, lon) → IANA zone name, or None when unknown (open sea).
ZoneLookup = Callable[[float, float], str | None]
SECONDS_DENOMINATOR = 10_000_000


def dms(value: float) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """|value| degrees as EXIF (D/1, M/1, S as a rational) computed from the exact decimal."""
    exact = abs(Fraction(repr(float(value))))
    degrees = int(exact)
    minutes_f = (exact - degrees) * 60
    minutes = int(minutes_f)
    seconds = ((minutes_f - minutes) * 60).limit_denominator(SECONDS_DENOMINATOR)
    return (degrees, 1), (minutes, 1), (seconds.numerator, seconds.denominator)


def _rational(value: float, denominator: int = 1000) -> tuple[int, int]:
    f = Fraction(repr(float(value))).limit_denominator(denominator)
    return f.numerator, f.denominator


def local_time(meta: ImageMeta, zone_lookup: ZoneLookup) -> datetime | None:
    """The capture time in the zone of the image's position (UTC without one)."""
    if meta.captured_at_ms is None:
        return None
    utc = datetime.fromtimestamp(meta.captured_at_ms / 1000, UTC)
    zone: tzinfo = UTC
    if meta.lat is not None and meta.lon is not None:
        name = zone_lookup(meta.lat, meta.lon)
        if name:
            try:
                zone = ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                zone = UTC
    return utc.astimezone(zone)


def _offset_text(t: datetime) -> str:
    offset = t.utcoffset() or timedelta(0)
    sign = "+" if offset >= timedelta(0) else "-"
    minutes = abs(int(offset.total_seconds())) // 60
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def build_exif(meta: ImageMeta, zone_lookup: ZoneLookup) -> bytes:
    """The EXIF payload (``Exif\\0\\0`` + TIFF) for ``meta``."""
    zeroth: dict[int, object] = {piexif.ImageIFD.Software: "mapillaryd archive"}
    exif: dict[int, object] = {}
    gps: dict[int, object] = {}
    if meta.make:
        zeroth[piexif.ImageIFD.Make] = meta.make.encode()
    if meta.model:
        zeroth[piexif.ImageIFD.Model] = meta.model.encode()
    if meta.creator_username:
        zeroth[piexif.ImageIFD.Artist] = meta.creator_username.encode()
    local = local_time(meta, zone_lookup)
    if local is not None and meta.captured_at_ms is not None:
        stamp = local.strftime("%Y:%m:%d %H:%M:%S")
        offset = _offset_text(local)
        millis = f"{meta.captured_at_ms % 1000:03d}"
        zeroth[piexif.ImageIFD.DateTime] = stamp
        exif[piexif.ExifIFD.DateTimeOriginal] = stamp
        exif[piexif.ExifIFD.SubSecTimeOriginal] = millis
        exif[piexif.ExifIFD.OffsetTimeOriginal] = offset
        exif[piexif.ExifIFD.OffsetTime] = offset
        utc = local.astimezone(UTC)
        gps[piexif.GPSIFD.GPSDateStamp] = utc.strftime("%Y:%m:%d")
        gps[piexif.GPSIFD.GPSTimeStamp] = (
            (utc.hour, 1),
            (utc.minute, 1),
            (utc.second * 1000 + meta.captured_at_ms % 1000, 1000),
        )
    if meta.lat is not None and meta.lon is not None:
        gps[piexif.GPSIFD.GPSVersionID] = (2, 3, 0, 0)
        gps[piexif.GPSIFD.GPSLatitudeRef] = "N" if meta.lat >= 0 else "S"
        gps[piexif.GPSIFD.GPSLatitude] = dms(meta.lat)
        gps[piexif.GPSIFD.GPSLongitudeRef] = "E" if meta.lon >= 0 else "W"
        gps[piexif.GPSIFD.GPSLongitude] = dms(meta.lon)
    if meta.altitude is not None:
        gps[piexif.GPSIFD.GPSAltitudeRef] = 1 if meta.altitude < 0 else 0
        gps[piexif.GPSIFD.GPSAltitude] = _rational(abs(meta.altitude))
    if meta.direction is not None:
        gps[piexif.GPSIFD.GPSImgDirectionRef] = "T"
        gps[piexif.GPSIFD.GPSImgDirection] = _rational(meta.direction)
    return bytes(piexif.dump({"0th": zeroth, "Exif": exif, "GPS": gps}))


def gpano_xmp(meta: ImageMeta, pixel_size: tuple[int, int] | None) -> bytes:
    """An XMP packet marking an equirectangular panorama (GPano), full-sphere, uncropped."""
    w, h = pixel_size or (meta.width or 0, meta.height or 0)
    props = {
        "ProjectionType": "equirectangular",
        "UsePanoramaViewer": "True",
        "FullPanoWidthPixels": str(w),
        "FullPanoHeightPixels": str(h),
        "CroppedAreaImageWidthPixels": str(w),
        "CroppedAreaImageHeightPixels": str(h),
        "CroppedAreaLeftPixels": "0",
        "CroppedAreaTopPixels": "0",
    }
    if meta.direction is not None:
        props["PoseHeadingDegrees"] = f"{meta.direction:.3f}"
    attrs = "".join(f'\n   GPano:{k}="{escape(v)}"' for k, v in props.items())
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        '  <rdf:Description rdf:about=""\n'
        '   xmlns:GPano="http://ns.google.com/photos/1.0/panorama/"'
        f"{attrs}/>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    ).encode()


def _set_xmp(data: bytes, packet: bytes) -> bytes:
    """``data`` with its first XMP APP1 segment replaced by ``packet`` (or one added after the
    EXIF segment). Header segments only; raise CorruptMediaError if they are malformed."""
    payload = XMP_HEADER + packet
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    pos, insert_at = 2, 2
    while True:
        if pos + 4 > len(data) or data[pos] != 0xFF:
            raise CorruptMediaError("JPEG: malformed header segments")
        marker = data[pos + 1]
        if marker == 0xDA:
            break
        (length,) = struct.unpack_from(">H", data, pos + 2)
        end = pos + 2 + length
        if marker == 0xE1 and data.startswith(XMP_HEADER, pos + 4):
            return data[:pos] + segment + data[end:]
        if marker in (0xE0, 0xE1):
            insert_at = end
        pos = end
    return data[:insert_at] + segment + data[insert_at:]


def restore(
    jpeg: bytes,
    meta: ImageMeta,
    zone_lookup: ZoneLookup,
    pixel_size: tuple[int, int] | None = None,
) -> bytes:
    """``jpeg`` with EXIF (and GPano XMP for panoramas) rebuilt from ``meta``; every other
    byte unchanged. Raise CorruptMediaError if the JPEG's header segments are malformed."""
    out = replace_exif_segment(jpeg, build_exif(meta, zone_lookup), name=f"image {meta.id}")
    if meta.is_pano:
        out = _set_xmp(out, gpano_xmp(meta, pixel_size))
    return out


def timezonefinder_lookup() -> ZoneLookup:
    """The offline zone lookup (timezonefinder); loaded once, on first use (~0.3 s)."""
    finder: list[Any] = []
    lock = threading.Lock()

    def lookup(lat: float, lon: float) -> str | None:
        with lock:  # one finder, shared by the download threads
            if not finder:
                from timezonefinder import TimezoneFinder

                finder.append(TimezoneFinder())
            name = finder[0].timezone_at(lat=lat, lng=lon)
        return name if isinstance(name, str) else None

    return lookup
