"""Synthetic camera output for the demo, tests and benchmarks.

Everything here is generated at run time, so the repository ships no third-party media. A *drive*
is a sequence of JPEG frames along a straight-ish road, one frame every ``spacing_m`` metres and
``interval_s`` seconds, each with the EXIF a phone or action camera writes: DateTimeOriginal with
sub-seconds and an offset, GPS position, altitude, direction and GPS time stamp, make and model.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import piexif
from PIL import Image, ImageDraw

EARTH_RADIUS_M = 6_371_008.8


@dataclass(frozen=True)
class Frame:
    """What was written into one synthetic frame (the truth tests compare against)."""

    path: Path
    time: datetime
    lat: float
    lon: float
    alt: float
    heading: float


def _rational(value: float, denominator: int = 1_000_000) -> tuple[int, int]:
    f = Fraction(value).limit_denominator(denominator)
    return f.numerator, f.denominator


def _dms(value: float) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    value = abs(value)
    degrees = int(value)
    minutes_f = (value - degrees) * 60
    minutes = int(minutes_f)
    seconds = (minutes_f - minutes) * 60
    return (degrees, 1), (minutes, 1), (round(seconds * 10_000), 10_000)


def exif_bytes(
    *,
    time: datetime,
    lat: float | None,
    lon: float | None,
    alt: float | None = None,
    heading: float | None = None,
    make: str = "mapillaryd",
    model: str = "synthetic dashcam",
    with_gps_time: bool = True,
) -> bytes:
    """EXIF for one frame; ``time`` must be timezone-aware and is written in its own offset."""
    if time.tzinfo is None:
        raise ValueError("time must be timezone-aware")
    offset = time.utcoffset() or timedelta(0)
    sign = "+" if offset >= timedelta(0) else "-"
    minutes = abs(int(offset.total_seconds())) // 60
    zeroth = {piexif.ImageIFD.Make: make, piexif.ImageIFD.Model: model}
    exif = {
        piexif.ExifIFD.DateTimeOriginal: time.strftime("%Y:%m:%d %H:%M:%S"),
        piexif.ExifIFD.SubSecTimeOriginal: f"{time.microsecond // 1000:03d}",
        piexif.ExifIFD.OffsetTimeOriginal: f"{sign}{minutes // 60:02d}:{minutes % 60:02d}",
    }
    gps: dict[int, object] = {}
    if lat is not None and lon is not None:
        gps[piexif.GPSIFD.GPSVersionID] = (2, 3, 0, 0)
        gps[piexif.GPSIFD.GPSLatitudeRef] = "N" if lat >= 0 else "S"
        gps[piexif.GPSIFD.GPSLatitude] = _dms(lat)
        gps[piexif.GPSIFD.GPSLongitudeRef] = "E" if lon >= 0 else "W"
        gps[piexif.GPSIFD.GPSLongitude] = _dms(lon)
        if alt is not None:
            gps[piexif.GPSIFD.GPSAltitudeRef] = 0 if alt >= 0 else 1
            gps[piexif.GPSIFD.GPSAltitude] = _rational(abs(alt), 1000)
        if heading is not None:
            gps[piexif.GPSIFD.GPSImgDirectionRef] = "T"
            gps[piexif.GPSIFD.GPSImgDirection] = _rational(heading % 360, 1000)
        if with_gps_time:
            utc = time.astimezone(UTC)
            gps[piexif.GPSIFD.GPSDateStamp] = utc.strftime("%Y:%m:%d")
            gps[piexif.GPSIFD.GPSTimeStamp] = (
                (utc.hour, 1),
                (utc.minute, 1),
                (utc.second * 1000 + utc.microsecond // 1000, 1000),
            )
    return bytes(piexif.dump({"0th": zeroth, "Exif": exif, "GPS": gps}))


def jpeg_bytes(
    seed: int, *, size: tuple[int, int] = (320, 240), exif: bytes | None = None, quality: int = 80
) -> bytes:
    """A small JPEG whose pixels depend on ``seed`` (so every frame has distinct content)."""
    rng = random.Random(seed)
    image = Image.new("RGB", size, (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.rectangle((0, h // 2, w, h), fill=(70, 70, 70))  # road
    for _ in range(6):
        x0, y0 = rng.randrange(w), rng.randrange(h // 2)
        colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        draw.rectangle((x0, y0, x0 + rng.randrange(10, 60), y0 + rng.randrange(10, 60)), colour)
    draw.text((8, 8), f"frame {seed}", fill=(255, 255, 255))
    out = io.BytesIO()
    if exif is None:
        image.save(out, "JPEG", quality=quality)
    else:
        image.save(out, "JPEG", quality=quality, exif=exif)
    return out.getvalue()


def destination(
    lat: float, lon: float, bearing_deg: float, distance_m: float
) -> tuple[float, float]:
    """The point ``distance_m`` from (lat, lon) along ``bearing_deg`` on a sphere."""
    phi1, lam1, theta = math.radians(lat), math.radians(lon), math.radians(bearing_deg)
    delta = distance_m / EARTH_RADIUS_M
    phi2 = math.asin(
        math.sin(phi1) * math.cos(delta) + math.cos(phi1) * math.sin(delta) * math.cos(theta)
    )
    lam2 = lam1 + math.atan2(
        math.sin(theta) * math.sin(delta) * math.cos(phi1),
        math.cos(delta) - math.sin(phi1) * math.sin(phi2),
    )
    return math.degrees(phi2), (math.degrees(lam2) + 540) % 360 - 180


def drive_points(
    count: int,
    *,
    start: datetime,
    lat: float = 46.0569,
    lon: float = 14.5058,
    heading: float = 45.0,
    spacing_m: float = 5.0,
    interval_s: float = 1.0,
    seed: int = 0,
) -> Iterator[tuple[datetime, float, float, float, float]]:
    """(time, lat, lon, alt, heading) of ``count`` frames along a gently curving road."""
    rng = random.Random(seed)
    for i in range(count):
        yield start + timedelta(seconds=i * interval_s), lat, lon, 300.0 + 0.1 * i, heading
        heading = (heading + rng.uniform(-3, 3)) % 360
        lat, lon = destination(lat, lon, heading, spacing_m)


def write_drive(
    folder: Path,
    count: int,
    *,
    start: datetime | None = None,
    prefix: str = "IMG_",
    seed: int = 0,
    **kwargs: float,
) -> list[Frame]:
    """Write ``count`` geotagged frames into ``folder`` and return what each one says."""
    folder.mkdir(parents=True, exist_ok=True)
    if start is None:
        start = datetime(2026, 6, 1, 9, 0, 0, tzinfo=UTC)
    frames = []
    for i, (t, la, lo, alt, hd) in enumerate(drive_points(count, start=start, seed=seed, **kwargs)):
        path = folder / f"{prefix}{i:05d}.jpg"
        data = jpeg_bytes(
            seed * 100_003 + i, exif=exif_bytes(time=t, lat=la, lon=lo, alt=alt, heading=hd)
        )
        tmp = path.with_name(f".{path.name}.part")
        tmp.write_bytes(data)
        tmp.rename(path)
        frames.append(Frame(path, t, la, lo, alt, hd))
    return frames
