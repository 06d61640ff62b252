"""Image metadata in, Mapillary description out: the EXIF adapter.

Reading (:func:`read_image_metadata`) follows mapillary_tools 0.14.7 ``exif_read.ExifRead`` rule
for rule (which tags, in which order, which fallbacks to XMP), so that a file gets the same
position and capture time as ``mapillary_tools process`` would give it, with these deliberate
differences:

* A capture time without a UTC offset is read in the caller's ``default_tz`` (the configured
  time zone), not in the time zone of the machine (mapillary_tools, PR #607). A Raspberry Pi in
  a car usually runs in UTC while the camera's clock shows local time.
* The JPEG must be structurally complete (:func:`daemon.media.jpeg.check_jpeg`): a file cut
  short while being copied off a card is rejected, not uploaded.
* (0, 0), NaN and out-of-range positions are rejected here (``NoGpsError``) instead of later
  in sequence processing or schema validation.
* An unsigned ``GPSAltitude`` whose numerator has the top bit set (a negative altitude written
  as a signed 32-bit number by some firmwares) is read as that negative number, and
  ``GPSAltitudeRef`` = 1 makes the altitude negative rather than flipping its sign.
* GPS references are read leniently (first letter, any case, also from BYTE-typed tags);
  blank make/model count as absent; a zero image size counts as absent; when EXIF and XMP
  carry no image size the start-of-frame header gives it; an XMP altitude written as a
  rational (``"136169/100"``, as the XMP spec says) is read, with its reference.
* The EXIF TIFF structure is decoded by this module, not by ``piexif.load``: piexif drops the
  last character of ASCII values that lack their terminating NUL (Kodak ``DateTimeOriginal``
  ``"…09:47:23"`` becomes ``"…09:47:2"``), allocates a format string as long as a tag's
  declared count (a corrupt count of 4 G is a denial of service), and treats bytes it does not
  recognise as a *file name* to open. Values are bounds-checked before anything is allocated.

Writing (:func:`with_description`) encodes with ``piexif.dump`` and puts the result back with
:func:`daemon.media.jpeg.replace_exif_segment`, so only the EXIF segment changes.

Whatever the bytes, the public functions raise only :class:`~daemon.errors.ItemError`
subclasses (with the file name in the message) for bad media.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import struct
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Any

import piexif

from daemon.errors import CorruptMediaError, ItemError, NoGpsError, NoTimeError
from daemon.media import jpeg

__all__ = [
    "ExifFacts",
    "ImageMetadata",
    "description_splice",
    "read_exif_facts",
    "read_image_metadata",
    "with_description",
]


@dataclass(frozen=True)
class ImageMetadata:
    """What a photo says about itself.

    ``capture_time`` is timezone-aware (the reader always returns UTC); ``lat``/``lon`` are
    WGS84 degrees, ``alt`` metres, ``heading`` degrees clockwise from north as written (not
    normalised). ``orientation`` is the EXIF orientation (1..8; the reader returns 1 when the
    file has none or a bad one, like mapillary_tools). ``gps_time_used`` is True when the
    capture time came from the GPS date/time stamps rather than the camera clock.
    ``camera_uuid`` is mapillary_tools' ``MAPCameraUUID``: the body and lens serial numbers,
    alphanumerics only, joined by ``_``.
    """

    capture_time: datetime
    lat: float
    lon: float
    alt: float | None
    heading: float | None
    make: str | None
    model: str | None
    width: int | None
    height: int | None
    orientation: int | None
    gps_time_used: bool
    camera_uuid: str | None = None

    def __post_init__(self) -> None:
        if self.capture_time.utcoffset() is None:
            raise ValueError("capture_time must be timezone-aware")


# --- TIFF / EXIF decoding ---------------------------------------------------------------------

# TIFF field types: 1 BYTE, 2 ASCII, 3 SHORT, 4 LONG, 5 RATIONAL, 6 SBYTE, 7 UNDEFINED,
# 8 SSHORT, 9 SLONG, 10 SRATIONAL, 11 FLOAT, 12 DOUBLE, 13 IFD (an offset, read as LONG).
_BYTE, _ASCII, _RATIONAL, _UNDEFINED, _SRATIONAL = 1, 2, 5, 7, 10
_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
_STRUCT_CODE = {1: "B", 3: "H", 4: "L", 6: "b", 8: "h", 9: "l", 11: "f", 12: "d", 13: "L"}
_TEXT_TYPES = frozenset({_ASCII, _UNDEFINED, _BYTE})

# Tag numbers (EXIF 2.32 / TIFF 6).
_MAKE, _MODEL, _ORIENTATION, _DATETIME = 0x010F, 0x0110, 0x0112, 0x0132
_IMAGE_WIDTH, _IMAGE_LENGTH, _IMAGE_DESCRIPTION = 0x0100, 0x0101, 0x010E
_EXIF_POINTER, _GPS_POINTER, _INTEROP_POINTER = 0x8769, 0x8825, 0xA005
_THUMB_OFFSET, _THUMB_LENGTH = 0x0201, 0x0202
_DATETIME_ORIGINAL, _DATETIME_DIGITIZED = 0x9003, 0x9004
_OFFSET_TIME, _OFFSET_TIME_ORIGINAL, _OFFSET_TIME_DIGITIZED = 0x9010, 0x9011, 0x9012
_SUBSEC_TIME, _SUBSEC_TIME_ORIGINAL, _SUBSEC_TIME_DIGITIZED = 0x9290, 0x9291, 0x9292
_PIXEL_X, _PIXEL_Y = 0xA002, 0xA003
_BODY_SERIAL, _LENS_MAKE, _LENS_MODEL, _LENS_SERIAL = 0xA431, 0xA433, 0xA434, 0xA435
_SERIAL = 0xFDE9
_GPS_LAT_REF, _GPS_LAT, _GPS_LON_REF, _GPS_LON = 1, 2, 3, 4
_GPS_ALT_REF, _GPS_ALT, _GPS_TIME, _GPS_TRACK, _GPS_IMG_DIRECTION, _GPS_DATE = 5, 6, 7, 15, 17, 29

_IFD_NAMES = ("0th", "Exif", "GPS", "Interop", "1st")


class _BadTiff(Exception):
    """The EXIF payload is not a readable TIFF structure (message: why)."""


@dataclass(frozen=True)
class _Entry:
    type: int
    count: int
    raw: bytes  # exactly count * size bytes


class _Exif:
    """The IFDs of one EXIF TIFF structure, decoded leniently.

    Entries whose value lies outside the structure, or whose type is unknown, are left out; an
    IFD that is cut short keeps the entries that fit. Only the five IFDs piexif knows are read
    (0th, Exif, GPS, Interop, 1st), each at most once, so a corrupt file cannot make it loop.
    """

    def __init__(self, tiff: bytes) -> None:
        if len(tiff) < 8:
            raise _BadTiff("TIFF header cut short")
        if tiff[:2] == b"II":
            self.endian = "<"
        elif tiff[:2] == b"MM":
            self.endian = ">"
        else:
            raise _BadTiff("bad TIFF byte-order mark")
        magic, first = struct.unpack_from(self.endian + "HL", tiff, 2)
        if magic != 42:
            raise _BadTiff("bad TIFF magic number")
        self.tiff = tiff
        self.ifds: dict[str, dict[int, _Entry]] = {n: {} for n in _IFD_NAMES}
        zeroth, next_ifd = self._read_ifd(first)
        if zeroth is None:
            raise _BadTiff("first IFD outside the EXIF data")
        self.ifds["0th"] = zeroth
        for name, parent, pointer in (
            ("Exif", "0th", _EXIF_POINTER),
            ("GPS", "0th", _GPS_POINTER),
            ("Interop", "Exif", _INTEROP_POINTER),
        ):
            offset = self.first_int(parent, pointer)
            if offset is not None:
                self.ifds[name] = self._read_ifd(offset)[0] or {}
        if next_ifd:
            self.ifds["1st"] = self._read_ifd(next_ifd)[0] or {}

    def _read_ifd(self, offset: int) -> tuple[dict[int, _Entry] | None, int]:
        tiff, endian = self.tiff, self.endian
        if offset < 8 or offset + 2 > len(tiff):
            return None, 0
        (count,) = struct.unpack_from(endian + "H", tiff, offset)
        entries: dict[int, _Entry] = {}
        pos = offset + 2
        for _ in range(count):
            if pos + 12 > len(tiff):
                return entries, 0
            tag, typ, n = struct.unpack_from(endian + "HHL", tiff, pos)
            size = _TYPE_SIZE.get(typ)
            if size is not None:
                length = size * n
                if length <= 4:
                    raw = tiff[pos + 8 : pos + 8 + length]
                else:
                    (at,) = struct.unpack_from(endian + "L", tiff, pos + 8)
                    raw = tiff[at : at + length] if at + length <= len(tiff) else b""
                if len(raw) == length:
                    entries.setdefault(tag, _Entry(typ, n, raw))
            pos += 12
        next_ifd = 0
        if pos + 4 <= len(tiff):
            (next_ifd,) = struct.unpack_from(endian + "L", tiff, pos)
        return entries, next_ifd

    # -- typed access -------------------------------------------------------------------------

    def entry(self, ifd: str, tag: int) -> _Entry | None:
        return self.ifds[ifd].get(tag)

    def numbers(self, entry: _Entry) -> tuple[Any, ...]:
        """Integers or floats of a numeric entry; (num, den) pairs of a rational one."""
        if entry.type in (_RATIONAL, _SRATIONAL):
            code = "L" if entry.type == _RATIONAL else "l"
            flat = struct.unpack(f"{self.endian}{2 * entry.count}{code}", entry.raw)
            return tuple(zip(flat[0::2], flat[1::2], strict=True))
        scalar = _STRUCT_CODE.get(entry.type)
        if scalar is None:
            return ()
        return struct.unpack(f"{self.endian}{entry.count}{scalar}", entry.raw)

    def text(self, ifd: str, tag: int) -> str | None:
        """A text value up to its first NUL, whitespace-stripped; None if absent or blank."""
        entry = self.entry(ifd, tag)
        if entry is None or entry.type not in _TEXT_TYPES:
            return None
        return _decode_text(entry.raw.split(b"\x00", 1)[0])

    def raw_text(self, ifd: str, tag: int) -> str | None:
        """Like :meth:`text` but not stripped and "" kept (sub-second and offset tags)."""
        entry = self.entry(ifd, tag)
        if entry is None or entry.type != _ASCII:
            return None
        raw = entry.raw.split(b"\x00", 1)[0]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")

    def first_int(self, ifd: str, tag: int) -> int | None:
        """The first value of an integer or rational entry, truncated to int."""
        entry = self.entry(ifd, tag)
        if entry is None or entry.count < 1:
            return None
        value = self.numbers(entry)
        if not value:
            return None
        first = value[0]
        if isinstance(first, tuple):
            num, den = first
            return int(num / den) if den else None
        if isinstance(first, float):
            return int(first) if math.isfinite(first) else None
        return int(first)

    def rationals(self, ifd: str, tag: int) -> list[float] | None:
        """The values of a (signed) rational entry as floats; None if any denominator is 0."""
        entry = self.entry(ifd, tag)
        if entry is None or entry.type not in (_RATIONAL, _SRATIONAL):
            return None
        pairs = self.numbers(entry)
        if any(den == 0 for _, den in pairs):
            return None
        return [float(num) / float(den) for num, den in pairs]

    def single_rational(self, ifd: str, tag: int) -> float | None:
        values = self.rationals(ifd, tag)
        return values[0] if values is not None and len(values) == 1 else None

    # -- the piexif view ----------------------------------------------------------------------

    def piexif_dict(self) -> dict[str, Any]:
        """The structure ``piexif.load`` would return, for the tags piexif knows.

        Pointer and offset tags are left out (``piexif.dump`` writes fresh ones; stale strip
        offsets would dangle). ASCII values keep every byte, including a last character that
        lacks its NUL terminator (piexif would drop it).
        """
        out: dict[str, Any] = {}
        for name in _IFD_NAMES:
            known = piexif.TAGS[name]
            ifd: dict[int, Any] = {}
            for tag, entry in self.ifds[name].items():
                if tag in known and tag not in _POINTER_TAGS:
                    ifd[tag] = self._piexif_value(entry)
            out[name] = ifd
        out["thumbnail"] = self._thumbnail()
        return out

    def _piexif_value(self, entry: _Entry) -> Any:
        if entry.type == _ASCII:
            # piexif.dump appends one NUL: give it the bytes without theirs.
            return entry.raw[:-1] if entry.raw.endswith(b"\x00") else entry.raw
        if entry.type == _UNDEFINED:
            return entry.raw
        values = self.numbers(entry)
        if entry.type in (_RATIONAL, _SRATIONAL) and len(values) == 1:
            return values[0]
        return values[0] if len(values) == 1 else values

    def _thumbnail(self) -> bytes | None:
        offset = self.first_int("1st", _THUMB_OFFSET)
        length = self.first_int("1st", _THUMB_LENGTH)
        if offset is None or length is None or offset <= 0 or length <= 0:
            return None
        if offset + length > len(self.tiff):
            return None
        return self.tiff[offset : offset + length]


_POINTER_TAGS = frozenset(
    {_EXIF_POINTER, _GPS_POINTER, _INTEROP_POINTER, _THUMB_OFFSET, _THUMB_LENGTH}
    | {0x0111, 0x0117, 0x0144, 0x0145}  # StripOffsets/ByteCounts, TileOffsets/ByteCounts
)


def _decode_text(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    text = text.strip()
    return text or None


# --- XMP ----------------------------------------------------------------------------------------

_XMP_NS = {
    "exif": "http://ns.adobe.com/exif/1.0/",
    "tiff": "http://ns.adobe.com/tiff/1.0/",
    "exifEX": "http://cipa.jp/exif/1.0/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "GPano": "http://ns.google.com/photos/1.0/panorama/",
    "aux": "http://ns.adobe.com/exif/1.0/aux/",
}


class _Xmp:
    """The properties of an XMP packet: attributes and simple child elements of every
    ``rdf:Description``, keyed ``prefix:Name`` (later descriptions win)."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    @classmethod
    def parse(cls, packet: bytes | None) -> _Xmp:
        """Parse a packet; anything unreadable gives an empty XMP (XMP is only a fallback).

        Packets declaring a DTD or entities are refused outright: XMP never needs them and they
        are how XML parsers get attacked.
        """
        if not packet:
            return cls({})
        begin = packet.find(b"<x:xmpmeta")
        if begin >= 0:
            end = packet.rfind(b"</x:xmpmeta>", begin)
            packet = packet[begin : end + len(b"</x:xmpmeta>")] if end >= 0 else packet[begin:]
        if b"<!DOCTYPE" in packet or b"<!ENTITY" in packet:
            return cls({})
        try:
            root = ET.fromstring(packet.decode("utf-8"))
        except (ET.ParseError, UnicodeDecodeError, ValueError):
            return cls({})
        names = {uri: prefix for prefix, uri in _XMP_NS.items()}
        values: dict[str, str] = {}

        def key(qname: str) -> str | None:
            if not qname.startswith("{"):
                return None
            uri, _, local = qname[1:].partition("}")
            prefix = names.get(uri)
            return f"{prefix}:{local}" if prefix else None

        for description in root.iter(f"{{{_XMP_NS['rdf']}}}Description"):
            for attr, value in description.attrib.items():
                if (k := key(attr)) is not None:
                    values[k] = value
            for child in description:
                if child.text is not None and (k := key(child.tag)) is not None:
                    values[k] = child.text
        return cls(values)

    def get(self, *names: str) -> str | None:
        for name in names:
            if name in self.values:
                return self.values[name]
        return None

    def get_int(self, *names: str) -> int | None:
        for name in names:
            value = self.values.get(name)
            if value is not None:
                try:
                    return int(value)
                except ValueError:
                    continue
        return None


