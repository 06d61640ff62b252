"""A small, strict ISO base media file (MP4) / QuickTime box reader over a binary file object.

An MP4 or MOV file is a sequence of *boxes* (QuickTime says *atoms*): a 32-bit big-endian size
that counts the whole box, a four-character type, then the payload. A size of 1 means a 64-bit
``largesize`` follows the type; a size of 0 means "to the end of the file" (top level only;
inside a QuickTime container a zero size field is the optional terminator). Container boxes
(``moov``, ``trak``, ``mdia``, ``minf``, ``stbl``, ``udta``, ``edts``, ``dinf``, ``meta`` …) hold
further boxes; ``meta`` is a full box (4 bytes version/flags before its children) in ISO files
and a plain container in QuickTime files, told apart by whether ``hdlr`` follows at once.

What is read:

* the top-level layout, to tell a complete file from a **power-cut recording**: a dashcam
  writes ``mdat`` as it records and the ``moov`` index only when it stops, so a file whose
  recorder lost power has no ``moov`` and an ``mdat`` that runs past the end of the file (or a
  size field that was never patched). Those files get
  ``CorruptMediaError(reason="truncated_mp4")`` with a message that says what is missing;
* ``mvhd`` / ``tkhd`` / ``mdhd`` (timescale, duration, creation time), ``hdlr`` (handler type),
  ``stsd`` (the format of each sample entry), ``elst`` (edit list);
* the sample table (``stts``, ``stsz``/``stz2``, ``stsc``, ``stco``/``co64``, ``stss``) as a
  stream of :class:`Sample` (file offset, size, decode time, duration), read in blocks from the
  file so that a multi-GB video with a six-figure sample count costs no more memory than a
  small one;
* a QuickTime location: ``udta/©xyz`` and ``meta/keys`` + ``ilst``
  ``com.apple.quicktime.location.ISO6709`` (ISO 6709 strings), plus the Apple/Android
  make, model and creation-date keys when present.

Contract: every function here that takes a file object raises only
:class:`~daemon.errors.ItemError` subclasses for anything the file contains —
:class:`~daemon.errors.CorruptMediaError` (reason ``corrupt_media`` for a malformed structure,
``truncated_mp4`` for a file cut short) naming the file, or ``ItemError(reason="unreadable")``
when the operating system cannot read it. Sizes and counts from the file are checked against
the box that holds them before anything is allocated, so a hostile size field cannot make
this module read gigabytes or loop for long. The file object must be seekable; the module
seeks before every read, so several readers may interleave on one file object.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import BinaryIO, Literal

from daemon.errors import CorruptMediaError, ItemError
from daemon.geo.track import Track, TrackPoint

__all__ = [
    "CONTAINERS",
    "MAX_PAYLOAD_READ",
    "MAX_SAMPLES",
    "TRUNCATED",
    "Box",
    "Clock",
    "Edit",
    "Location",
    "MovieHeader",
    "Mp4Info",
    "Sample",
    "SampleTables",
    "TimedPoint",
    "TimedTrack",
    "TrackInfo",
    "child_boxes",
    "file_size",
    "iter_boxes",
    "iter_samples",
    "parse_iso6709",
    "probe",
    "read_payload",
    "read_sample",
    "timed_track",
]

#: The reason code of a file that was cut short (a recorder that lost power).
TRUNCATED = "truncated_mp4"
#: Largest box payload or sample this module reads into memory at once (metadata only: sample
#: tables are streamed and media samples are never read here).
MAX_PAYLOAD_READ = 64 * 1024 * 1024
#: Most samples :func:`iter_samples` walks in one track (metadata tracks have thousands; a
#: count beyond this is a hostile or broken table, refused rather than walked for minutes).
MAX_SAMPLES = 1 << 26
#: Boxes whose payload is a list of boxes (``meta`` is handled apart, see the module docstring).
CONTAINERS = frozenset(
    {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"udta", b"edts", b"dinf", b"mvex", b"tref"}
)
_MAC_EPOCH = datetime(1904, 1, 1, tzinfo=UTC)
_TABLE_BLOCK = 4096  # table entries read per file access
_LOCATION_KEY = "com.apple.quicktime.location.ISO6709"
_TEXT_KEYS = {
    "com.apple.quicktime.make": "make",
    "com.apple.quicktime.model": "model",
    "com.apple.quicktime.software": "software",
    "com.apple.quicktime.creationdate": "creationdate",
    "com.android.manufacturer": "make",
    "com.android.model": "model",
    "com.android.version": "software",
}
_UDTA_TEXT = {b"\xa9mak": "make", b"\xa9mod": "model", b"\xa9swr": "software"}


# --- file access -------------------------------------------------------------------------------


def _unreadable(name: str, exc: OSError) -> ItemError:
    return ItemError(f"{name}: cannot read: {exc.strerror or exc}", reason="unreadable")


def file_size(fileobj: BinaryIO, name: str) -> int:
    """The size of the file behind ``fileobj`` (it is left positioned at its end)."""
    try:
        return fileobj.seek(0, 2)
    except OSError as exc:
        raise _unreadable(name, exc) from exc


def _read_at(fileobj: BinaryIO, name: str, offset: int, length: int) -> bytes:
    """Exactly ``length`` bytes at ``offset``; fewer available is a truncated file."""
    try:
        fileobj.seek(offset)
        data = fileobj.read(length)
    except OSError as exc:
        raise _unreadable(name, exc) from exc
    except (ValueError, OverflowError) as exc:  # a closed file, an offset beyond any int64
        raise CorruptMediaError(f"{name}: cannot read at offset {offset}: {exc}") from exc
    if len(data) != length:
        raise CorruptMediaError(
            f"{name}: the file ends at offset {offset + len(data)}, "
            f"{length - len(data)} byte(s) short of data expected at {offset}..{offset + length}",
            reason=TRUNCATED,
        )
    return data


def _label(box_type: bytes) -> str:
    """A four-character code for messages: ``'moov'``, ``'©xyz'``, ``'\\x00\\x00\\x00\\x00'``."""
    text = box_type.decode("latin-1")
    if all(ch.isprintable() for ch in text):
        return f"'{text}'"
    return repr(box_type)[1:]


# --- boxes -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Box:
    """One box: ``type`` at file ``offset``, ``size`` bytes in all, ``header_size`` of them header.

    ``size`` is resolved: a top-level size 0 ("to the end of the file") and a 64-bit largesize
    are already turned into the real byte count; ``open_ended`` tells the first case.
    """

    type: bytes
    offset: int
    size: int
    header_size: int
    open_ended: bool = False

    @property
    def data_offset(self) -> int:
        """File offset of the first payload byte."""
        return self.offset + self.header_size

    @property
    def data_size(self) -> int:
        """Payload bytes (the size without the header)."""
        return self.size - self.header_size

    @property
    def end(self) -> int:
        """File offset just past the box."""
        return self.offset + self.size

    @property
    def label(self) -> str:
        """The type for messages, e.g. ``'mdat'``."""
        return _label(self.type)


def iter_boxes(
    fileobj: BinaryIO,
    name: str,
    start: int,
    end: int,
    *,
    parent: Box | None = None,
) -> Iterator[Box]:
    """The boxes laid end to end in ``[start, end)`` of the file, in order.

    ``parent`` is the enclosing box (``None`` for the top level, where ``end`` must be the file
    size). Rules:

    * top level: a box whose declared size runs past the end of the file, or a header cut off
      by the end of the file, is ``CorruptMediaError(reason="truncated_mp4")``; size 0 means
      the box runs to the end of the file; trailing zero bytes (fewer than a header) are
      padding;
    * inside a container: a child that runs past its parent's end is ``corrupt_media``; a zero
      size field (QuickTime's terminator) or fewer than 8 trailing bytes end the list;
    * anywhere: a size smaller than the header is ``corrupt_media``.
    """
    where = f"inside {parent.label} at offset {parent.offset}" if parent else "at the top level"
    pos = start
    while pos < end:
        remaining = end - pos
        if remaining < 8:
            if parent is not None:
                return  # QuickTime pads some containers with a 4-byte zero terminator
            tail = _read_at(fileobj, name, pos, remaining)
            if tail.strip(b"\x00"):
                raise CorruptMediaError(
                    f"{name}: the file ends inside a box header at offset {pos} "
                    f"({remaining} of at least 8 header bytes)",
                    reason=TRUNCATED,
                )
            return
        size32, box_type = struct.unpack(">I4s", _read_at(fileobj, name, pos, 8))
        header_size = 8
        if size32 == 1:
            if remaining < 16:
                if parent is None:
                    raise CorruptMediaError(
                        f"{name}: the file ends inside the 64-bit header of box "
                        f"{_label(box_type)} at offset {pos}",
                        reason=TRUNCATED,
                    )
                raise CorruptMediaError(
                    f"{name}: box {_label(box_type)} at offset {pos} {where} has a 64-bit size "
                    "field that does not fit in its parent"
                )
            (size,) = struct.unpack(">Q", _read_at(fileobj, name, pos + 8, 8))
            header_size = 16
        elif size32 == 0:
            if parent is not None:
                return  # a zero size field ends a QuickTime atom list
            size = remaining
        else:
            size = size32
        if box_type == b"uuid":
            header_size += 16  # the extended type
        if size < header_size:
            raise CorruptMediaError(
                f"{name}: box {_label(box_type)} at offset {pos} {where} declares {size} "
                f"byte(s), less than its own {header_size}-byte header"
            )
        if size > remaining:
            if parent is None:
                raise CorruptMediaError(
                    f"{name}: box {_label(box_type)} at offset {pos} declares {size} bytes but "
                    f"the file ends {remaining} bytes after its start ({size - remaining} byte(s) "
                    "missing): the file was cut short",
                    reason=TRUNCATED,
                )
            raise CorruptMediaError(
                f"{name}: box {_label(box_type)} at offset {pos} declares {size} bytes, "
                f"running {size - remaining} bytes past the end of its parent {where}"
            )
        yield Box(box_type, pos, size, header_size, open_ended=size32 == 0)
        pos += size


def _meta_children_start(fileobj: BinaryIO, name: str, box: Box) -> int:
    """Where the children of a ``meta`` box start: after version/flags unless QuickTime style."""
    if box.data_size >= 8 and _read_at(fileobj, name, box.data_offset + 4, 4) == b"hdlr":
        return box.data_offset  # QuickTime: no version/flags
    return box.data_offset + 4


def child_boxes(fileobj: BinaryIO, name: str, box: Box) -> Iterator[Box]:
    """The children of a container box (``meta`` in either its ISO or QuickTime form)."""
    start = _meta_children_start(fileobj, name, box) if box.type == b"meta" else box.data_offset
    yield from iter_boxes(fileobj, name, min(start, box.end), box.end, parent=box)


def read_payload(fileobj: BinaryIO, name: str, box: Box, *, limit: int = MAX_PAYLOAD_READ) -> bytes:
    """The payload of ``box``; ``corrupt_media`` if it is larger than ``limit`` bytes."""
    if box.data_size > limit:
        raise CorruptMediaError(
            f"{name}: box {box.label} at offset {box.offset} has a {box.data_size}-byte payload, "
            f"more than the {limit} bytes this reader accepts for it"
        )
    return _read_at(fileobj, name, box.data_offset, box.data_size)


def _first(boxes: Iterator[Box] | tuple[Box, ...], box_type: bytes) -> Box | None:
    for box in boxes:
        if box.type == box_type:
            return box
    return None


# --- headers -----------------------------------------------------------------------------------


def _mac_time(seconds: int) -> datetime | None:
    """Seconds since 1904-01-01 UTC as a datetime; 0 (never set) and absurd values give None."""
    if seconds <= 0:
        return None
    try:
        return _MAC_EPOCH + timedelta(seconds=seconds)
    except OverflowError:
        return None


def _full_box(fileobj: BinaryIO, name: str, box: Box, limit: int = 4096) -> tuple[int, int, bytes]:
    """(version, flags, rest of the payload) of a full box whose payload is small."""
    data = read_payload(fileobj, name, box, limit=limit)
    if len(data) < 4:
        raise CorruptMediaError(
            f"{name}: box {box.label} at offset {box.offset} is too short for a full box"
        )
    return data[0], int.from_bytes(data[1:4], "big"), data[4:]


def _unpack(fmt: str, data: bytes, offset: int, name: str, box: Box) -> tuple[int, ...]:
    try:
        return struct.unpack_from(fmt, data, offset)
    except struct.error as exc:
        raise CorruptMediaError(
            f"{name}: box {box.label} at offset {box.offset} is too short "
            f"({box.data_size} payload bytes)"
        ) from exc


def _time_header(fileobj: BinaryIO, name: str, box: Box) -> tuple[int, int, int, int]:
    """(creation, modification, timescale, duration) of an ``mvhd`` or ``mdhd``."""
    version, _flags, body = _full_box(fileobj, name, box)
    if version not in (0, 1):
        raise CorruptMediaError(
            f"{name}: {box.label} at offset {box.offset} has unknown version {version}"
        )
    creation, modification, timescale, duration = _unpack(
        ">QQIQ" if version == 1 else ">IIII", body, 0, name, box
    )
    return creation, modification, timescale, duration


@dataclass(frozen=True, slots=True)
class MovieHeader:
    """``mvhd``: the movie timescale (ticks per second), duration in those ticks, times (UTC)."""

    timescale: int
    duration: int
    creation_time: datetime | None
    modification_time: datetime | None

    @property
    def duration_s(self) -> float | None:
        """The duration in seconds (None when the timescale is 0)."""
        return self.duration / self.timescale if self.timescale else None


@dataclass(frozen=True, slots=True)
class Edit:
    """One ``elst`` entry: ``segment_duration`` in movie ticks, ``media_time`` in media ticks
    (-1 = an empty edit, a gap), and the playback rate."""

    segment_duration: int
    media_time: int
    rate: float


@dataclass(frozen=True, slots=True)
class SampleTables:
    """Where a track's sample table boxes are (``None`` for the ones it lacks)."""

    stsd: Box | None = None
    stts: Box | None = None
    stsz: Box | None = None
    stz2: Box | None = None
    stsc: Box | None = None
    stco: Box | None = None
    co64: Box | None = None
    stss: Box | None = None


_TABLE_NAMES = frozenset(f.name for f in fields(SampleTables))


@dataclass(frozen=True, slots=True)
class TrackInfo:
    """One ``trak``.

    ``handler`` is the ``hdlr`` handler type (``vide``, ``soun``, ``meta``, ``camm``, ``text`` …;
    empty when missing), ``formats`` the four-character codes of its sample entries in ``stsd``
    order (``avc1``, ``mp4a``, ``gpmd``, ``camm`` …), ``timescale`` and ``duration`` come from
    ``mdhd`` (media ticks), ``sample_count`` from ``stsz``/``stz2``.
    """

    index: int
    track_id: int
    handler: str
    handler_name: str
    formats: tuple[str, ...]
    timescale: int
    duration: int
    sample_count: int
    creation_time: datetime | None
    edits: tuple[Edit, ...]
    tables: SampleTables = field(repr=False)
    box: Box = field(repr=False)

    @property
    def duration_s(self) -> float | None:
        """The media duration in seconds (None when the timescale is 0)."""
        return self.duration / self.timescale if self.timescale else None


@dataclass(frozen=True, slots=True)
class Location:
    """A single position a QuickTime/MP4 file carries, and which tag it came from."""

    lat: float
    lon: float
    alt: float | None
    tag: str  # "udta ©xyz" or "keys com.apple.quicktime.location.ISO6709"
    text: str  # the ISO 6709 string as written


@dataclass(frozen=True)
class Mp4Info:
    """What :func:`probe` found.

    ``truncated`` is None for a complete file, else the message saying what is missing (only
    set when :func:`probe` is called with ``allow_truncated=True``; otherwise it raises).
    ``tags`` holds text metadata found in ``udta``/``keys``: ``make``, ``model``,
    ``software``, ``creationdate`` (as written). ``top_level`` and ``udta`` list the boxes at
    the top of the file and in ``moov/udta``, for the readers of vendor boxes.
    """

    name: str
    file_size: int
    major_brand: str | None
    compatible_brands: tuple[str, ...]
    has_moov: bool
    truncated: str | None
    movie: MovieHeader | None
    tracks: tuple[TrackInfo, ...]
    location: Location | None
    tags: dict[str, str]
    top_level: tuple[Box, ...]
    udta: tuple[Box, ...]
    fragmented: bool = False

    def tracks_with_format(self, fmt: str) -> list[TrackInfo]:
        """The tracks with a sample entry of format ``fmt`` (``gpmd``, ``camm`` …)."""
        return [t for t in self.tracks if fmt in t.formats]


def _parse_hdlr(fileobj: BinaryIO, name: str, box: Box) -> tuple[str, str]:
    _version, _flags, body = _full_box(fileobj, name, box)
    if len(body) < 8:
        raise CorruptMediaError(f"{name}: hdlr at offset {box.offset} is too short")
    handler = body[4:8].decode("latin-1")
    raw = body[20:]
    if raw and raw[0] == len(raw) - 1:  # QuickTime: a Pascal string
        raw = raw[1:]
    text = raw.split(b"\x00", 1)[0].decode("utf-8", errors="replace").strip()
    return handler, text


def _parse_stsd(fileobj: BinaryIO, name: str, box: Box) -> tuple[str, ...]:
    """The formats of the sample entries (the box's children after a count)."""
    if box.data_size < 8:
        raise CorruptMediaError(f"{name}: stsd at offset {box.offset} is too short")
    (count,) = struct.unpack(">I", _read_at(fileobj, name, box.data_offset + 4, 4))
    formats: list[str] = []
    for entry in iter_boxes(fileobj, name, box.data_offset + 8, box.end, parent=box):
        if len(formats) == count:
            break
        formats.append(entry.type.decode("latin-1"))
    if len(formats) < count:
        raise CorruptMediaError(
            f"{name}: stsd at offset {box.offset} announces {count} sample entries but holds "
            f"{len(formats)}"
        )
    return tuple(formats)


def _parse_elst(fileobj: BinaryIO, name: str, box: Box) -> tuple[Edit, ...]:
    version, _flags, body = _full_box(fileobj, name, box, limit=1 << 20)
    (count,) = _unpack(">I", body, 0, name, box)
    fmt, width = (">QqhH", 20) if version == 1 else (">IihH", 12)
    if count * width > len(body) - 4:
        raise CorruptMediaError(
            f"{name}: elst at offset {box.offset} announces {count} entries, more than it holds"
        )
    edits = []
    for i in range(count):
        duration, media_time, rate_int, rate_frac = struct.unpack_from(fmt, body, 4 + i * width)
        edits.append(Edit(duration, media_time, rate_int + rate_frac / 65536))
    return tuple(edits)


def _sample_count(fileobj: BinaryIO, name: str, tables: SampleTables) -> int:
    """The sample count, checked against the room the table (or the file) has for it."""
    if tables.stsz is not None:
        box = tables.stsz
        if box.data_size < 12:
            raise CorruptMediaError(f"{name}: stsz at offset {box.offset} is too short")
        size, count = struct.unpack(">II", _read_at(fileobj, name, box.data_offset + 4, 8))
        if size == 0 and count * 4 > box.data_size - 12:
            raise CorruptMediaError(
                f"{name}: stsz at offset {box.offset} announces {count} sample sizes but has "
                f"room for {(box.data_size - 12) // 4}"
            )
        return int(count)
    if tables.stz2 is not None:
        box = tables.stz2
        if box.data_size < 12:
            raise CorruptMediaError(f"{name}: stz2 at offset {box.offset} is too short")
        head = _read_at(fileobj, name, box.data_offset + 4, 8)
        bits, count = head[3], int.from_bytes(head[4:8], "big")
        if bits not in (4, 8, 16):
            raise CorruptMediaError(f"{name}: stz2 at offset {box.offset} has field size {bits}")
        if (count * bits + 7) // 8 > box.data_size - 12:
            raise CorruptMediaError(
                f"{name}: stz2 at offset {box.offset} announces {count} samples, more than it holds"
            )
        return count
    return 0


def _parse_trak(fileobj: BinaryIO, name: str, trak: Box, index: int) -> TrackInfo:
    track_id = 0
    creation: datetime | None = None
    edits: tuple[Edit, ...] = ()
    handler = handler_name = ""
    timescale = duration = 0
    found: dict[str, Box] = {}
    have_mdhd = False
    for box in child_boxes(fileobj, name, trak):
        if box.type == b"tkhd":
            version, _flags, body = _full_box(fileobj, name, box)
            fmt = ">QQI" if version == 1 else ">III"
            creation_s, _mod, track_id = _unpack(fmt, body, 0, name, box)
            creation = _mac_time(creation_s)
        elif box.type == b"edts":
            elst = _first(child_boxes(fileobj, name, box), b"elst")
            if elst is not None:
                edits = _parse_elst(fileobj, name, elst)
        elif box.type == b"mdia":
            for sub in child_boxes(fileobj, name, box):
                if sub.type == b"mdhd":
                    creation_s, _mod, timescale, duration = _time_header(fileobj, name, sub)
                    creation = creation or _mac_time(creation_s)
                    have_mdhd = True
                elif sub.type == b"hdlr":
                    handler, handler_name = _parse_hdlr(fileobj, name, sub)
                elif sub.type == b"minf":
                    stbl = _first(child_boxes(fileobj, name, sub), b"stbl")
                    if stbl is not None:
                        for table in child_boxes(fileobj, name, stbl):
                            key = table.type.decode("latin-1")
                            if key in _TABLE_NAMES and key not in found:
                                found[key] = table
    tables = SampleTables(**found)
    formats = _parse_stsd(fileobj, name, tables.stsd) if tables.stsd is not None else ()
    count = _sample_count(fileobj, name, tables)
    if count and not have_mdhd:
        raise CorruptMediaError(f"{name}: track {index + 1} has samples but no mdhd")
    return TrackInfo(
        index=index,
        track_id=track_id,
        handler=handler,
        handler_name=handler_name,
        formats=formats,
        timescale=timescale,
        duration=duration,
        sample_count=count,
        creation_time=creation,
        edits=edits,
        tables=tables,
        box=trak,
    )


# --- QuickTime location and text tags ----------------------------------------------------------

_ISO6709 = re.compile(
    r"^\s*([+-]\d+(?:\.\d*)?)([+-]\d+(?:\.\d*)?)([+-]\d+(?:\.\d*)?)?(?:CRS[^/]*)?/?\s*$"
)


def _sexagesimal(text: str, degree_digits: int) -> float | None:
    """``±DD[MM[SS]][.fff]`` (latitude, 2 degree digits) or ``±DDD…`` (longitude, 3)."""
    sign = -1.0 if text[0] == "-" else 1.0
    body = text[1:]
    whole, _, fraction = body.partition(".")
    frac = float("0." + fraction) if fraction else 0.0
    if len(whole) == degree_digits:
        value = int(whole) + frac
    elif len(whole) == degree_digits + 2:
        minutes = int(whole[degree_digits:]) + frac
        if minutes >= 60:
            return None
        value = int(whole[:degree_digits]) + minutes / 60
    elif len(whole) == degree_digits + 4:
        minutes = int(whole[degree_digits : degree_digits + 2])
        seconds = int(whole[degree_digits + 2 :]) + frac
        if minutes >= 60 or seconds >= 60:
            return None
        value = int(whole[:degree_digits]) + minutes / 60 + seconds / 3600
    else:
        return None
    return sign * value


def parse_iso6709(text: str) -> tuple[float, float, float | None] | None:
    """(lat, lon, alt) from an ISO 6709 point string such as ``+32.0929+034.8620+028.516/``.

    Degrees, degrees-minutes (``+3205.574``) and degrees-minutes-seconds forms are accepted,
    an optional ``CRS…`` suffix is ignored. None when the text is not such a string or out of
    range.
    """
    match = _ISO6709.match(text)
    if match is None:
        return None
    lat = _sexagesimal(match.group(1), 2)
    lon = _sexagesimal(match.group(2), 3)
    if lat is None or lon is None or abs(lat) > 90 or abs(lon) > 180:
        return None
    alt = float(match.group(3)) if match.group(3) else None
    return lat, lon, alt


def _udta_string(payload: bytes) -> str | None:
    """A QuickTime international text item: u16 length, u16 language, the text."""
    if len(payload) < 4:
        return None
    length = int.from_bytes(payload[:2], "big")
    text = payload[4 : 4 + length]
    if len(text) != length:
        return None
    return text.decode("utf-8", errors="replace").rstrip("\x00").strip()


def _read_udta(
    fileobj: BinaryIO, name: str, udta: Box, tags: dict[str, str]
) -> tuple[tuple[Box, ...], Location | None]:
    children = tuple(child_boxes(fileobj, name, udta))
    location: Location | None = None
    for box in children:
        if box.type == b"\xa9xyz" and location is None:
            text = _udta_string(read_payload(fileobj, name, box, limit=4096))
            point = parse_iso6709(text) if text else None
            if point is not None and text is not None:
                location = Location(*point, tag="udta ©xyz", text=text)
        elif box.type in _UDTA_TEXT and box.data_size <= 4096:
            text = _udta_string(read_payload(fileobj, name, box))
            if text:
                tags.setdefault(_UDTA_TEXT[box.type], text)
        elif box.type == b"meta":
            _read_keys(fileobj, name, box, tags)
    return children, location


def _read_keys(fileobj: BinaryIO, name: str, meta: Box, tags: dict[str, str]) -> None:
    """QuickTime ``meta``: ``keys`` names the items of ``ilst`` (1-based); UTF-8 values kept."""
    keys_box = ilst = None
    for box in child_boxes(fileobj, name, meta):
        if box.type == b"keys":
            keys_box = box
        elif box.type == b"ilst":
            ilst = box
    if keys_box is None or ilst is None:
        return
    data = read_payload(fileobj, name, keys_box, limit=1 << 20)
    (count,) = _unpack(">I", data, 4, name, keys_box)
    keys: dict[int, str] = {}
    pos = 8
    for index in range(1, count + 1):
        size, _namespace = _unpack(">I4s", data, pos, name, keys_box)
        if size < 8 or pos + size > len(data):
            raise CorruptMediaError(
                f"{name}: keys at offset {keys_box.offset}: entry {index} has a bad size {size}"
            )
        keys[index] = data[pos + 8 : pos + size].decode("utf-8", errors="replace")
        pos += size
    for item in child_boxes(fileobj, name, ilst):
        key = keys.get(int.from_bytes(item.type, "big"))
        if key != _LOCATION_KEY and key not in _TEXT_KEYS:
            continue  # covers and other large values are never read
        for data_box in child_boxes(fileobj, name, item):
            if data_box.type != b"data" or data_box.data_size > 4096:
                continue
            payload = read_payload(fileobj, name, data_box)
            if len(payload) < 8 or int.from_bytes(payload[1:4], "big") != 1:  # 1 = UTF-8
                continue
            value = payload[8:].decode("utf-8", errors="replace").rstrip("\x00").strip()
            if key == _LOCATION_KEY:
                tags.setdefault("location", value)
            else:
                tags.setdefault(_TEXT_KEYS[key], value)
            break


# --- probe -------------------------------------------------------------------------------------


def _check_first_box(fileobj: BinaryIO, name: str, size: int) -> None:
    """Refuse a file whose first 8 bytes are not a box header with a printable type."""
    head = _read_at(fileobj, name, 0, min(8, size))
    if len(head) < 8 or not all(0x20 <= b < 0x7F for b in head[4:8]):
        raise CorruptMediaError(
            f"{name}: not an MP4/QuickTime file: the first bytes {head[:8].hex(' ')} are not a "
            "box header"
        )


def probe(fileobj: BinaryIO, name: str, *, allow_truncated: bool = False) -> Mp4Info:
    """Read the layout and the ``moov`` index of an MP4/MOV file (no media data is read).

    A file cut short (a top-level box running past the end of the file, a header cut off, no
    ``moov`` after an ``mdat``, or a chunk offset beyond the end of the file) raises
    ``CorruptMediaError(reason="truncated_mp4")`` whose message says what is missing — unless
    ``allow_truncated``, which returns what could be read with :attr:`Mp4Info.truncated` set.
    A file that is not an MP4/QuickTime file at all, or whose ``moov`` is malformed, raises
    ``CorruptMediaError`` (``corrupt_media``).
    """
    size = file_size(fileobj, name)
    if size == 0:
        raise CorruptMediaError(f"{name}: empty file, not an MP4/QuickTime file")
    _check_first_box(fileobj, name, size)
    top: list[Box] = []
    truncated: str | None = None
    try:
        top.extend(iter_boxes(fileobj, name, 0, size))
    except CorruptMediaError as exc:
        if exc.reason != TRUNCATED:
            raise
        truncated = str(exc)
    ftyp = _first(tuple(top), b"ftyp")
    major: str | None = None
    compatible: tuple[str, ...] = ()
    if ftyp is not None:
        data = read_payload(fileobj, name, ftyp, limit=4096)
        if len(data) >= 4:
            major = data[:4].decode("latin-1")
            compatible = tuple(
                data[i : i + 4].decode("latin-1") for i in range(8, len(data) - 3, 4)
            )
    moov = _first(tuple(top), b"moov")
    if moov is None:
        cut_at = top[-1].end if top else 0
        cut_type = _read_at(fileobj, name, cut_at + 4, 4) if cut_at + 8 <= size else b""
        if cut_type == b"moov":
            missing = "the 'moov' index is incomplete, so no sample can be located"
        else:
            kinds = ", ".join(b.label for b in top[:6]) or "none"
            missing = (
                f"no 'moov' box (the index a recorder writes when it stops; top-level "
                f"boxes: {kinds}): the recording was cut short, e.g. by a power loss"
            )
        truncated = f"{truncated}; {missing}" if truncated else f"{name}: {missing}"
        if not allow_truncated:
            raise CorruptMediaError(truncated, reason=TRUNCATED)
        return Mp4Info(
            name, size, major, compatible, False, truncated, None, (), None, {}, tuple(top), ()
        )

    movie: MovieHeader | None = None
    tracks: list[TrackInfo] = []
    tags: dict[str, str] = {}
    udta_children: tuple[Box, ...] = ()
    location: Location | None = None
    for box in child_boxes(fileobj, name, moov):
        if box.type == b"mvhd":
            creation_s, mod_s, timescale, duration = _time_header(fileobj, name, box)
            movie = MovieHeader(timescale, duration, _mac_time(creation_s), _mac_time(mod_s))
        elif box.type == b"trak":
            tracks.append(_parse_trak(fileobj, name, box, len(tracks)))
        elif box.type == b"udta":
            children, found = _read_udta(fileobj, name, box, tags)
            udta_children += children
            location = location or found
        elif box.type == b"meta":
            _read_keys(fileobj, name, box, tags)
    keyed = tags.pop("location", None)
    if keyed is not None:
        point = parse_iso6709(keyed)
        if point is not None:  # the Apple key is preferred over ©xyz (it carries altitude)
            location = Location(*point, tag=f"keys {_LOCATION_KEY}", text=keyed)
    if truncated is None and any(b.open_ended and b.type == b"mdat" for b in top):
        truncated = _beyond_end(fileobj, name, tracks, size)
    if truncated is not None and not allow_truncated:
        raise CorruptMediaError(truncated, reason=TRUNCATED)
    return Mp4Info(
        name=name,
        file_size=size,
        major_brand=major,
        compatible_brands=compatible,
        has_moov=True,
        truncated=truncated,
        movie=movie,
        tracks=tuple(tracks),
        location=location,
        tags=tags,
        top_level=tuple(top),
        udta=udta_children,
        fragmented=any(b.type == b"moof" for b in top),
    )


def _beyond_end(fileobj: BinaryIO, name: str, tracks: list[TrackInfo], size: int) -> str | None:
    """A message if some track's chunk starts at or past the end of the file, else None.

    Called when the ``mdat`` size field says "to the end of the file": then a cut recording
    whose ``moov`` was written first shows only in chunk offsets pointing past the end. (A file
    whose ``mdat`` has an explicit size is checked by that size alone: ExifTool's test files,
    for one, keep a ``moov`` whose media was stripped.) Only the chunk offset tables are read.
    """
    for track in tracks:
        box = track.tables.co64 or track.tables.stco
        if box is None or track.sample_count == 0:
            continue
        offsets = _table(fileobj, name, box, 8 if box.type == b"co64" else 4)
        last = max((o for (o,) in offsets), default=0)
        if last >= size:
            return (
                f"{name}: track {track.index + 1} ({track.handler or '?'}) has a chunk at offset "
                f"{last}, past the end of the file at {size}: the media data was cut short"
            )
    return None


# --- sample tables -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample of a track.

    ``index`` is 0-based; ``offset``/``size`` locate its bytes in the file; ``decode_time`` and
    ``duration`` are in the track's media ticks and ``time_s``/``duration_s`` in seconds
    (``decode_time / timescale``, as mapillary_tools computes them); ``description`` is the
    1-based ``stsd`` entry index; ``is_sync`` is False only for samples ``stss`` leaves out.
    """

    index: int
    offset: int
    size: int
    decode_time: int
    duration: int
    time_s: float
    duration_s: float
    description: int
    is_sync: bool


def _table(
    fileobj: BinaryIO, name: str, box: Box, width: int, *, header: int = 8
) -> Iterator[tuple[int, ...]]:
    """Stream the fixed-width entries of a full-box table: version/flags, u32 count, entries.

    ``width`` is 4 (one u32), 8 (one u64) or 12 (three u32); ``header`` is the number of bytes
    before the entries, the count being the last four of them. The count is checked against
    the room in the box before anything is read, and entries are read in blocks.
    """
    if box.data_size < header:
        raise CorruptMediaError(f"{name}: {box.label} at offset {box.offset} is too short")
    (count,) = struct.unpack(">I", _read_at(fileobj, name, box.data_offset + header - 4, 4))
    room = (box.data_size - header) // width
    if count > room:
        raise CorruptMediaError(
            f"{name}: {box.label} at offset {box.offset} announces {count} entries but has room "
            f"for {room}"
        )
    fmt = {4: ">I", 8: ">Q", 12: ">III"}[width]
    pos = box.data_offset + header
    left = count
    while left:
        n = min(left, _TABLE_BLOCK)
        yield from struct.iter_unpack(fmt, _read_at(fileobj, name, pos, n * width))
        pos += n * width
        left -= n


def _pairs(fileobj: BinaryIO, name: str, box: Box) -> Iterator[tuple[int, int]]:
    for (value,) in _table(fileobj, name, box, 8):
        yield value >> 32, value & 0xFFFFFFFF


def _sizes(fileobj: BinaryIO, name: str, tables: SampleTables) -> Iterator[int]:
    if tables.stsz is not None:
        box = tables.stsz
        fixed, count = struct.unpack(">II", _read_at(fileobj, name, box.data_offset + 4, 8))
        if fixed:
            for _ in range(count):
                yield fixed
            return
        for (value,) in _table(fileobj, name, box, 4, header=12):
            yield value
        return
    if tables.stz2 is not None:
        box = tables.stz2
        head = _read_at(fileobj, name, box.data_offset + 4, 8)
        bits, count = head[3], int.from_bytes(head[4:8], "big")
        pos, left = box.data_offset + 12, count
        while left:
            n = min(left, _TABLE_BLOCK * 2)
            raw = _read_at(fileobj, name, pos, (n * bits + 7) // 8)
            if bits == 16:
                yield from (v for (v,) in struct.iter_unpack(">H", raw))
            elif bits == 8:
                yield from raw
            else:
                for i in range(n):
                    byte = raw[i // 2]
                    yield byte >> 4 if i % 2 == 0 else byte & 0x0F
            pos += len(raw)
            left -= n


def _durations(fileobj: BinaryIO, name: str, tables: SampleTables) -> Iterator[int]:
    """Per-sample durations from ``stts``; 0 forever after the table (as mapillary_tools pads)."""
    if tables.stts is not None:
        for count, delta in _pairs(fileobj, name, tables.stts):
            for _ in range(count):
                yield delta
    while True:
        yield 0


def _chunks(fileobj: BinaryIO, name: str, track: TrackInfo) -> Iterator[tuple[int, int, int]]:
    """(chunk offset, samples in it, description index) for every chunk, from stsc + stco."""
    tables = track.tables
    offsets_box = tables.co64 or tables.stco
    if tables.stsc is None or offsets_box is None:
        raise CorruptMediaError(
            f"{name}: track {track.index + 1} has {track.sample_count} samples but no "
            f"{'stsc' if tables.stsc is None else 'stco/co64'} box to locate them"
        )
    offsets = _table(fileobj, name, offsets_box, 8 if offsets_box.type == b"co64" else 4)
    entries = _table(fileobj, name, tables.stsc, 12)
    current = next(entries, None)
    if current is None:
        return
    if current[0] != 1:
        raise CorruptMediaError(
            f"{name}: track {track.index + 1}: the first stsc entry starts at chunk {current[0]}, "
            "not 1"
        )
    following = next(entries, None)
    for chunk, (offset,) in enumerate(offsets, start=1):
        while following is not None and following[0] <= chunk:
            if following[0] <= current[0]:
                raise CorruptMediaError(
                    f"{name}: track {track.index + 1}: stsc first-chunk numbers do not increase "
                    f"({current[0]} then {following[0]})"
                )
            current, following = following, next(entries, None)
        yield offset, current[1], current[2]


def iter_samples(fileobj: BinaryIO, name: str, track: TrackInfo) -> Iterator[Sample]:
    """Every sample of ``track`` in decode order, streamed from the file's sample tables.

    Memory use does not grow with the sample count: the tables are read in blocks as the
    iteration goes. ``CorruptMediaError`` when the tables contradict each other (fewer chunks
    than samples, a zero timescale, an unordered ``stsc``).
    """
    if track.sample_count == 0:
        return
    if track.timescale <= 0:
        raise CorruptMediaError(f"{name}: track {track.index + 1} has media timescale 0")
    if track.sample_count > MAX_SAMPLES:
        raise CorruptMediaError(
            f"{name}: track {track.index + 1} announces {track.sample_count} samples, more than "
            f"the {MAX_SAMPLES} this reader walks"
        )
    sizes = _sizes(fileobj, name, track.tables)
    durations = _durations(fileobj, name, track.tables)
    syncs = (
        (n for (n,) in _table(fileobj, name, track.tables.stss, 4))
        if track.tables.stss is not None
        else None
    )
    next_sync = next(syncs, None) if syncs is not None else None
    index = 0
    decode = 0
    for offset, per_chunk, description in _chunks(fileobj, name, track):
        for _ in range(per_chunk):
            if index == track.sample_count:
                return
            size = next(sizes)
            duration = next(durations)
            is_sync = True
            if syncs is not None:
                while next_sync is not None and next_sync < index + 1:
                    next_sync = next(syncs, None)
                is_sync = next_sync == index + 1
            yield Sample(
                index=index,
                offset=offset,
                size=size,
                decode_time=decode,
                duration=duration,
                time_s=decode / track.timescale,
                duration_s=duration / track.timescale,
                description=description,
                is_sync=is_sync,
            )
            offset += size
            decode += duration
            index += 1
    if index < track.sample_count:
        raise CorruptMediaError(
            f"{name}: track {track.index + 1}: the chunk tables place only {index} of its "
            f"{track.sample_count} samples"
        )


def read_sample(
    fileobj: BinaryIO, name: str, sample: Sample, *, limit: int = MAX_PAYLOAD_READ
) -> bytes:
    """The bytes of one (metadata) sample; ``truncated_mp4`` if the file ends before them."""
    if sample.size > limit:
        raise CorruptMediaError(
            f"{name}: sample {sample.index + 1} is {sample.size} bytes, more than the {limit} "
            "bytes accepted for a metadata sample"
        )
    return _read_at(fileobj, name, sample.offset, sample.size)


# --- telemetry on the movie timeline -----------------------------------------------------------

#: Where the UTC time of a telemetry track comes from: the device's GPS clock, the camera's own
#: clock (BlackVue timestamps not confirmed by a GPS sentence), the ``mvhd`` creation time
#: (often the camera's local time written as UTC), or nothing at all (1970-01-01 stands in).
Clock = Literal["gps", "camera", "container", "none"]
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class TimedPoint:
    """A position at a movie time.

    ``time_s`` is seconds from the start of the movie (sample decode time, the clock that keeps
    frames and positions in step); ``epoch_s`` is the UTC time (Unix seconds) the device's GPS
    gave for it, when it gave one; ``speed`` is the ground speed in m/s when known.
    """

    time_s: float
    lat: float
    lon: float
    alt: float | None = None
    epoch_s: float | None = None
    speed: float | None = None


@dataclass(frozen=True)
class TimedTrack:
    """Telemetry points on the movie timeline, and the same points as a :class:`Track`.

    ``start_time`` is the UTC time of movie time 0 and ``clock`` says where it came from; the
    track's point times are ``start_time + time_s``, so :meth:`movie_time` turns any track time
    back into seconds from the start of the movie.
    """

    points: tuple[TimedPoint, ...]
    start_time: datetime
    clock: Clock
    track: Track

    def movie_time(self, when: datetime) -> float:
        """Seconds from the start of the movie at UTC time ``when``."""
        return (when - self.start_time).total_seconds()


def _valid(point: TimedPoint) -> bool:
    values = (point.time_s, point.lat, point.lon)
    return (
        all(math.isfinite(v) for v in values)
        and -90.0 <= point.lat <= 90.0
        and -180.0 <= point.lon <= 180.0
        and abs(point.time_s) < 1e9
    )


def _start_from(
    points: list[TimedPoint], movie_creation: datetime | None, epoch_clock: Clock
) -> tuple[datetime, Clock]:
    for point in points:
        if point.epoch_s is not None and point.epoch_s > 0:
            try:
                return _UNIX_EPOCH + timedelta(seconds=point.epoch_s - point.time_s), epoch_clock
            except (OverflowError, ValueError):
                break
    if movie_creation is not None:
        return movie_creation, "container"
    return _UNIX_EPOCH, "none"


def timed_track(
    points: Sequence[TimedPoint],
    name: str,
    *,
    movie_creation: datetime | None,
    epoch_clock: Clock = "gps",
    notes: Sequence[str] = (),
) -> TimedTrack:
    """Anchor movie-time ``points`` in UTC and build their :class:`Track` (one segment).

    The anchor is the first point with a GPS time (``start = epoch_s - time_s``, clock
    ``epoch_clock``), else ``movie_creation`` (clock ``container``), else 1970-01-01 (clock
    ``none``: only the relative times mean anything). Points are sorted by movie time;
    points with non-finite or out-of-range values are dropped with a note.
    ``ItemError(reason="no_video_gps")`` when no point is left.
    """
    kept = sorted((p for p in points if _valid(p)), key=lambda p: p.time_s)
    notes = list(notes)
    if len(kept) < len(points):
        notes.append(f"{len(points) - len(kept)} point(s) with impossible values dropped")
    if not kept:
        raise ItemError(
            f"{name}: no usable GPS point in the video telemetry", reason="no_video_gps"
        )
    start, clock = _start_from(kept, movie_creation, epoch_clock)
    track_points = []
    for p in kept:
        try:
            when = start + timedelta(seconds=p.time_s)
        except OverflowError as exc:
            raise ItemError(
                f"{name}: telemetry time {p.time_s} s cannot be placed after {start}",
                reason="no_video_gps",
            ) from exc
        track_points.append(TrackPoint(when, p.lat, p.lon, p.alt))
    track = Track((tuple(track_points),), name, tuple(notes))
    return TimedTrack(tuple(kept), start, clock, track)
