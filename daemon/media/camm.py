"""CAMM (Google Camera Motion Metadata) samples: parse a ``camm`` track, encode GPS samples.

A CAMM track (sample entry format ``camm``; https://developers.google.com/streetview/publish/
camm-spec) carries one packet per sample, little-endian: ``u16 reserved`` (0), ``u16 type``,
then the type's fields:

====  ===================  ===============================================================
type  name                 fields
====  ===================  ===============================================================
0     angle axis           float[3] (radians, rotation local → world)
1     exposure             int32 pixel exposure time, int32 rolling-shutter skew (ns)
2     gyroscope            float[3] (rad/s)
3     acceleration         float[3] (m/s²)
4     position             float[3] (metres, 6DoF)
5     minimal GPS          double latitude, longitude, altitude
6     GPS                  double time_gps_epoch, int32 gps_fix_type, double latitude,
                           longitude, float altitude, horizontal/vertical accuracy,
                           velocity east/north/up, speed accuracy
7     magnetic field       float[3] (microtesla)
====  ===================  ===============================================================

The sample's decode time is the measurement's movie time. Like mapillary_tools 0.14.7
(``camm_parser``): only the first packet of a sample is read; the GPS track is the type-6
points when there are any, else the type-5 points; the track's edit list is applied as
mapillary_tools applies it (an empty edit, which its CAMM builder writes when the first point
is after 0 s, shifts every point by its duration; with non-empty edits only points inside one
are kept — where mapillary_tools also drops the first point past the end of an edit, we keep
it when a later edit holds it); make and model come from ``udta`` (``©mak``/``©mod``,
``@mak``/``@mod``, ``manu``/``modl``).

``time_gps_epoch`` is read and written as **Unix seconds (UTC)**: that is what mapillary_tools
writes into the CAMM tracks it uploads and how it reads them back, so it is what Mapillary
receives, although the spec's wording says "GPS epoch".

The encoder (:func:`encode_min_gps`, :func:`encode_gps`, :func:`encode_point`) produces the
sample bytes only; putting them into an MP4 is the MP4 builder's job.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import BinaryIO

from daemon.errors import CorruptMediaError
from daemon.media import mp4

__all__ = [
    "PAYLOAD_SIZES",
    "CammGps",
    "CammPacket",
    "CammTelemetry",
    "camm_track",
    "encode_gps",
    "encode_min_gps",
    "encode_point",
    "gps_from_packet",
    "parse_camm_sample",
]

#: Payload bytes after the 4-byte header, by packet type.
PAYLOAD_SIZES = {0: 12, 1: 8, 2: 12, 3: 12, 4: 12, 5: 24, 6: 56, 7: 12}
_FORMATS = {
    0: "<fff",
    1: "<ii",
    2: "<fff",
    3: "<fff",
    4: "<fff",
    5: "<ddd",
    6: "<didd" + "f" * 7,
    7: "<fff",
}
_HEADER = struct.Struct("<HH")
_MIN_GPS = struct.Struct(_FORMATS[5])
_GPS = struct.Struct(_FORMATS[6])
assert all(struct.calcsize(f) == PAYLOAD_SIZES[t] for t, f in _FORMATS.items())


@dataclass(frozen=True, slots=True)
class CammPacket:
    """One decoded packet: its ``type`` (0–7) and field values in the spec's order."""

    type: int
    values: tuple[float, ...]


def parse_camm_sample(data: bytes, name: str = "CAMM sample") -> CammPacket | None:
    """The first packet of a CAMM sample; None for a type outside 0–7 (skipped, as the spec's
    readers do). ``CorruptMediaError`` when the sample is shorter than its type needs."""
    if len(data) < _HEADER.size:
        raise CorruptMediaError(f"{name}: {len(data)} byte(s), too short for a CAMM header")
    _reserved, packet_type = _HEADER.unpack_from(data)
    fmt = _FORMATS.get(packet_type)
    if fmt is None:
        return None
    need = _HEADER.size + PAYLOAD_SIZES[packet_type]
    if len(data) < need:
        raise CorruptMediaError(
            f"{name}: a type-{packet_type} CAMM packet needs {need} bytes, the sample has "
            f"{len(data)}"
        )
    return CammPacket(packet_type, struct.unpack_from(fmt, data, _HEADER.size))


