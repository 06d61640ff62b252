"""GoPro GPMF telemetry: the KLV parser and the GPS track of a GoPro video.

GPMF (https://github.com/gopro/gpmf-parser) is a stream of KLV items, each 4-byte aligned:

* a FourCC key (``DEVC``, ``STRM``, ``GPS5`` …), a type character, a structure size (one
  byte) and a repeat count (two bytes, big-endian), then ``size × repeat`` bytes of data and
  zero padding to a multiple of four;
* type ``\\0`` nests further KLVs; ``?`` is a structure whose member types are given by the
  stream's ``TYPE`` item; the others are numbers, characters or fixed-size blobs.

A GoPro MP4 carries one GPMF *payload* per sample of its ``gpmd`` track (about one per second).
Each payload holds a ``DEVC`` per device (camera, Karma drone …), each device ``STRM`` streams.
GPS streams:

* ``GPS5`` (HERO5–HERO10, MAX, Fusion): rows of latitude, longitude, altitude, 2D and 3D speed,
  divided by ``SCAL``; per payload ``GPSU`` (UTC time, ``yymmddhhmmss.sss``), ``GPSF`` (fix:
  0, 2 or 3) and ``GPSP`` (dilution of precision × 100);
* ``GPS9`` (HERO11 and later): rows of latitude, longitude, altitude, 2D and 3D speed, days
  since 2000, seconds since midnight, DOP and fix, with member types from ``TYPE``;
* ``GPRI`` (the Karma drone's GPS receiver): time on the drone's system clock, latitude,
  longitude, altitude, two accuracies, speed, course, fix, satellites. mapillary_tools does
  not read it; see :class:`GoProOptions.karma_gpri`.

Timing follows mapillary_tools 0.14.7 (``gpmf_parser._load_telemetry_from_samples``): the
points of one payload are spread evenly over its sample, point *i* of *n* at
``sample decode time + i × sample duration / n``; the GPS clock (``GPSU``/``GPS9``) gives each
point's UTC time, and points without one are back- and forward-filled from the nearest point
that has one. The points of the first device that has GPS are used, in order; in each device
the first stream with points wins (``GPS9`` before ``GPS5``).

Quality filters, as mapillary_tools' ``gpmf_gps_filter.remove_noisy_points`` and each
configurable in :class:`GpsFilter`: fix in {2, 3}, DOP × 100 ≤ 1000, then its outlier rule
(split where consecutive points are further apart than max(2 × 15 m, upper whisker of the
distances), merge pieces whose joining speed is within the upper whisker of the ground
speeds, keep the largest). Points without a fix or DOP value pass those two filters.

Differences from mapillary_tools, on purpose:

* one ``SCAL`` value applies to every member (the GPMF rule); mapillary_tools crashes on it;
* a ``GPSF`` outside {0, 2, 3}, a ``GPS9`` with a bad ``TYPE``, or a payload that does not
  parse skips that stream or payload with a note instead of crashing or silently dropping it;
* Karma ``GPRI`` is read when a device has no ``GPS5``/``GPS9`` (switchable).

:func:`parse_gpmf` is pure (bytes in); :func:`gopro_track` reads a file through
:mod:`daemon.media.mp4`. Both raise only :class:`~daemon.errors.ItemError` subclasses.
"""

from __future__ import annotations

import math
import statistics
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from typing import BinaryIO

from daemon.errors import CorruptMediaError
from daemon.geo.distance import distance_m
from daemon.media import mp4

__all__ = [
    "DEFAULT_FILTER",
    "DevicePoints",
    "GoProOptions",
    "GoProPoint",
    "GoProTelemetry",
    "GpmfGps",
    "GpsFilter",
    "Klv",
    "camera_model",
    "collect_gps",
    "filter_points",
    "gopro_track",
    "klv_rows",
    "parse_gpmf",
    "payload_points",
    "upper_whisker",
]

#: Deepest nesting of KLV containers accepted (real payloads use 2–3 levels).
MAX_DEPTH = 8
_EPOCH_2000 = datetime(2000, 1, 1, tzinfo=UTC).timestamp()
_NO_DEVICE_ID = "none"