# --- time parsing -------------------------------------------------------------------------------
#
# A wall-clock time is carried as a datetime in UTC (a placeholder zone, so no naive datetime
# exists anywhere) plus the zone it was actually written in, or None when the file did not say.


@dataclass(frozen=True)
class _Stamp:
    wall: datetime
    tz: tzinfo | None

    def resolve(self, default_tz: tzinfo) -> datetime:
        return self.wall.replace(tzinfo=self.tz or default_tz).astimezone(UTC)


_DATE_RE = re.compile(r"(\d{4})([:-])(\d{1,2})\2(\s?\d{1,2})")
_ADOBE_COORD_RE = re.compile(r"(\d+),(\d{1,3}\.?\d*)([NSWE])")


def _parse_date(text: str) -> datetime | None:
    """``YYYY:MM:DD`` or ``YYYY-MM-DD`` → midnight (placeholder UTC), None if invalid."""
    m = _DATE_RE.fullmatch(text.strip())
    if m is None:
        return None
    try:
        return datetime(int(m[1]), int(m[3]), int(m[4]), tzinfo=UTC)
    except ValueError:
        return None


def _parse_clock(text: str) -> timedelta | None:
    """``H``, ``H:M`` or ``H:M:S[.fff]`` → timedelta (fields beyond the third are ignored)."""
    parts = text.strip().split(":")
    try:
        hours = int(parts[0])
        minutes = int(parts[1]) if len(parts) > 1 else 0
        seconds = float(parts[2]) if len(parts) > 2 else 0.0
        return timedelta(hours=hours, minutes=minutes, seconds=seconds)
    except (ValueError, OverflowError):
        return None


