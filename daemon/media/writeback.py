"""Writing processed geotags back into EXIF — always into a copy, never the original.

mapillary_tools' ``--overwrite_EXIF_{time,gps,direction,orientation}_tag`` and
``--overwrite_all_EXIF_tags`` rewrite the originals in place (which is how a Ctrl-C on an SD
card can ruin a photo). mapillaryd keeps the seed's ``--keep_original`` semantics always: the
edited image is a copy, written atomically (temporary file in the same folder, fsync, rename).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import piexif

from daemon.media.exif import rewrite_exif


@dataclass(frozen=True)
class Overwrite:
    """Which groups of tags to rewrite (``all`` means every group)."""

    time: bool = False
    gps: bool = False
    direction: bool = False
    orientation: bool = False

    @classmethod
    def every(cls) -> Overwrite:
        return cls(True, True, True, True)

    def any(self) -> bool:
        return self.time or self.gps or self.direction or self.orientation


@dataclass(frozen=True)
class Geotags:
    time: datetime
    lat: float
    lon: float
    alt: float | None = None
    heading: float | None = None
    orientation: int | None = None


def _rational(value: float, limit: int = 1_000_000) -> tuple[int, int]:
    f = Fraction(value).limit_denominator(limit)
    return f.numerator, f.denominator


def _dms(value: float) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = (value - degrees - minutes / 60) * 3600
    return (degrees, 1), (minutes, 1), _rational(seconds, 100_000)


def edit_tags(exif: dict[str, Any], tags: Geotags, which: Overwrite) -> None:
    """Apply ``tags`` to a piexif-style dict, for the groups ``which`` selects."""
    gps = exif.setdefault("GPS", {})
    ex = exif.setdefault("Exif", {})
    utc = tags.time.astimezone(UTC)
    if which.time:
        ex[piexif.ExifIFD.DateTimeOriginal] = utc.strftime("%Y:%m:%d %H:%M:%S")
        ex[piexif.ExifIFD.SubSecTimeOriginal] = f"{utc.microsecond // 1000:03d}"
        ex[piexif.ExifIFD.OffsetTimeOriginal] = "+00:00"
    if which.gps:
        gps[piexif.GPSIFD.GPSVersionID] = (2, 3, 0, 0)
        gps[piexif.GPSIFD.GPSLatitudeRef] = "N" if tags.lat >= 0 else "S"
        gps[piexif.GPSIFD.GPSLatitude] = _dms(tags.lat)
        gps[piexif.GPSIFD.GPSLongitudeRef] = "E" if tags.lon >= 0 else "W"
        gps[piexif.GPSIFD.GPSLongitude] = _dms(tags.lon)
        if tags.alt is not None:
            gps[piexif.GPSIFD.GPSAltitudeRef] = 0 if tags.alt >= 0 else 1
            gps[piexif.GPSIFD.GPSAltitude] = _rational(abs(tags.alt), 1000)
        gps[piexif.GPSIFD.GPSDateStamp] = utc.strftime("%Y:%m:%d")
        gps[piexif.GPSIFD.GPSTimeStamp] = (
            (utc.hour, 1),
            (utc.minute, 1),
            (utc.second * 1000 + utc.microsecond // 1000, 1000),
        )
    if which.direction and tags.heading is not None:
        gps[piexif.GPSIFD.GPSImgDirectionRef] = "T"
        gps[piexif.GPSIFD.GPSImgDirection] = _rational(tags.heading % 360, 1000)
    if which.orientation and tags.orientation is not None:
        exif.setdefault("0th", {})[piexif.ImageIFD.Orientation] = tags.orientation


def with_geotags(data: bytes, name: str, tags: Geotags, which: Overwrite) -> bytes:
    """The JPEG with the selected tags rewritten; pixels untouched. CorruptMediaError if not."""
    return rewrite_exif(data, name, lambda exif: edit_tags(exif, tags, which))


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