# type character -> (struct format of one element, element size); None = raw bytes elements
_NUMERIC: dict[str, tuple[str, int]] = {
    "b": ("b", 1),
    "B": ("B", 1),
    "d": ("d", 8),
    "f": ("f", 4),
    "j": ("q", 8),
    "J": ("Q", 8),
    "l": ("i", 4),
    "L": ("I", 4),
    "q": ("i", 4),  # Q15.16 fixed point, scaled below
    "Q": ("q", 8),  # Q31.32 fixed point, scaled below
    "s": ("h", 2),
    "S": ("H", 2),
}
_BLOBS = {"c": 1, "F": 4, "G": 16, "U": 16}
_FIXED_SCALE = {"q": 65536.0, "Q": 4294967296.0}

Value = int | float | bytes


class GpmfError(ValueError):
    """A KLV item whose contents do not match its type (caught and noted by the readers)."""


# --- KLV ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Klv:
    """One KLV item: ``key`` (FourCC), ``type`` (a character; ``"\\x00"`` nests), the structure
    size and repeat count, ``data`` (``size × repeat`` bytes, padding removed) and, for a
    nested item, its ``children``. ``offset`` is where the item starts in the payload."""

    key: bytes
    type: str
    struct_size: int
    repeat: int
    data: bytes = field(repr=False)
    children: tuple[Klv, ...] = ()
    offset: int = 0

    @property
    def name(self) -> str:
        """The key as text, e.g. ``"GPS5"``."""
        return self.key.decode("latin-1")


def parse_gpmf(payload: bytes, name: str = "GPMF payload") -> tuple[Klv, ...]:
    """The KLV items of a GPMF payload (nested items parsed recursively).

    Strict: an item whose data runs past the end of its container, nesting deeper than
    :data:`MAX_DEPTH`, or trailing bytes that are not zero padding raise
    :class:`~daemon.errors.CorruptMediaError` naming ``name``. Empty input gives ``()``.
    """
    return _parse(payload, 0, len(payload), name, 0)


def _parse(data: bytes, start: int, end: int, name: str, depth: int) -> tuple[Klv, ...]:
    items: list[Klv] = []
    pos = start
    while pos < end:
        if end - pos < 8:
            if data[pos:end].strip(b"\x00"):
                raise CorruptMediaError(
                    f"{name}: {end - pos} stray byte(s) at offset {pos}, too few for a KLV header"
                )
            break
        key = data[pos : pos + 4]
        type_char = chr(data[pos + 4])
        struct_size = data[pos + 5]
        repeat = int.from_bytes(data[pos + 6 : pos + 8], "big")
        size = struct_size * repeat
        body_end = pos + 8 + size
        if body_end > end:
            raise CorruptMediaError(
                f"{name}: KLV {key!r} at offset {pos} declares {size} data bytes, "
                f"{body_end - end} past the end of its container"
            )
        children: tuple[Klv, ...] = ()
        if type_char == "\x00" and size:
            if depth >= MAX_DEPTH:
                raise CorruptMediaError(
                    f"{name}: KLV {key!r} at offset {pos} nests deeper than {MAX_DEPTH} levels"
                )
            children = _parse(data, pos + 8, body_end, name, depth + 1)
        items.append(
            Klv(key, type_char, struct_size, repeat, data[pos + 8 : body_end], children, pos)
        )
        pos = pos + 8 + ((size + 3) & ~3)
    return tuple(items)


def _complex_types(text: str) -> list[str]:
    """A ``TYPE`` string (``"lllllllSS"``), with nested ``[n]`` arrays refused."""
    if "[" in text:
        raise GpmfError(f"TYPE {text!r} with arrays is not supported")
    return list(text)