def _fixed_zone(delta: timedelta) -> tzinfo | None:
    day = timedelta(hours=24)
    if delta >= day:
        delta %= day
    elif delta <= -day:
        delta %= -day
    try:
        return timezone(delta)
    except ValueError:
        return None


def _parse_offset(text: str) -> tzinfo | None:
    """``±HH:MM`` (or ``±HHMM``, ``HH:MM``…) → a fixed zone; None if unparseable.

    mapillary_tools reads ``+0200`` as +200 hours (= +8 h modulo a day); here it is +02:00.
    """
    text = text.strip()
    sign = -1 if text.startswith("-") else 1
    body = text[1:] if text[:1] in "+-" else text
    if len(body) == 4 and body.isascii() and body.isdigit():
        body = f"{body[:2]}:{body[2:]}"
    delta = _parse_clock(body)
    return None if delta is None else _fixed_zone(sign * delta)


def _parse_iso(text: str) -> _Stamp | None:
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return _Stamp(dt.replace(tzinfo=UTC), dt.tzinfo)


def _parse_date_and_clock(datestr: str, timestr: str, default: tzinfo | None) -> _Stamp | None:
    """A date and a time of day with an optional ``Z`` or ``±HH:MM`` suffix."""
    day = _parse_date(datestr)
    if day is None:
        return None
    timestr = timestr.strip()
    zone: tzinfo | None
    if timestr.endswith("Z"):
        clock, zone = timestr[:-1], UTC
    else:
        idx = timestr.find("+")
        if idx < 0:
            idx = timestr.find("-")
        if idx >= 0:
            clock, zone = timestr[:idx], _parse_offset(timestr[idx:])
        else:
            clock, zone = timestr, None
    delta = _parse_clock(clock)
    if delta is None:
        return None
    try:
        wall = day + delta
    except OverflowError:
        return None
    return _Stamp(wall, zone or default)