@dataclass(frozen=True, slots=True)
class CammGps:
    """A type-5 or type-6 position. Type 5 leaves the type-6 fields None.

    ``epoch_s`` is ``time_gps_epoch`` (Unix seconds UTC, see the module docstring); ``fix`` is
    0 (none), 2 (2D) or 3 (3D); accuracies in metres, velocities in m/s.
    """

    lat: float
    lon: float
    alt: float
    epoch_s: float | None = None
    fix: int | None = None
    horizontal_accuracy: float | None = None
    vertical_accuracy: float | None = None
    velocity_east: float | None = None
    velocity_north: float | None = None
    velocity_up: float | None = None
    speed_accuracy: float | None = None

    @property
    def speed(self) -> float | None:
        """Ground speed from the east and north velocities (type 6 only)."""
        if self.velocity_east is None or self.velocity_north is None:
            return None
        return math.hypot(self.velocity_east, self.velocity_north)


def gps_from_packet(packet: CammPacket) -> CammGps | None:
    """The position a type-5 or type-6 packet carries; None for the other types."""
    v = packet.values
    if packet.type == 5:
        return CammGps(v[0], v[1], v[2])
    if packet.type == 6:
        return CammGps(
            lat=v[2],
            lon=v[3],
            alt=v[4],
            epoch_s=v[0],
            fix=int(v[1]),
            horizontal_accuracy=v[5],
            vertical_accuracy=v[6],
            velocity_east=v[7],
            velocity_north=v[8],
            velocity_up=v[9],
            speed_accuracy=v[10],
        )
    return None


# --- encoder -----------------------------------------------------------------------------------


def encode_min_gps(lat: float, lon: float, alt: float | None) -> bytes:
    """A type-5 sample. A missing altitude is written as -1.0, as mapillary_tools does."""
    return _HEADER.pack(0, 5) + _MIN_GPS.pack(lat, lon, -1.0 if alt is None else alt)


def encode_gps(point: CammGps) -> bytes:
    """A type-6 sample; ``epoch_s`` is required, the other optional fields default to 0."""
    if point.epoch_s is None:
        raise ValueError("a type-6 CAMM sample needs epoch_s")
    fix = point.fix if point.fix is not None else 3
    return _HEADER.pack(0, 6) + _GPS.pack(
        point.epoch_s,
        fix,
        point.lat,
        point.lon,
        point.alt,
        point.horizontal_accuracy or 0.0,
        point.vertical_accuracy or 0.0,
        point.velocity_east or 0.0,
        point.velocity_north or 0.0,
        point.velocity_up or 0.0,
        point.speed_accuracy or 0.0,
    )


def encode_point(point: mp4.TimedPoint, *, fix: int | None = None) -> bytes:
    """The sample mapillary_tools would write for a track point: type 6 when the point has a
    GPS time (fix ``fix``, else 3 with an altitude and 2 without; accuracies and velocities
    0), type 5 otherwise (altitude -1.0 when unknown)."""
    if point.epoch_s is not None and point.epoch_s > 0:
        return encode_gps(
            CammGps(
                lat=point.lat,
                lon=point.lon,
                alt=-1.0 if point.alt is None else point.alt,
                epoch_s=point.epoch_s,
                fix=fix if fix is not None else (3 if point.alt is not None else 2),
            )
        )
    return encode_min_gps(point.lat, point.lon, point.alt)


# --- the file ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CammTelemetry:
    """The GPS of a video with a CAMM track.

    ``timed`` is None when the track holds no GPS packet (then ``notes`` say so); ``kind`` is
    6 or 5 (which packets the points came from); ``gps`` the decoded packets of that kind in
    sample order.
    """

    timed: mp4.TimedTrack | None
    kind: int | None
    gps: tuple[CammGps, ...]
    make: str
    model: str
    notes: tuple[str, ...]

    @property
    def points(self) -> tuple[mp4.TimedPoint, ...]:
        """The points (empty when there are none)."""
        return self.timed.points if self.timed is not None else ()