def klv_rows(klv: Klv, complex_type: str | None = None) -> list[tuple[Value, ...]]:
    """The values of ``klv``, one tuple per repeat (structure).

    Numbers are decoded big-endian (``q``/``Q`` fixed point scaled to float); ``c``, ``U``,
    ``F``, ``G`` give ``bytes``; ``?`` needs the stream's ``TYPE`` string as ``complex_type``.
    ``GpmfError`` when the structure size does not fit the type.
    """
    if klv.type == "\x00":
        raise GpmfError(f"{klv.name} is a container, not values")
    size = klv.struct_size
    if klv.type == "?":
        if not complex_type:
            raise GpmfError(f"{klv.name} has a complex type but the stream has no TYPE")
        members = _complex_types(complex_type)
        fmt = ">"
        width = 0
        for member in members:
            if member in _NUMERIC:
                code, step = _NUMERIC[member]
                fmt += code
            elif member in _BLOBS:
                step = _BLOBS[member]
                fmt += f"{step}s"
            else:
                raise GpmfError(f"{klv.name}: TYPE member {member!r} is not supported")
            width += step
        if width != size:
            raise GpmfError(f"{klv.name}: TYPE {complex_type!r} is {width} bytes, not {size}")
        rows = [struct.unpack_from(fmt, klv.data, i * size) for i in range(klv.repeat)]
        return [_scale_fixed(row, members) for row in rows]
    if klv.type in _BLOBS:
        step = _BLOBS[klv.type]
        if klv.type == "c" or size == step:
            return [(klv.data[i * size : (i + 1) * size],) for i in range(klv.repeat)]
        if size % step:
            raise GpmfError(f"{klv.name}: structure size {size} is not a multiple of {step}")
        return [
            tuple(klv.data[i * size + j : i * size + j + step] for j in range(0, size, step))
            for i in range(klv.repeat)
        ]
    if klv.type not in _NUMERIC:
        raise GpmfError(f"{klv.name}: type {klv.type!r} is not supported")
    code, step = _NUMERIC[klv.type]
    if size % step or size == 0:
        raise GpmfError(f"{klv.name}: structure size {size} is not a multiple of {step}")
    fmt = ">" + code * (size // step)
    rows = [struct.unpack_from(fmt, klv.data, i * size) for i in range(klv.repeat)]
    if klv.type in _FIXED_SCALE:
        return [tuple(v / _FIXED_SCALE[klv.type] for v in row) for row in rows]
    return rows


def _scale_fixed(row: tuple[Value, ...], members: list[str]) -> tuple[Value, ...]:
    if not any(m in _FIXED_SCALE for m in members):
        return row
    return tuple(
        v / _FIXED_SCALE[m] if m in _FIXED_SCALE and isinstance(v, int) else v
        for v, m in zip(row, members, strict=True)
    )


def _text(klv: Klv) -> str:
    """A ``c`` item as one string, up to the first NUL."""
    return klv.data.split(b"\x00", 1)[0].decode("utf-8", errors="replace")


def _numbers(klv: Klv, complex_type: str | None = None) -> list[float]:
    """Every numeric value of ``klv`` flattened (for SCAL, GPSF, GPSP)."""
    out: list[float] = []
    for row in klv_rows(klv, complex_type):
        for value in row:
            if isinstance(value, bytes):
                raise GpmfError(f"{klv.name} holds bytes where numbers are expected")
            out.append(value)
    return out


# --- GPS points from one payload ---------------------------------------------------------------


@dataclass(slots=True)
class GoProPoint:
    """A GPS fix from GPMF, on the movie timeline.

    ``time_s`` is seconds from the start of the movie, ``epoch_s`` the UTC time (Unix seconds)
    the GPS clock gave (``GPSU``/``GPS9``/Karma ``SYST``; back-filled, see the module
    docstring), ``fix`` 0/2/3, ``dop100`` dilution of precision × 100, ``speed`` the 2D ground
    speed in m/s, ``stream`` the key it came from.
    """

    time_s: float
    lat: float
    lon: float
    alt: float
    epoch_s: float | None
    fix: int | None
    dop100: float | None
    speed: float | None
    stream: str


@dataclass(frozen=True)
class DevicePoints:
    """The GPS points one ``DEVC`` of one payload gave (times not yet set: all 0)."""

    device_id: str
    device_name: str | None
    points: list[GoProPoint]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class GoProOptions:
    """What :func:`gopro_track` reads. ``karma_gpri``: when a device has no ``GPS5``/``GPS9``
    stream, read the Karma drone's ``GPRI`` GPS receiver stream (mapillary_tools ignores it,
    so the HERO5-on-Karma sample gives it no points at all)."""

    karma_gpri: bool = True


def _stream_index(stream: Klv) -> dict[bytes, Klv]:
    """The items of a STRM by key, the last one winning (as mapillary_tools indexes them)."""
    return {item.key: item for item in stream.children}


def _type_string(index: dict[bytes, Klv]) -> str | None:
    item = index.get(b"TYPE")
    if item is None or item.type != "c":
        return None
    return item.data.replace(b"\x00", b"").decode("latin-1") or None


def _scales(index: dict[bytes, Klv], members: int) -> list[float] | None:
    """SCAL divisors for ``members`` values; one divisor applies to all; None if unusable."""
    item = index.get(b"SCAL")
    if item is None:
        return None
    values = _numbers(item)
    if not values or any(v == 0 or not math.isfinite(v) for v in values):
        return None
    if len(values) == 1:
        values = values * members
    if len(values) < members:
        raise GpmfError(f"SCAL has {len(values)} values for {members} members")
    return values


def _gpsu_epoch(index: dict[bytes, Klv]) -> float | None:
    item = index.get(b"GPSU")
    if item is None or not item.data:
        return None
    text = item.data[:16].decode("latin-1").rstrip("\x00")
    try:
        return datetime.strptime(text, "%y%m%d%H%M%S.%f").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def _scaled(row: tuple[Value, ...], scales: list[float], members: int) -> list[float]:
    """The first ``members`` values of ``row`` divided by their SCAL divisors."""
    if len(row) < members:
        raise GpmfError(f"rows have {len(row)} values, not {members}")
    out = []
    for value, scale in zip(row[:members], scales[:members], strict=True):
        if isinstance(value, bytes):
            raise GpmfError("a GPS member is not a number")
        scaled = value / scale
        if not math.isfinite(scaled):
            raise GpmfError(f"{value} / {scale} is not a finite number")
        out.append(scaled)
    return out


def _first_number(index: dict[bytes, Klv], key: bytes) -> float | None:
    item = index.get(key)
    if item is None:
        return None
    values = _numbers(item)
    return values[0] if values else None


def _gps5(index: dict[bytes, Klv]) -> list[GoProPoint]:
    item = index.get(b"GPS5")
    if item is None:
        return []
    scales = _scales(index, 5)
    if scales is None:
        return []
    fix = _first_number(index, b"GPSF")
    dop = _first_number(index, b"GPSP")
    epoch = _gpsu_epoch(index)
    points = []
    for row in klv_rows(item):
        lat, lon, alt, speed = _scaled(row, scales, 4)
        points.append(
            GoProPoint(
                0.0, lat, lon, alt, epoch, None if fix is None else int(fix), dop, speed, "GPS5"
            )
        )
    return points


def _gps9(index: dict[bytes, Klv]) -> list[GoProPoint]:
    item = index.get(b"GPS9")
    if item is None:
        return []
    scales = _scales(index, 9)
    types = _type_string(index)
    if scales is None or not types:
        return []
    if len(types) != 9:
        raise GpmfError(f"GPS9 TYPE {types!r} has {len(types)} members, not 9")
    points = []
    for row in klv_rows(item, types):
        lat, lon, alt, speed, _speed3d, days, seconds, dop, fix = _scaled(row, scales, 9)
        epoch = _EPOCH_2000 + days * 86400 + seconds
        points.append(GoProPoint(0.0, lat, lon, alt, epoch, round(fix), dop * 100, speed, "GPS9"))
    return points


def _syst(device: Klv) -> tuple[float, float] | None:
    """(system seconds, UTC seconds) from a Karma ``SYST`` stream, to place GPRI times."""
    for stream in device.children:
        if stream.key != b"STRM":
            continue
        index = _stream_index(stream)
        item = index.get(b"SYST")
        if item is None or not item.repeat:
            continue
        types = _type_string(index)
        scales = _scales(index, 2)
        if scales is None:
            continue
        row = klv_rows(item, types)[0]
        if len(row) < 2 or isinstance(row[0], bytes) or isinstance(row[1], bytes):
            continue
        return float(row[0]) / scales[0], float(row[1]) / scales[1]
    return None


def _gpri(index: dict[bytes, Klv], syst: tuple[float, float] | None) -> list[GoProPoint]:
    item = index.get(b"GPRI")
    if item is None:
        return []
    types = _type_string(index)
    scales = _scales(index, 10)
    if scales is None or not types:
        return []
    if len(types) != 10:
        raise GpmfError(f"GPRI TYPE {types!r} has {len(types)} members, not 10")
    points = []
    for row in klv_rows(item, types):
        values = _scaled(row, scales, 10)
        system_s, lat, lon, alt, _acc1, _acc2, speed, _course, fix, _satellites = values
        epoch = syst[1] + (system_s - syst[0]) if syst is not None else None
        points.append(GoProPoint(0.0, lat, lon, alt, epoch, round(fix), None, speed, "GPRI"))
    return points


def _device_id(device: Klv) -> str:
    for item in device.children:
        if item.key == b"DVID":
            try:
                rows = klv_rows(item)
            except GpmfError:
                return _NO_DEVICE_ID
            if rows and rows[0]:
                value = rows[0][0]
                return value.hex() if isinstance(value, bytes) else str(value)
            return _NO_DEVICE_ID
    return _NO_DEVICE_ID


def _device_name(device: Klv) -> str | None:
    name: str | None = None
    for item in device.children:
        if item.key == b"DVNM" and item.data:
            try:
                name = item.data.decode("utf-8")  # as mapillary_tools: joined, NULs kept
            except UnicodeDecodeError:
                name = None
    return name


def _device_points(device: Klv, options: GoProOptions) -> DevicePoints:
    notes: list[str] = []
    points: list[GoProPoint] = []
    streams = [item for item in device.children if item.key == b"STRM"]
    for stream in streams:
        index = _stream_index(stream)
        for reader in (_gps9, _gps5):
            try:
                points = reader(index)
            except (GpmfError, struct.error) as exc:
                notes.append(f"a GPS stream was skipped: {exc}")
                points = []
            if points:
                break
        if points:
            break
    if not points and options.karma_gpri:
        syst = None
        for stream in streams:
            index = _stream_index(stream)
            if b"GPRI" not in index:
                continue
            try:
                syst = syst or _syst(device)
                points = _gpri(index, syst)
            except (GpmfError, struct.error) as exc:
                notes.append(f"a Karma GPRI stream was skipped: {exc}")
                points = []
            if points:
                break
    return DevicePoints(_device_id(device), _device_name(device), points, tuple(notes))


def payload_points(
    items: Sequence[Klv],
    time_s: float,
    duration_s: float,
    options: GoProOptions | None = None,
) -> list[DevicePoints]:
    """The GPS points of one payload, per top-level ``DEVC``, timed within its sample.

    Point *i* of a device's *n* points gets ``time_s + i × duration_s / n`` (mapillary_tools'
    even spacing). A device without GPS is still listed (with no points) so that its name
    counts for :func:`camera_model`.
    """
    options = options or GoProOptions()
    out = []
    for device in items:
        if device.key != b"DEVC":
            continue
        found = _device_points(device, options)
        if found.points:
            step = duration_s / len(found.points)
            for i, point in enumerate(found.points):
                point.time_s = time_s + step * i
        out.append(found)
    return out


def _backfill(points: Iterable[GoProPoint]) -> None:
    """Give points without a GPS time one from the previous point that has one (+ Δ time)."""
    last: GoProPoint | None = None
    for point in points:
        if point.epoch_s is None:
            if last is not None and last.epoch_s is not None:
                point.epoch_s = last.epoch_s + (point.time_s - last.time_s)
            else:
                continue
        last = point


def camera_model(device_names: Iterable[str]) -> str:
    """mapillary_tools' pick among ``DVNM`` names: sorted, the first containing "hero", else
    "gopro", else the first; "" when there is none."""
    names = sorted(device_names)
    for word in ("hero", "gopro"):
        for candidate in names:
            if word in candidate.lower():
                return candidate.strip()
    return names[0].strip() if names else ""


# --- filters -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpsFilter:
    """mapillary_tools' GoPro GPS filters (``MAPILLARY_TOOLS_GOPRO_GPS_FIXES``,
    ``…_GOPRO_MAX_DOP100``, ``…_GOPRO_GPS_PRECISION``); ``None`` turns one off."""

    fixes: frozenset[int] | None = frozenset({2, 3})
    max_dop100: float | None = 1000.0
    precision_m: float | None = 15.0


DEFAULT_FILTER = GpsFilter()


def upper_whisker(values: Sequence[float]) -> float:
    """Q3 + 1.5 × IQR, quartiles as medians of the lower and upper halves (the middle value
    of an odd count in neither), as mapillary_tools computes it; needs two values."""
    ordered = sorted(values)
    n = len(ordered)
    if n < 2:
        raise ValueError("the upper whisker needs at least two values")
    half = n // 2
    q1 = statistics.median(ordered[:half])
    q3 = statistics.median(ordered[half + 1 :] if n % 2 else ordered[half:])
    return float(q3 + (q3 - q1) * 1.5)


def _speed(a: GoProPoint, b: GoProPoint) -> float:
    metres = distance_m(a.lat, a.lon, b.lat, b.lon)
    seconds = abs(b.time_s - a.time_s)
    return metres / seconds if seconds else math.inf


def _remove_outliers(points: list[GoProPoint], precision_m: float) -> list[GoProPoint]:
    distances = [distance_m(a.lat, a.lon, b.lat, b.lon) for a, b in pairwise(points)]
    if len(distances) < 2:
        return points
    limit = max(2 * precision_m, upper_whisker(distances))
    pieces: list[list[GoProPoint]] = []
    for i, point in enumerate(points):
        if pieces and distances[i - 1] <= limit:
            pieces[-1].append(point)
        else:
            pieces.append([point])
    speeds = [p.speed for p in points if p.speed is not None]
    if len(speeds) < 2:
        return points
    max_speed = upper_whisker(speeds)
    joined_to: dict[int, int] = {}
    for left in range(len(pieces)):
        joined_to.setdefault(left, left)
        for right in range(left + 1, len(pieces)):
            if right in joined_to:
                continue
            if _speed(pieces[left][-1], pieces[right][0]) <= max_speed:
                joined_to[right] = joined_to[left]
                break
    groups: dict[int, list[GoProPoint]] = {}
    for i, piece in enumerate(pieces):
        groups.setdefault(joined_to[i], []).extend(piece)
    return max(groups.values(), key=len)  # the first of the largest, as a stable sort gives


def filter_points(
    points: Sequence[GoProPoint], flt: GpsFilter = DEFAULT_FILTER
) -> tuple[list[GoProPoint], list[str]]:
    """Apply the fix, DOP and outlier filters in mapillary_tools' order; (kept, notes)."""
    kept = list(points)
    notes = []
    if flt.fixes is not None:
        before = len(kept)
        kept = [p for p in kept if p.fix is None or p.fix in flt.fixes]
        if len(kept) < before:
            notes.append(f"{before - len(kept)} point(s) without a GPS fix in {sorted(flt.fixes)}")
    if flt.max_dop100 is not None:
        limit = flt.max_dop100
        before = len(kept)
        kept = [p for p in kept if p.dop100 is None or p.dop100 <= limit]
        if len(kept) < before:
            notes.append(f"{before - len(kept)} point(s) with DOP × 100 above {limit:g}")
    if flt.precision_m is not None:
        before = len(kept)
        kept = _remove_outliers(kept, flt.precision_m)
        if len(kept) < before:
            notes.append(f"{before - len(kept)} outlier point(s) (precision {flt.precision_m:g} m)")
    return kept, notes


# --- the file ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GoProTelemetry:
    """The GPS of a GoPro video.

    ``timed`` holds the filtered points on the movie timeline and as a
    :class:`~daemon.geo.track.Track`; ``raw_points`` all points before filtering (times set,
    GPS times back-filled); ``model`` the camera model (``MINF`` of the ``udta`` GPMF box when
    present, else mapillary_tools' pick among ``DVNM``), ``firmware`` from ``udta/FIRM``;
    ``notes`` what was skipped or filtered.
    """

    timed: mp4.TimedTrack | None
    raw_points: tuple[GoProPoint, ...]
    make: str
    model: str
    firmware: str
    device_names: tuple[str, ...]
    notes: tuple[str, ...]

    @property
    def points(self) -> tuple[mp4.TimedPoint, ...]:
        """The kept points (empty when every point was filtered out)."""
        return self.timed.points if self.timed is not None else ()


def _udta_text(fileobj: BinaryIO, name: str, info: mp4.Mp4Info, key: bytes) -> str:
    for box in info.udta:
        if box.type == key and box.data_size <= 4096:
            data = mp4.read_payload(fileobj, name, box)
            return data.split(b"\x00", 1)[0].decode("utf-8", errors="replace").strip()
    return ""


def _udta_minf(fileobj: BinaryIO, name: str, info: mp4.Mp4Info) -> str:
    """``MINF`` (model) from the GPMF blob newer GoPros keep in ``udta``; "" if absent."""
    for box in info.udta:
        if box.type != b"GPMF" or box.data_size > 1 << 20:
            continue
        try:
            items = parse_gpmf(mp4.read_payload(fileobj, name, box), f"{name} udta GPMF")
        except CorruptMediaError:
            return ""
        for device in items:
            for item in device.children:
                if item.key == b"MINF" and item.type == "c":
                    return _text(item).strip()
    return ""


def _samples(
    fileobj: BinaryIO, name: str, track: mp4.TrackInfo
) -> Iterator[tuple[mp4.Sample, bytes]]:
    gpmd = [i + 1 for i, fmt in enumerate(track.formats) if fmt == "gpmd"]
    for sample in mp4.iter_samples(fileobj, name, track):
        if sample.description in gpmd:
            yield sample, mp4.read_sample(fileobj, name, sample)


@dataclass
class GpmfGps:
    """The GPS of a sequence of GPMF payloads (see :func:`collect_gps`).

    ``points`` are the first GPS device's points in payload order, timed, GPS times back- and
    forward-filled; ``device_names`` the ``DVNM`` of each device id; ``devices`` how many
    ``DEVC`` items were seen (0: not GoPro telemetry at all).
    """

    points: list[GoProPoint] = field(default_factory=list)
    device_names: dict[str, str] = field(default_factory=dict)
    devices: int = 0
    notes: list[str] = field(default_factory=list)


def collect_gps(
    payloads: Iterable[tuple[Sequence[Klv], float, float]],
    options: GoProOptions | None = None,
) -> GpmfGps:
    """Gather the GPS of ``(items, sample time s, sample duration s)`` payloads (pure).

    Points are grouped by device id (``DVID``); the device that gave points first wins, as in
    mapillary_tools; then points without a GPS time get one from their neighbours.
    """
    out = GpmfGps()
    by_device: dict[str, list[GoProPoint]] = {}
    for items, time_s, duration_s in payloads:
        for found in payload_points(items, time_s, duration_s, options):
            out.devices += 1
            if found.device_name is not None:
                out.device_names[found.device_id] = found.device_name
            if found.points:
                by_device.setdefault(found.device_id, []).extend(found.points)
            out.notes.extend(n for n in found.notes if n not in out.notes)
    out.points = next(iter(by_device.values()), [])
    _backfill(out.points)
    _backfill(reversed(out.points))
    return out


def gopro_track(
    fileobj: BinaryIO,
    name: str,
    *,
    info: mp4.Mp4Info | None = None,
    options: GoProOptions | None = None,
    gps_filter: GpsFilter = DEFAULT_FILTER,
) -> GoProTelemetry | None:
    """The GoPro GPS track of an MP4, or None when it is not a GoPro video.

    None means: no track has a ``gpmd`` sample entry, or no payload has a ``DEVC`` (other
    cameras use the ``gpmd`` format too, as mapillary_tools notes). A GoPro video without GPS,
    or whose points were all filtered out, gives a :class:`GoProTelemetry` with ``timed`` None
    and notes saying why. ``info`` is the :func:`~daemon.media.mp4.probe` result when the
    caller has it. Raises only ItemError subclasses (``truncated_mp4`` for a cut file).
    """
    info = info or mp4.probe(fileobj, name)
    tracks = info.tracks_with_format("gpmd")
    if not tracks:
        return None
    bad_payloads = 0

    def payloads() -> Iterator[tuple[Sequence[Klv], float, float]]:
        nonlocal bad_payloads
        for sample, payload in _samples(fileobj, name, tracks[0]):
            try:
                items = parse_gpmf(payload, f"{name} gpmd sample {sample.index + 1}")
            except CorruptMediaError:
                bad_payloads += 1
                continue
            yield items, sample.time_s, sample.duration_s

    gps = collect_gps(payloads(), options)
    notes = gps.notes
    if bad_payloads:
        notes.append(f"{bad_payloads} gpmd payload(s) that do not parse were skipped")
    if gps.devices == 0:
        return None
    raw = gps.points
    model = _udta_minf(fileobj, name, info) or camera_model(gps.device_names.values())
    firmware = _udta_text(fileobj, name, info, b"FIRM")
    device_names = tuple(gps.device_names.values())
    if not raw:
        notes.append("the GoPro telemetry has no GPS stream (GPS5/GPS9) with points")
        return GoProTelemetry(None, (), "GoPro", model, firmware, device_names, tuple(notes))
    if raw[0].stream == "GPRI":
        notes.append(
            "the points are the Karma drone's GPS receiver (GPRI): the camera recorded no GPS "
            "stream of its own"
        )
    kept, filter_notes = filter_points(raw, gps_filter)
    notes.extend(filter_notes)
    timed = None
    if kept:
        timed = mp4.timed_track(
            [mp4.TimedPoint(p.time_s, p.lat, p.lon, p.alt, p.epoch_s, p.speed) for p in kept],
            name,
            movie_creation=info.movie.creation_time if info.movie else None,
            notes=notes,
        )
    return GoProTelemetry(timed, tuple(raw), "GoPro", model, firmware, device_names, tuple(notes))