def _parse_timestamp(text: str) -> _Stamp | None:
    """ISO 8601, or ``YYYY:MM:DD HH:MM:SS[.fff][Z|±HH:MM]`` as EXIF writes it."""
    text = text.strip()
    stamp = _parse_iso(text)
    if stamp is not None:
        return stamp
    parts = text.split(maxsplit=2)
    if len(parts) < 2:
        return None
    return _parse_date_and_clock(parts[0], parts[1], None)


def _exif_datetime(text: str, subsec: str | None, offset: str | None) -> _Stamp | None:
    """A DateTime* tag with its SubSecTime* and OffsetTime* companions.

    Sub-seconds replace the fraction of the time (``"5"`` is .5 s, ``"123"`` is .123 s, spaces
    count as zeros); a parseable offset replaces any zone the time carried.
    """
    stamp = _parse_timestamp(text)
    if stamp is None:
        return None
    if subsec is not None:
        digits = subsec.replace(" ", "0").strip()
        digits = (digits + "000000")[:6]
        if digits.isascii() and digits.isdigit():
            stamp = _Stamp(stamp.wall.replace(microsecond=int(digits)), stamp.tz)
    if offset is not None and (zone := _parse_offset(offset)) is not None:
        stamp = _Stamp(stamp.wall, zone)
    return stamp


def _not_epoch_day(stamp: _Stamp | None) -> _Stamp | None:
    """GPS times on 1970-01-01 are a receiver without a fix: treat them as absent."""
    if stamp is None or stamp.wall.date() == date(1970, 1, 1):
        return None
    return stamp


# --- the readings (mapillary_tools ExifReadFromEXIF / ExifReadFromXMP) -------------------------


def _exif_gps_time(exif: _Exif) -> _Stamp | None:
    datestr = exif.text("GPS", _GPS_DATE)
    if datestr is None:
        return None
    day = _parse_date(datestr)
    hms = exif.rationals("GPS", _GPS_TIME)
    if day is None or hms is None or len(hms) < 3:
        return None
    try:
        delta = timedelta(hours=int(hms[0]), minutes=int(hms[1]), seconds=hms[2])
        return _not_epoch_day(_Stamp(day + delta, UTC))
    except (ValueError, OverflowError):
        return None


def _exif_capture_time(exif: _Exif) -> tuple[_Stamp, bool] | None:
    gps = _exif_gps_time(exif)
    if gps is not None:
        return gps, True
    for dt_ifd, dt_tag, subsec_tag, offset_tag in (
        ("Exif", _DATETIME_ORIGINAL, _SUBSEC_TIME_ORIGINAL, _OFFSET_TIME_ORIGINAL),
        ("Exif", _DATETIME_DIGITIZED, _SUBSEC_TIME_DIGITIZED, _OFFSET_TIME_DIGITIZED),
        ("0th", _DATETIME, _SUBSEC_TIME, _OFFSET_TIME),
    ):
        text = exif.raw_text(dt_ifd, dt_tag)
        if text is None:
            continue
        stamp = _exif_datetime(
            text, exif.raw_text("Exif", subsec_tag), exif.raw_text("Exif", offset_tag)
        )
        if stamp is not None:
            return stamp, False
    return None