def _udta_make_model(fileobj: BinaryIO, name: str, info: mp4.Mp4Info) -> tuple[str, str]:
    make, model = info.tags.get("make", ""), info.tags.get("model", "")
    for box in info.udta:
        if box.data_size > 4096:
            continue
        if box.type in (b"@mak", b"manu") and not make:
            make = _plain(mp4.read_payload(fileobj, name, box))
        elif box.type in (b"@mod", b"modl") and not model:
            model = _plain(mp4.read_payload(fileobj, name, box))
    return make, model


def _plain(data: bytes) -> str:
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        return ""


@dataclass(frozen=True)
class _Edits:
    """A track's edit list as mapillary_tools applies it to CAMM: every kept measurement is
    shifted by the duration of the (last) empty edit; when there are non-empty edits, only
    measurements inside one of them (media time within [start, start + duration]) are kept."""

    offset: float
    spans: tuple[tuple[float, float], ...]

    def movie_time(self, media_s: float) -> float | None:
        if not self.spans:
            return media_s + self.offset
        for start, end in self.spans:
            if start <= media_s <= end:
                return media_s + self.offset
        return None


def _edits(info: mp4.Mp4Info, track: mp4.TrackInfo) -> _Edits:
    if not track.edits or info.movie is None or not info.movie.timescale or not track.timescale:
        return _Edits(0.0, ())
    movie_ts = info.movie.timescale
    empty = [e for e in track.edits if e.media_time == -1]
    offset = empty[-1].segment_duration / movie_ts if empty else 0.0
    spans = sorted(
        (
            e.media_time / track.timescale,
            e.media_time / track.timescale + e.segment_duration / movie_ts,
        )
        for e in track.edits
        if e.media_time != -1
    )
    return _Edits(offset, tuple(spans))


def camm_track(
    fileobj: BinaryIO, name: str, *, info: mp4.Mp4Info | None = None
) -> CammTelemetry | None:
    """The GPS of the first ``camm`` track of an MP4, or None when there is no such track.

    Raises only ItemError subclasses: ``truncated_mp4`` for a cut file, ``corrupt_media`` for
    a malformed one. Samples too short for their packet type are skipped with a note.
    """
    info = info or mp4.probe(fileobj, name)
    tracks = info.tracks_with_format("camm")
    if not tracks:
        return None
    track = tracks[0]
    camm_entries = {i + 1 for i, fmt in enumerate(track.formats) if fmt == "camm"}
    edits = _edits(info, track)
    found: dict[int, list[tuple[float, CammGps]]] = {5: [], 6: []}
    short = outside = 0
    for sample in mp4.iter_samples(fileobj, name, track):
        if sample.description not in camm_entries or sample.size < _HEADER.size:
            continue
        data = mp4.read_sample(fileobj, name, sample, limit=1 << 16)
        try:
            packet = parse_camm_sample(data, f"{name} camm sample {sample.index + 1}")
        except CorruptMediaError:
            short += 1
            continue
        if packet is None or packet.type not in found:
            continue
        gps = gps_from_packet(packet)
        assert gps is not None
        when = edits.movie_time(sample.time_s)
        if when is None:
            outside += 1
            continue
        found[packet.type].append((when, gps))
    notes = []
    if short:
        notes.append(f"{short} CAMM sample(s) too short for their packet type skipped")
    if outside:
        notes.append(f"{outside} CAMM GPS sample(s) outside the track's edit list dropped")
    make, model = _udta_make_model(fileobj, name, info)
    kind = 6 if found[6] else 5 if found[5] else None
    if kind is None:
        notes.append("the CAMM track has no GPS packet (type 5 or 6)")
        return CammTelemetry(None, None, (), make, model, tuple(notes))
    chosen = found[kind]
    points = [
        mp4.TimedPoint(
            t,
            g.lat,
            g.lon,
            g.alt,
            g.epoch_s if g.epoch_s is not None and g.epoch_s > 0 else None,
            g.speed,
        )
        for t, g in chosen
    ]
    timed = mp4.timed_track(
        points,
        name,
        movie_creation=info.movie.creation_time if info.movie else None,
        notes=notes,
    )
    return CammTelemetry(timed, kind, tuple(g for _, g in chosen), make, model, tuple(notes))