def _xmp_capture_time(xmp: _Xmp) -> tuple[_Stamp, bool] | None:
    timestr = xmp.get("exif:GPSTimeStamp")
    if timestr:
        gps = _parse_iso(timestr)
        if gps is None:
            datestr = xmp.get("exif:GPSDateStamp")
            if datestr is not None:
                gps = _parse_date_and_clock(datestr, timestr, UTC)
        gps = _not_epoch_day(gps)
        if gps is not None:
            return gps, True
    for prefix in ("Original", "Digitized"):
        text = xmp.get(f"exif:DateTime{prefix}")
        if text is None:
            continue
        stamp = _exif_datetime(
            text, xmp.get(f"exif:SubsecTime{prefix}"), xmp.get(f"exif:OffsetTime{prefix}")
        )
        if stamp is not None:
            return stamp, False
    return None


def _ref_letter(exif: _Exif, tag: int) -> str:
    text = exif.text("GPS", tag)
    return text[0].upper() if text else ""


def _exif_lat_lon(exif: _Exif) -> tuple[float, float] | None:
    lat = exif.rationals("GPS", _GPS_LAT)
    lon = exif.rationals("GPS", _GPS_LON)
    if lat is None or lon is None or len(lat) < 3 or len(lon) < 3:
        return None
    lat_deg = lat[0] + lat[1] / 60 + lat[2] / 3600
    lon_deg = lon[0] + lon[1] / 60 + lon[2] / 3600
    if _ref_letter(exif, _GPS_LAT_REF) == "S":
        lat_deg = -lat_deg
    if _ref_letter(exif, _GPS_LON_REF) == "W":
        lon_deg = -lon_deg
    return lat_deg, lon_deg


def _xmp_coordinate(value: str | None, ref: str | None) -> float | None:
    if value is None:
        return None
    sign = {None: 1, "N": 1, "E": 1, "S": -1, "W": -1}.get(ref.strip().upper() if ref else None)
    if sign is not None:
        try:
            return float(value) * sign
        except ValueError:
            pass
    m = _ADOBE_COORD_RE.match(value)
    if m is None:
        return None
    degrees = int(m[1]) + float(m[2]) / 60
    return -degrees if m[3] in "SW" else degrees


def _xmp_lat_lon(xmp: _Xmp) -> tuple[float, float] | None:
    lat = _xmp_coordinate(xmp.get("exif:GPSLatitude"), xmp.get("exif:GPSLatitudeRef"))
    lon = _xmp_coordinate(xmp.get("exif:GPSLongitude"), xmp.get("exif:GPSLongitudeRef"))
    if lat is None or lon is None:
        return None
    return lat, lon


def _exif_altitude(exif: _Exif) -> float | None:
    entry = exif.entry("GPS", _GPS_ALT)
    if entry is None or entry.count != 1 or entry.type not in (_RATIONAL, _SRATIONAL):
        return None
    num, den = exif.numbers(entry)[0]
    if den == 0:
        return None
    if entry.type == _RATIONAL and num >= 2**31:
        num -= 2**32  # a signed value written into an unsigned rational
    altitude = float(num) / float(den)
    return -abs(altitude) if exif.first_int("GPS", _GPS_ALT_REF) == 1 else altitude


def _xmp_altitude(xmp: _Xmp) -> float | None:
    value = xmp.get("exif:GPSAltitude")
    if value is None:
        return None
    num, slash, den = value.strip().partition("/")
    try:
        altitude = float(num) / float(den) if slash else float(num)
    except (ValueError, ZeroDivisionError):
        return None
    return -abs(altitude) if (xmp.get("exif:GPSAltitudeRef") or "").strip() == "1" else altitude


def _sanitize_serial(text: str | None) -> str | None:
    cleaned = "".join(c for c in text if c.isalnum()) if text else ""
    return cleaned or None


def _camera_uuid(body: str | None, lens: str | None) -> str | None:
    parts = [p for p in (_sanitize_serial(body), _sanitize_serial(lens)) if p]
    return "_".join(parts) or None


def _positive(value: int | None) -> int | None:
    return value if value is not None and value > 0 else None


class _Reading:
    """One file's EXIF and (parsed only when needed, like mapillary_tools) XMP."""

    def __init__(self, data: bytes, name: str) -> None:
        self.data = data
        self.name = name
        self.problem: str | None = None
        tiff = jpeg.exif_tiff(data, name)
        self.exif: _Exif | None = None
        if tiff is not None:
            try:
                self.exif = _Exif(tiff)
            except _BadTiff as exc:
                self.problem = str(exc)
        self._xmp: _Xmp | None = None

    @property
    def xmp(self) -> _Xmp:
        if self._xmp is None:
            self._xmp = _Xmp.parse(jpeg.xmp_packet(self.data, self.name))
        return self._xmp

    def exif_text(self, *where: tuple[str, int]) -> str | None:
        if self.exif is None:
            return None
        for ifd, tag in where:
            text = self.exif.text(ifd, tag)
            if text is not None:
                return text
        return None

    def exif_int(self, *where: tuple[str, int]) -> int | None:
        if self.exif is None:
            return None
        for ifd, tag in where:
            value = _positive(self.exif.first_int(ifd, tag))
            if value is not None:
                return value
        return None

    def lat_lon(self) -> tuple[float, float] | None:
        if self.exif is not None and (value := _exif_lat_lon(self.exif)) is not None:
            return value
        return _xmp_lat_lon(self.xmp)

    def capture_time(self) -> tuple[_Stamp, bool] | None:
        if self.exif is not None and (value := _exif_capture_time(self.exif)) is not None:
            return value
        return _xmp_capture_time(self.xmp)

    def altitude(self) -> float | None:
        if self.exif is not None and (value := _exif_altitude(self.exif)) is not None:
            return value
        return _xmp_altitude(self.xmp)

    def heading(self) -> float | None:
        if self.exif is None:
            return None
        for tag in (_GPS_IMG_DIRECTION, _GPS_TRACK):
            value = self.exif.single_rational("GPS", tag)
            if value is not None:
                return value
        return None

    def make(self) -> str | None:
        return self.exif_text(("0th", _MAKE), ("Exif", _MAKE), ("Exif", _LENS_MAKE)) or (
            _strip(self.xmp.get("tiff:Make", "exifEX:LensMake"))
        )

    def model(self) -> str | None:
        return self.exif_text(("0th", _MODEL), ("Exif", _MODEL), ("Exif", _LENS_MODEL)) or (
            _strip(self.xmp.get("tiff:Model", "exifEX:LensModel"))
        )

    def size(self) -> tuple[int | None, int | None]:
        width = self.exif_int(("0th", _IMAGE_WIDTH), ("Exif", _PIXEL_X)) or _positive(
            self.xmp.get_int(
                "exif:PixelXDimension",
                "GPano:FullPanoWidthPixels",
                "GPano:CroppedAreaImageWidthPixels",
            )
        )
        height = self.exif_int(("0th", _IMAGE_LENGTH), ("Exif", _PIXEL_Y)) or _positive(
            self.xmp.get_int(
                "exif:PixelYDimension",
                "GPano:FullPanoHeightPixels",
                "GPano:CroppedAreaImageHeightPixels",
            )
        )
        if width is None or height is None:
            frame = jpeg.frame_size(self.data, self.name)
            if frame is not None:
                width = width or frame[0]
                height = height or frame[1]
        return width, height

    def orientation(self) -> int:
        value = self.exif.first_int("0th", _ORIENTATION) if self.exif else None
        return value if value is not None and 1 <= value <= 8 else 1

    def camera_uuid(self) -> str | None:
        uuid = _camera_uuid(
            self.exif_text(("Exif", _BODY_SERIAL), ("Exif", _SERIAL), ("0th", _BODY_SERIAL)),
            self.exif_text(("Exif", _LENS_SERIAL), ("0th", _LENS_SERIAL)),
        )
        if uuid is not None:
            return uuid
        xmp = self.xmp
        return _camera_uuid(
            xmp.get(
                "exif:SerialNumber",
                "exif:BodySerialNumber",
                "exif:CameraSerialNumber",
                "exifEX:SerialNumber",
                "exifEX:BodySerialNumber",
                "aux:SerialNumber",
            ),
            xmp.get("exif:LensSerialNumber", "exifEX:LensSerialNumber", "aux:LensSerialNumber"),
        )


def _strip(text: str | None) -> str | None:
    if text is None:
        return None
    return text.strip() or None


@dataclass(frozen=True)
class ExifFacts:
    """Everything :func:`read_exif_facts` found, each field None when the file does not say.

    ``capture_time`` is in UTC; ``exif_problem`` says why an EXIF block present in the file
    could not be read at all (None when it was read or there is none).
    """

    capture_time: datetime | None
    gps_time_used: bool
    lat: float | None
    lon: float | None
    alt: float | None
    heading: float | None
    make: str | None
    model: str | None
    width: int | None
    height: int | None
    orientation: int
    camera_uuid: str | None
    exif_problem: str | None


def read_exif_facts(data: bytes, name: str, *, default_tz: tzinfo) -> ExifFacts:
    """Read what a JPEG says about itself, without requiring a position or a time.

    For images that a GPX track will geotag, and for :func:`read_image_metadata`. The rules
    follow mapillary_tools 0.14.7 (see the module docstring for the deliberate differences):

    * position: EXIF GPSLatitude/Longitude (three rationals each, any zero denominator makes
      them unusable) with their N/S/E/W references, else XMP ``exif:GPSLatitude`` (decimal or
      Adobe ``DD,MM.mmmN``); the values are returned as read, not range-checked;
    * capture time: GPS date + time stamp (UTC) unless the date is 1970-01-01 or invalid; else
      DateTimeOriginal + SubSecTimeOriginal + OffsetTimeOriginal; else the Digitized trio; else
      DateTime + SubSecTime + OffsetTime; else the same from XMP. A time written without an
      offset is taken to be in ``default_tz``;
    * altitude: GPSAltitude with GPSAltitudeRef, else XMP; heading: GPSImgDirection, else
      GPSTrack (no XMP); make/model: Make/Model, else LensMake/LensModel, else XMP;
      size: ImageWidth/Length, else PixelX/YDimension, else XMP, else the SOF header;
      orientation: Orientation if 1..8, else 1.

    Raise CorruptMediaError naming ``name`` if the file is not a complete JPEG. No other
    exception escapes, whatever the bytes.
    """
    try:
        return _read_exif_facts(data, name, default_tz)
    except ItemError:
        raise
    except Exception as exc:  # the contract: bad bytes never surface as anything but ItemError
        raise CorruptMediaError(f"{name}: unreadable metadata ({exc!r})") from exc


def _read_exif_facts(data: bytes, name: str, default_tz: tzinfo) -> ExifFacts:
    jpeg.check_jpeg(data, name)
    reading = _Reading(data, name)
    position = reading.lat_lon()
    found = reading.capture_time()
    capture_time = None
    if found is not None:
        with contextlib.suppress(OverflowError, ValueError):  # beyond year 1..9999 in UTC
            capture_time = found[0].resolve(default_tz)
    width, height = reading.size()
    return ExifFacts(
        capture_time=capture_time,
        gps_time_used=capture_time is not None and found is not None and found[1],
        lat=position[0] if position else None,
        lon=position[1] if position else None,
        alt=reading.altitude(),
        heading=reading.heading(),
        make=reading.make(),
        model=reading.model(),
        width=width,
        height=height,
        orientation=reading.orientation(),
        camera_uuid=reading.camera_uuid(),
        exif_problem=reading.problem,
    )


def read_image_metadata(data: bytes, name: str, *, default_tz: tzinfo) -> ImageMetadata:
    """Read a geotagged JPEG's position, capture time and camera facts for Mapillary.

    Given the file's bytes and a name for messages, return its :class:`ImageMetadata` with
    ``capture_time`` in UTC; a time written without an offset is taken to be in
    ``default_tz``. Which tags are read, and in which order, is described in
    :func:`read_exif_facts`.

    Raise CorruptMediaError if the file is not a complete JPEG; NoGpsError if it has no usable
    position (``no GPS position in EXIF``; out of range or NaN; reason ``null_island`` for
    exactly (0, 0)); NoTimeError if it has no usable capture time. Messages start with
    ``name``. No other exception escapes, whatever the bytes.
    """
    facts = read_exif_facts(data, name, default_tz=default_tz)
    lat, lon = facts.lat, facts.lon
    if lat is None or lon is None:
        why = f" (EXIF unreadable: {facts.exif_problem})" if facts.exif_problem else ""
        raise NoGpsError(f"{name}: no GPS position in EXIF{why}")
    if not (math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180):
        raise NoGpsError(f"{name}: GPS position out of range ({lat}, {lon})")
    if lat == 0 and lon == 0:
        raise NoGpsError(
            f"{name}: GPS position is (0, 0), a receiver without a fix", reason="null_island"
        )
    if facts.capture_time is None:
        raise NoTimeError(
            f"{name}: no capture time in EXIF (no valid GPS date/time, "
            "DateTimeOriginal, DateTimeDigitized or DateTime)"
        )
    return ImageMetadata(
        capture_time=facts.capture_time,
        lat=lat,
        lon=lon,
        alt=facts.alt,
        heading=facts.heading,
        make=facts.make,
        model=facts.model,
        width=facts.width,
        height=facts.height,
        orientation=facts.orientation,
        gps_time_used=facts.gps_time_used,
        camera_uuid=facts.camera_uuid,
    )


# --- writing ------------------------------------------------------------------------------------

#: The tags :func:`read_image_metadata` consults (plus our ImageDescription): what the last,
#: minimal rewrite keeps. The whole GPS IFD counts as essential.
_ESSENTIAL: dict[str, frozenset[int]] = {
    "0th": frozenset(
        {_IMAGE_DESCRIPTION, _MAKE, _MODEL, _ORIENTATION, _DATETIME, _IMAGE_WIDTH, _IMAGE_LENGTH}
        | {_BODY_SERIAL, _LENS_SERIAL}
    ),
    "Exif": frozenset(
        {_DATETIME_ORIGINAL, _SUBSEC_TIME_ORIGINAL, _OFFSET_TIME_ORIGINAL}
        | {_DATETIME_DIGITIZED, _SUBSEC_TIME_DIGITIZED, _OFFSET_TIME_DIGITIZED}
        | {_SUBSEC_TIME, _OFFSET_TIME, _PIXEL_X, _PIXEL_Y}
        | {_LENS_MAKE, _LENS_MODEL, _BODY_SERIAL, _LENS_SERIAL}
    ),
    "Interop": frozenset(),
    "1st": frozenset(),
}


def _is_essential(ifd: str, tag: int) -> bool:
    return ifd == "GPS" or tag in _ESSENTIAL.get(ifd, frozenset())


def _empty_exif() -> dict[str, Any]:
    return {**{name: {} for name in _IFD_NAMES}, "thumbnail": None}


def _dump(exif: dict[str, Any]) -> bytes:
    return bytes(piexif.dump(exif))


def _encodable(ifd: str, tag: int, value: Any) -> bool:
    probe = _empty_exif()
    probe[ifd][tag] = value
    try:
        _dump(probe)
    except Exception:  # piexif raises ValueError, TypeError, struct.error… on bad values
        return False
    return True


def _value_size(value: Any) -> int:
    if isinstance(value, bytes | str):
        return len(value)
    if isinstance(value, tuple):
        return sum(_value_size(v) for v in value)
    return 4


def _without_thumbnail(exif: dict[str, Any]) -> dict[str, Any]:
    # piexif cannot re-dump thumbnails that are not JPEG or are over 64 kB
    # (https://github.com/hMatoba/Piexif/issues/30); mapillary_tools drops them too.
    return {**exif, "1st": {}, "thumbnail": None}


def _without_unencodable(exif: dict[str, Any], *, keep_essential: bool) -> dict[str, Any]:
    """Drop the tags piexif refuses to encode, probed one by one.

    These are tags whose stored type does not fit piexif's table, e.g. text in a RATIONAL
    tag or a negative SRATIONAL in a RATIONAL tag (https://github.com/hMatoba/Piexif/issues/95;
    mapillary_tools #662, AsShotNeutral). With ``keep_essential``, essential tags are kept even
    when refused (as mapillary_tools keeps its TRUSTED_TAGS), so the dump still fails and the
    caller falls back to the minimal EXIF.
    """
    out = dict(exif)
    for name in _IFD_NAMES:
        out[name] = {
            t: v
            for t, v in exif[name].items()
            if (keep_essential and _is_essential(name, t)) or _encodable(name, t, v)
        }
    return out


def _without_largest(exif: dict[str, Any], overflow: int) -> dict[str, Any]:
    """Drop the largest non-essential tags until about ``overflow`` bytes are gone."""
    candidates = sorted(
        (
            (_value_size(v), name, t)
            for name in _IFD_NAMES
            for t, v in exif[name].items()
            if not _is_essential(name, t)
        ),
        reverse=True,
    )
    out = {**exif, **{name: dict(exif[name]) for name in _IFD_NAMES}}
    removed = 0
    for size, name, tag in candidates:
        if removed >= overflow:
            break
        del out[name][tag]
        removed += size + 12
    return out


def _essentials_only(exif: dict[str, Any]) -> dict[str, Any]:
    out = _empty_exif()
    for name in _IFD_NAMES:
        out[name] = {t: v for t, v in exif[name].items() if _is_essential(name, t)}
    return out


def _try_dump(exif: dict[str, Any]) -> bytes | None:
    try:
        return _dump(exif)
    except Exception:  # piexif raises ValueError, TypeError, struct.error, its own errors
        return None


def _fits(payload: bytes | None) -> bool:
    return payload is not None and len(payload) <= jpeg.MAX_SEGMENT_PAYLOAD


def _dump_degrading(exif: dict[str, Any], name: str) -> bytes:
    """``piexif.dump`` with fallbacks, each keeping as much of the original as it can.

    1. everything as read;
    2. without the thumbnail — piexif refuses thumbnails that are not JPEG or exceed 64 kB
       (https://github.com/hMatoba/Piexif/issues/30), and it may be what makes EXIF too big;
    3. also without the non-essential tags piexif cannot encode;
    (2 and 3: while the result is bigger than a JPEG segment, drop the largest non-essential
    tags, e.g. a maker note grown past the limit by the added description;)
    4. the essential tags (those :func:`read_exif_facts` reads, the whole GPS IFD, and the
       description) that piexif can encode — when an essential tag itself is unencodable.

    Raise CorruptMediaError naming ``name`` if not even step 4 fits.
    """
    no_thumbnail = _without_thumbnail(exif)
    for step, candidate in enumerate(
        (exif, no_thumbnail, _without_unencodable(no_thumbnail, keep_essential=True)), 1
    ):
        payload = _try_dump(candidate)
        while step > 1 and payload is not None and not _fits(payload):
            smaller = _without_largest(candidate, len(payload) - jpeg.MAX_SEGMENT_PAYLOAD)
            if smaller == candidate:
                break
            candidate, payload = smaller, _try_dump(smaller)
        if payload is not None and _fits(payload):
            return payload
    minimal = _without_unencodable(_essentials_only(exif), keep_essential=False)
    payload = _try_dump(minimal)
    if payload is None or not _fits(payload):
        size = "unencodable" if payload is None else f"{len(payload)} bytes"
        raise CorruptMediaError(f"{name}: cannot write EXIF, even its essential tags ({size})")
    return payload


def with_description(data: bytes, description: dict[str, Any], name: str) -> bytes:
    """Return the JPEG with EXIF ImageDescription set to ``description`` as compact JSON.

    The JSON is ``json.dumps(description, sort_keys=True, separators=(",", ":"))``, what
    mapillary_tools writes. All other EXIF tags piexif knows are kept; only the EXIF APP1
    segment changes (:func:`daemon.media.jpeg.replace_exif_segment`), so pixels and the other
    segments stay byte-identical. A file without EXIF, or with an EXIF block that is not a
    readable TIFF structure, gets a fresh one holding only the description. When piexif cannot
    encode what was read, the EXIF is degraded step by step (see :func:`_dump_degrading`);
    like mapillary_tools, maker notes are copied as bytes, so offsets inside them may go stale.

    Raise CorruptMediaError naming ``name`` if ``data`` is not a complete JPEG or no EXIF can
    be written; TypeError if ``description`` is not JSON-serialisable (a programming error).
    """
    return description_splice(data, description, name).apply(data)


def description_splice(data: bytes, description: dict[str, Any], name: str) -> jpeg.Splice:
    """What :func:`with_description` changes in ``data``, as a splice; same contract."""
    text = json.dumps(description, sort_keys=True, separators=(",", ":"))

    def edit(exif: dict[str, Any]) -> None:
        exif["0th"] = {**exif["0th"], _IMAGE_DESCRIPTION: text}

    return exif_rewrite_splice(data, name, edit)


def rewrite_exif(data: bytes, name: str, edit: Callable[[dict[str, Any]], None]) -> bytes:
    """Return the JPEG with its EXIF changed by ``edit`` (which mutates a piexif-style dict
    with the IFDs ``0th``, ``Exif``, ``GPS``, ``1st``, ``Interop`` and ``thumbnail``).

    Same guarantees as :func:`with_description`: only the EXIF segment changes, unreadable or
    unencodable EXIF is degraded step by step, and every failure is a CorruptMediaError.
    """
    return exif_rewrite_splice(data, name, edit).apply(data)


def exif_rewrite_splice(
    data: bytes, name: str, edit: Callable[[dict[str, Any]], None]
) -> jpeg.Splice:
    """What :func:`rewrite_exif` changes in ``data``, as a splice; same contract."""
    try:
        jpeg.check_jpeg(data, name)
        tiff = jpeg.exif_tiff(data, name)
        exif = _empty_exif()
        if tiff is not None:
            with contextlib.suppress(_BadTiff):  # unreadable: replaced by a fresh EXIF
                exif = _Exif(tiff).piexif_dict()
        edit(exif)
        payload = _dump_degrading(exif, name)
        return jpeg.exif_splice(data, payload, name=name)
    except ItemError:
        raise
    except Exception as exc:  # the contract: bad bytes never surface as anything but ItemError
        raise CorruptMediaError(f"{name}: cannot write EXIF ({exc!r})") from exc
