"""daemon.media.exif: reading metadata (corpus, synthetic drives, hand-built EXIF) and writing
the description."""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import piexif
import pytest

from daemon.errors import CorruptMediaError, ItemError, NoGpsError, NoTimeError
from daemon.media.exif import (
    ImageMetadata,
    read_exif_facts,
    read_image_metadata,
    with_description,
)
from daemon.media.jpeg import EXIF_HEADER, XMP_HEADER, check_jpeg, exif_tiff, non_exif_bytes
from daemon.synth import drive_points, exif_bytes, jpeg_bytes, write_drive

CORPUS = Path(__file__).parents[2].parent / "shared/corpus/jpeg"
CORPUS_FILES = sorted(CORPUS.iterdir()) if CORPUS.is_dir() else []
needs_corpus = pytest.mark.skipif(not CORPUS_FILES, reason=f"no corpus at {CORPUS}")

# --- a raw TIFF builder, for EXIF that piexif would refuse to write ----------------------------

BYTE, ASCII, SHORT, LONG, RATIONAL, UNDEFINED, SRATIONAL = 1, 2, 3, 4, 5, 7, 10


@dataclass(frozen=True)
class Tag:
    tag: int
    type: int
    value: bytes
    count: int | None = None  # default: derived from the value's length


def ascii_(tag: int, text: str, *, nul: bool = True) -> Tag:
    return Tag(tag, ASCII, text.encode() + (b"\x00" if nul else b""))


def short(tag: int, *values: int) -> Tag:
    return Tag(tag, SHORT, struct.pack(f">{len(values)}H", *values))


def rational(tag: int, *pairs: tuple[int, int], signed: bool = False) -> Tag:
    code = "l" if signed else "L"
    flat = [v for pair in pairs for v in pair]
    return Tag(tag, SRATIONAL if signed else RATIONAL, struct.pack(f">{len(flat)}{code}", *flat))


SIZES = {BYTE: 1, ASCII: 1, SHORT: 2, LONG: 4, RATIONAL: 8, UNDEFINED: 1, SRATIONAL: 8}


def build_tiff(
    zeroth: Sequence[Tag] = (),
    exif: Sequence[Tag] = (),
    gps: Sequence[Tag] = (),
) -> bytes:
    """A big-endian TIFF with IFD0 and optional Exif and GPS IFDs (pointers added)."""
    ifds = {"0th": list(zeroth), "Exif": list(exif), "GPS": list(gps)}
    pointer_tags = {"Exif": 0x8769, "GPS": 0x8825}
    for name in ("Exif", "GPS"):
        if ifds[name]:
            ifds["0th"].append(Tag(pointer_tags[name], LONG, b"\x00\x00\x00\x00"))
    order = [n for n in ("0th", "Exif", "GPS") if ifds[n]] or ["0th"]
    sizes = {n: 2 + 12 * len(ifds[n]) + 4 for n in order}
    offsets, pos = {}, 8
    for n in order:
        offsets[n] = pos
        pos += sizes[n]
    data = bytearray()
    blobs: dict[str, bytes] = {}
    for n in order:
        out = struct.pack(">H", len(ifds[n]))
        for t in sorted(ifds[n], key=lambda t: t.tag):
            value = t.value
            if t.tag in (0x8769, 0x8825) and t.type == LONG and n == "0th":
                value = struct.pack(">L", offsets["Exif" if t.tag == 0x8769 else "GPS"])
            count = t.count if t.count is not None else len(value) // SIZES[t.type]
            if len(value) <= 4:
                field = value.ljust(4, b"\x00")
            else:
                field = struct.pack(">L", pos + len(data))
                data += value
            out += struct.pack(">HHL", t.tag, t.type, count) + field
        blobs[n] = out + b"\x00\x00\x00\x00"
    return b"MM\x00*\x00\x00\x00\x08" + b"".join(blobs[n] for n in order) + bytes(data)


def jpeg_with_tiff(tiff: bytes, seed: int = 0) -> bytes:
    body = jpeg_bytes(seed, size=(64, 48))
    payload = EXIF_HEADER + tiff
    return body[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + body[2:]


def dms(value: float) -> tuple[tuple[int, int], ...]:
    value = abs(value)
    d = int(value)
    m = int((value - d) * 60)
    s = round(((value - d) * 60 - m) * 60 * 1000)
    return (d, 1), (m, 1), (s, 1000)


def gps_tags(lat: float = 46.0569, lon: float = 14.5058, ns: str = "N", ew: str = "E") -> list[Tag]:
    return [
        ascii_(1, ns),
        rational(2, *dms(lat)),
        ascii_(3, ew),
        rational(4, *dms(lon)),
    ]


DTO = ascii_(0x9003, "2024:05:01 10:20:30")


def read(data: bytes, tz: timezone | ZoneInfo = UTC) -> ImageMetadata:
    return read_image_metadata(data, "t.jpg", default_tz=tz)


# --- the corpus: the contract on real, partly broken files -------------------------------------

EXPECTED_OUTCOME = {
    "exifsamples__DSCN0010.jpg": "ok",
    "exifsamples__DSCN0012.jpg": "ok",
    "exifsamples__DSCN0021.jpg": "ok",
    "exifsamples__Kodak_CX7530.jpg": "ok",
    "exiftool__GoPro.jpg": "ok",
    "exiftool__Google.jpg": "ok",
    "mapillary__DSC00001.JPG": "ok",
    "mapillary__adobe_coords.jpg": "ok",  # position from XMP only
    "mapillary__corrupt_exif.jpg": "ok",
    "mapillary__test_exif.jpg": "ok",
    "mde__Apple_iPhone_4.jpg": "ok",
    "mde__FujiFilm_FinePixS1Pro_1_.jpg": "ok",
    "mde__HTC_Desire.jpg": "ok",
    "mde__Issue_508.jpg": "ok",
    "mde__Nexus_4.jpg": "ok",
    "mde__Nikon_D5000.jpg": "ok",  # EXIF GPS has 0/0 seconds: position from XMP
    "mde__Issue_173_dotnet_.jpg": "no_time",  # GPS date 0000:00:00, no DateTime tags
    "mde__Samsung_GT-I9000_Galaxy_S_.jpg": "null_island",
    "mde__8e5e74dbf9b68a322fbb9512db837329.jpg": "corrupt_media",
    "mde__c8bc97335529d069a753c67475b8c82c.jpg": "corrupt_media",
    "mde__f012a4321f00f12af6b1eee7580ffb9c.jpg": "corrupt_media",
    "piexif__notjpeg.jpg": "corrupt_media",
}


@needs_corpus
@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
def test_corpus_reads_or_fails_as_an_item_error_naming_the_file(path: Path) -> None:
    data = path.read_bytes()
    try:
        meta = read_image_metadata(data, path.name, default_tz=UTC)
    except ItemError as exc:
        outcome = exc.reason
        assert str(exc).startswith(f"{path.name}: ")
    else:
        outcome = "ok"
        assert meta.capture_time.utcoffset() == timedelta(0)
        assert -90 <= meta.lat <= 90 and -180 <= meta.lon <= 180
    assert outcome == EXPECTED_OUTCOME.get(path.name, "no_gps")


@dataclass(frozen=True)
class Known:
    time: str
    lat: float
    lon: float
    alt: float | None = None
    heading: float | None = None
    make: str | None = None
    gps_time: bool = False


# Values checked by hand against ExifTool's reading of the same files (see SOURCES.md).
KNOWN = {
    # ASCII written without its NUL: piexif would read "09:47:2"; S latitude
    "exifsamples__Kodak_CX7530.jpg": Known(
        "2005-08-13T09:47:23", -0.3713, 36.0564167, make="EASTMAN KODAK COMPANY"
    ),
    # GPS time preferred over a DateTimeOriginal with sub-seconds; orientation 2
    "mapillary__test_exif.jpg": Known(
        "2011-07-15T09:14:39", 35.9125167, 14.4988056, 69.0, 1.0, "HTC", gps_time=True
    ),
    # altitude below sea level via GPSAltitudeRef = 1; make padded with NULs
    "exiftool__GoPro.jpg": Known(
        "2017-10-03T14:58:14", 40.6584192, -73.9933543, -3.983, None, "GoPro", gps_time=True
    ),
    "mde__Issue_508.jpg": Known(
        "2020-09-02T18:52:42.892", 43.8594694, 15.5032833, 0.9, 174.0660173, "Apple"
    ),
    "mapillary__adobe_coords.jpg": Known(
        "2019-07-16T10:26:11", -0.0702668, 34.3819352, 1361.69, None, "SAMSUNG"
    ),
    "mde__Nikon_D5000.jpg": Known(
        "2011-03-12T15:36:11", 48.8887264, 21.0432512, 324.145, None, "NIKON CORPORATION"
    ),
    "mapillary__corrupt_exif.jpg": Known(
        "2016-07-07T21:42:20.683670", 48.0810453, -1.6678411, None, 147.9598389, "OnePlus"
    ),
}


@needs_corpus
@pytest.mark.parametrize("name", sorted(KNOWN))
def test_corpus_known_values(name: str) -> None:
    known = KNOWN[name]
    meta = read_image_metadata((CORPUS / name).read_bytes(), name, default_tz=UTC)
    assert meta.capture_time == datetime.fromisoformat(known.time).replace(tzinfo=UTC)
    assert meta.lat == pytest.approx(known.lat, abs=1e-7)
    assert meta.lon == pytest.approx(known.lon, abs=1e-7)
    assert meta.alt == (None if known.alt is None else pytest.approx(known.alt, abs=1e-6))
    assert meta.heading == (
        None if known.heading is None else pytest.approx(known.heading, abs=1e-6)
    )
    assert meta.make == known.make
    assert meta.gps_time_used is known.gps_time


@needs_corpus
@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
def test_corpus_with_description_touches_only_the_exif_segment(path: Path) -> None:
    data = path.read_bytes()
    try:
        check_jpeg(data, path.name)
    except CorruptMediaError:
        with pytest.raises(CorruptMediaError, match=f"^{path.name}: "):
            with_description(data, {"MAPFilename": path.name}, path.name)
        return
    description = {
        "MAPLatitude": 46.0569001,
        "MAPLongitude": 14.5058002,
        "MAPCaptureTime": "2026_06_01_09_00_00_000",
        "MAPCompassHeading": {"TrueHeading": 45.0, "MagneticHeading": 45.0},
        "MAPFilename": path.name,
    }
    out = with_description(data, description, path.name)
    check_jpeg(out, path.name)
    assert non_exif_bytes(out) == non_exif_bytes(data)
    written = piexif.load(exif_tiff(out))["0th"][piexif.ImageIFD.ImageDescription]
    assert written == json.dumps(description, sort_keys=True, separators=(",", ":")).encode()
    assert json.loads(written) == description
    # everything the reader uses survives the rewrite
    before = read_exif_facts(data, path.name, default_tz=UTC)
    after = read_exif_facts(out, path.name, default_tz=UTC)
    assert after == before


# --- synthetic drives -------------------------------------------------------------------------


@pytest.mark.parametrize("offset_hours", [0, 2, -7])
def test_synthetic_drive_round_trip(tmp_path: Path, offset_hours: int) -> None:
    start = datetime(2026, 6, 1, 9, 0, 0, 250_000, tzinfo=timezone(timedelta(hours=offset_hours)))
    frames = write_drive(tmp_path, 12, start=start, interval_s=0.5, seed=offset_hours + 10)
    for frame in frames:
        meta = read_image_metadata(frame.path.read_bytes(), frame.path.name, default_tz=UTC)
        assert meta.capture_time == frame.time
        assert meta.capture_time.tzinfo is UTC
        assert meta.gps_time_used
        assert meta.lat == pytest.approx(frame.lat, abs=1e-6)
        assert meta.lon == pytest.approx(frame.lon, abs=1e-6)
        assert meta.alt == pytest.approx(frame.alt, abs=1e-3)
        assert meta.heading == pytest.approx(frame.heading, abs=1e-3)
        assert (meta.make, meta.model) == ("mapillaryd", "synthetic dashcam")
        assert (meta.width, meta.height, meta.orientation) == (320, 240, 1)


def test_synthetic_frames_without_gps_time_use_datetime_original_and_its_offset() -> None:
    start = datetime(2026, 6, 1, 9, 0, 0, 125_000, tzinfo=timezone(timedelta(hours=-3)))
    for i, (t, lat, lon, alt, heading) in enumerate(drive_points(5, start=start)):
        exif = exif_bytes(time=t, lat=lat, lon=lon, alt=alt, heading=heading, with_gps_time=False)
        meta = read(jpeg_bytes(i, exif=exif), tz=ZoneInfo("Asia/Tokyo"))
        assert meta.capture_time == t
        assert not meta.gps_time_used


def test_synthetic_frame_without_gps_is_no_gps() -> None:
    exif = exif_bytes(time=datetime(2026, 6, 1, tzinfo=UTC), lat=None, lon=None)
    with pytest.raises(NoGpsError, match=r"^t\.jpg: no GPS position in EXIF$"):
        read(jpeg_bytes(0, exif=exif))


def test_jpeg_without_exif_is_no_gps() -> None:
    with pytest.raises(NoGpsError, match="no GPS position in EXIF"):
        read(jpeg_bytes(0))


# --- capture time rules -------------------------------------------------------------------------

LJUBLJANA = ZoneInfo("Europe/Ljubljana")


def utc(
    year: int, month: int, day: int, h: int = 0, m: int = 0, s: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, h, m, s, us, tzinfo=UTC)


@pytest.mark.parametrize(
    ("exif", "gps", "expected", "gps_used"),
    [
        pytest.param([DTO], [], utc(2024, 5, 1, 8, 20, 30), False, id="naive-in-default-tz"),
        pytest.param(
            [DTO, ascii_(0x9011, "-05:00")], [], utc(2024, 5, 1, 15, 20, 30), False, id="offset"
        ),
        pytest.param(
            [DTO, ascii_(0x9011, "+0200")], [], utc(2024, 5, 1, 8, 20, 30), False, id="hhmm-offset"
        ),
        pytest.param(
            [DTO, ascii_(0x9011, "+xx:00")], [], utc(2024, 5, 1, 8, 20, 30), False, id="bad-offset"
        ),
        pytest.param(
            [DTO, ascii_(0x9011, "+25:00")], [], utc(2024, 5, 1, 9, 20, 30), False, id="wrapped"
        ),
        pytest.param(
            [DTO, ascii_(0x9291, "5"), ascii_(0x9011, "+00:00")],
            [],
            utc(2024, 5, 1, 10, 20, 30, 500_000),
            False,
            id="subsec-5-is-half",
        ),
        pytest.param(
            [DTO, ascii_(0x9291, " 12"), ascii_(0x9011, "Z")],
            [],
            utc(2024, 5, 1, 8, 20, 30, 12_000),
            False,
            id="subsec-space-is-zero",
        ),
        pytest.param(
            [ascii_(0x9003, "2024:05:01 10:20:30.847"), ascii_(0x9011, "+00:00")],
            [],
            utc(2024, 5, 1, 10, 20, 30, 847_000),
            False,
            id="fraction-in-datetime",
        ),
        pytest.param(
            [ascii_(0x9003, "2024-05-01T10:20:30Z")],
            [],
            utc(2024, 5, 1, 10, 20, 30),
            False,
            id="iso-utc",
        ),
        pytest.param(
            [ascii_(0x9003, "0000:00:00 00:00:00"), ascii_(0x9004, "2024:05:02 00:00:00")],
            [],
            utc(2024, 5, 1, 22, 0, 0),
            False,
            id="zero-original-then-digitized",
        ),
        pytest.param(
            [ascii_(0x9003, "    :  :     :  :  "), ascii_(0x9290, "250")],
            [],
            utc(2023, 12, 31, 23, 0, 0, 250_000),
            False,
            id="blank-original-then-datetime",
        ),
        pytest.param(
            [DTO],
            [ascii_(29, "2024:05:01"), rational(7, (8, 1), (0, 1), (1500, 1000))],
            utc(2024, 5, 1, 8, 0, 1, 500_000),
            True,
            id="gps-time-preferred",
        ),
        pytest.param(
            [DTO],
            [ascii_(29, "1970:01:01"), rational(7, (0, 1), (0, 1), (5, 1))],
            utc(2024, 5, 1, 8, 20, 30),
            False,
            id="gps-epoch-day-ignored",
        ),
        pytest.param(
            [DTO],
            [ascii_(29, "2024:05:01"), rational(7, (8, 0), (0, 1), (0, 1))],
            utc(2024, 5, 1, 8, 20, 30),
            False,
            id="gps-time-zero-denominator-ignored",
        ),
        pytest.param(
            [ascii_(0x9003, "2024:05:01 10:20:30", nul=False)],
            [],
            utc(2024, 5, 1, 8, 20, 30),
            False,
            id="ascii-without-nul",
        ),
    ],
)
def test_capture_time_rules(
    exif: list[Tag], gps: list[Tag], expected: datetime, gps_used: bool
) -> None:
    zeroth = [ascii_(0x0132, "2024:01:01 00:00:00")]
    meta = read(jpeg_with_tiff(build_tiff(zeroth, exif, gps_tags() + gps)), tz=LJUBLJANA)
    assert meta.capture_time == expected
    assert meta.gps_time_used is gps_used


def test_no_capture_time_at_all() -> None:
    with pytest.raises(NoTimeError, match=r"^t\.jpg: no capture time"):
        read(jpeg_with_tiff(build_tiff([], [ascii_(0x9003, "garbage")], gps_tags())))


# --- position, altitude, heading, camera -------------------------------------------------------


@pytest.mark.parametrize(
    ("gps", "expected"),
    [
        (gps_tags(46.5, 14.25), (46.5, 14.25)),
        (gps_tags(33.25, 70.5, "S", "W"), (-33.25, -70.5)),
        (gps_tags(33.25, 70.5, "s", "w"), (-33.25, -70.5)),
        (gps_tags(33.25, 70.5, "South ", "West"), (-33.25, -70.5)),
        (gps_tags(33.25, 70.5, "", ""), (33.25, 70.5)),
        (
            [
                rational(2, (-33, 1), (-15, 1), (0, 1), signed=True),
                rational(4, (70, 1), (30, 1), (0, 1)),
            ],
            (-33.25, 70.5),
        ),
    ],
)
def test_position(gps: list[Tag], expected: tuple[float, float]) -> None:
    meta = read(jpeg_with_tiff(build_tiff([], [DTO], gps)))
    assert (meta.lat, meta.lon) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    ("gps", "message", "reason"),
    [
        (
            [rational(2, (46, 1), (3, 1), (0, 0)), rational(4, (14, 1), (30, 1), (0, 1))],
            "no GPS",
            "no_gps",
        ),
        ([rational(2, (46, 1), (3, 1)), rational(4, (14, 1), (30, 1), (0, 1))], "no GPS", "no_gps"),
        ([rational(2, (46, 1), (3, 1), (0, 1))], "no GPS", "no_gps"),
        (gps_tags(0.0, 0.0), r"\(0, 0\)", "null_island"),
        (gps_tags(95.0, 14.0), "out of range", "no_gps"),
        (gps_tags(45.0, 181.0), "out of range", "no_gps"),
    ],
)
def test_unusable_position(gps: list[Tag], message: str, reason: str) -> None:
    with pytest.raises(NoGpsError, match=message) as info:
        read(jpeg_with_tiff(build_tiff([], [DTO], gps)))
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ([rational(6, (2505, 10))], 250.5),
        ([rational(6, (2505, 10)), Tag(5, BYTE, b"\x00")], 250.5),
        ([rational(6, (2505, 10)), Tag(5, BYTE, b"\x01")], -250.5),
        ([rational(6, (2505, 10)), rational(5, (0, 100))], 250.5),  # RATIONAL ref (OnePlus)
        ([rational(6, (2**32 - 848, 1))], -848.0),  # negative written as unsigned
        ([rational(6, (2**32 - 848, 1)), Tag(5, BYTE, b"\x01")], -848.0),
        ([rational(6, (-848, 1), signed=True), Tag(5, BYTE, b"\x01")], -848.0),
        ([rational(6, (2505, 0))], None),
        ([rational(6, (1, 1), (2, 1))], None),
    ],
)
def test_altitude(tags: list[Tag], expected: float | None) -> None:
    meta = read(jpeg_with_tiff(build_tiff([], [DTO], gps_tags() + tags)))
    assert meta.alt == expected


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ([rational(17, (18050, 100)), rational(15, (90, 1))], 180.5),
        ([rational(15, (90, 1))], 90.0),
        ([rational(17, (1, 0)), rational(15, (90, 1))], 90.0),
        ([rational(17, (400, 1))], 400.0),  # as written, not normalised
        ([], None),
    ],
)
def test_heading(tags: list[Tag], expected: float | None) -> None:
    assert read(jpeg_with_tiff(build_tiff([], [DTO], gps_tags() + tags))).heading == expected


def test_camera_fields() -> None:
    zeroth = [
        Tag(0x010F, ASCII, b"  ACME\x00\x00\x00\x00"),
        ascii_(0x0110, "Roadcam 3 "),
        short(0x0112, 6),
        short(0x0100, 4000),
        short(0x0101, 3000),
    ]
    exif = [DTO, ascii_(0xA431, "SN-0042/x"), ascii_(0xA435, "L 7")]
    meta = read(jpeg_with_tiff(build_tiff(zeroth, exif, gps_tags())))
    assert (meta.make, meta.model, meta.orientation) == ("ACME", "Roadcam 3", 6)
    assert (meta.width, meta.height, meta.camera_uuid) == (4000, 3000, "SN0042x_L7")


def test_camera_fallbacks() -> None:
    zeroth = [ascii_(0x010F, "   "), short(0x0112, 9)]
    exif = [DTO, ascii_(0xA433, "LensCo"), ascii_(0xA434, "Wide")]
    meta = read(jpeg_with_tiff(build_tiff(zeroth, exif, gps_tags())))
    assert (meta.make, meta.model, meta.orientation) == ("LensCo", "Wide", 1)
    assert (meta.width, meta.height, meta.camera_uuid) == (64, 48, None)  # from the SOF header


def xmp_segment(body: str) -> bytes:
    packet = (
        XMP_HEADER
        + b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF "
        + b"xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'>"
        + body.encode()
        + b"</rdf:RDF></x:xmpmeta>"
    )
    return b"\xff\xe1" + struct.pack(">H", len(packet) + 2) + packet


XMP_GPS = (
    "<rdf:Description xmlns:exif='http://ns.adobe.com/exif/1.0/' "
    "xmlns:tiff='http://ns.adobe.com/tiff/1.0/' "
    "exif:GPSLatitude='48,53.323582N' exif:GPSAltitude='136169/100' tiff:Make='XMPCam'>"
    "<exif:GPSLongitude>21,2.595070W</exif:GPSLongitude>"
    "<exif:DateTimeOriginal>2013-07-05T03:18:27Z</exif:DateTimeOriginal>"
    "</rdf:Description>"
)


def test_xmp_fallback() -> None:
    data = jpeg_bytes(0)
    data = data[:2] + xmp_segment(XMP_GPS) + data[2:]
    meta = read(data, tz=LJUBLJANA)
    assert meta.lat == pytest.approx(48 + 53.323582 / 60)
    assert meta.lon == pytest.approx(-(21 + 2.59507 / 60))
    assert meta.capture_time == utc(2013, 7, 5, 3, 18, 27)
    assert (meta.alt, meta.make) == (1361.69, "XMPCam")


def test_xmp_with_entities_is_ignored() -> None:
    evil = "<!DOCTYPE x [<!ENTITY a 'aaaaaaaaaa'>]>" + XMP_GPS
    data = jpeg_bytes(0)
    data = data[:2] + xmp_segment(evil) + data[2:]
    with pytest.raises(NoGpsError):
        read(data)


# --- hostile bytes ------------------------------------------------------------------------------


def test_huge_counts_are_ignored_not_allocated() -> None:
    tags = [
        Tag(0x0131, BYTE, b"\x00\x00\x00\x10", count=0xFFFFFFFF),  # Software, 4 G bytes
        Tag(0x927C, UNDEFINED, b"\x00\x00\x00\x10", count=0x7FFFFFFF),  # MakerNote
        Tag(0x0112, SHORT, b"\x00\x06\x00\x00", count=0x40000000),  # Orientation
    ]
    data = jpeg_with_tiff(build_tiff(tags, [DTO], gps_tags()))
    meta = read(data)
    assert meta.orientation == 1
    out = with_description(data, {"MAPFilename": "t.jpg"}, "t.jpg")
    assert read(out) == meta


@pytest.mark.parametrize(
    "tiff",
    [
        b"",
        b"XX\x00*\x00\x00\x00\x08",
        b"MM\x00+\x00\x00\x00\x08",
        b"MM\x00*\xff\xff\xff\xf0",
        b"/etc/passwd\x00",  # piexif.load would open this as a file name
    ],
)
def test_unreadable_exif_block(tiff: bytes) -> None:
    data = jpeg_with_tiff(tiff)
    with pytest.raises(NoGpsError, match=r"no GPS position in EXIF \(EXIF unreadable: "):
        read(data)
    out = with_description(data, {"MAPFilename": "t.jpg"}, "t.jpg")
    assert json.loads(piexif.load(exif_tiff(out))["0th"][270]) == {"MAPFilename": "t.jpg"}


def _mutations(data: bytes, rng: random.Random, n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        b = bytearray(data)
        kind = rng.randrange(4)
        if kind == 0:  # flip bytes in the header part
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(min(len(b), 4000))] = rng.randrange(256)
        elif kind == 1:  # truncate
            b = b[: rng.randrange(len(b))]
        elif kind == 2:  # insert junk
            at = rng.randrange(min(len(b), 3000))
            b[at:at] = rng.randbytes(rng.randint(1, 40))
        else:  # overwrite a 4-byte field with an extreme value
            at = rng.randrange(min(len(b), 3000))
            b[at : at + 4] = rng.choice(
                [b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff"]
            )
        out.append(bytes(b))
    return out


def _fuzz_sources() -> list[bytes]:
    t = datetime(2026, 6, 1, 9, tzinfo=UTC)
    sources = [jpeg_bytes(5, exif=exif_bytes(time=t, lat=46.0, lon=14.0, alt=300.0, heading=90.0))]
    for name in ("mapillary__test_exif.jpg", "exiftool__GoPro.jpg", "mde__Nikon_D5000.jpg"):
        if (CORPUS / name).is_file():
            sources.append((CORPUS / name).read_bytes()[:70_000])
    return sources


@pytest.mark.parametrize("seed", range(4))
def test_mutated_files_raise_only_item_errors(seed: int) -> None:
    rng = random.Random(seed)
    outcomes: set[str] = set()
    for source in _fuzz_sources():
        for data in _mutations(source, rng, 60):
            try:
                read_image_metadata(data, "fuzz.jpg", default_tz=UTC)
                outcomes.add("ok")
            except ItemError as exc:
                assert str(exc).startswith("fuzz.jpg: ")
                outcomes.add(type(exc).__name__)
            try:
                with_description(data, {"MAPFilename": "fuzz.jpg"}, "fuzz.jpg")
            except ItemError as exc:
                assert str(exc).startswith("fuzz.jpg: ")
    assert {"ok", "CorruptMediaError"} <= outcomes  # the mutations did reach both paths


# --- with_description degradation --------------------------------------------------------------


def _tags(data: bytes) -> dict[str, set[int]]:
    loaded = piexif.load(exif_tiff(data))
    return {k: set(v) for k, v in loaded.items() if isinstance(v, dict)}


def test_with_description_on_a_file_without_exif() -> None:
    data = jpeg_bytes(9)
    out = with_description(data, {"MAPLatitude": 1.0}, "x.jpg")
    assert non_exif_bytes(out) == data
    assert piexif.load(exif_tiff(out))["0th"][270] == b'{"MAPLatitude":1.0}'


def test_bad_thumbnail_is_dropped_and_everything_else_kept() -> None:
    exif = piexif.load(exif_bytes(time=datetime(2026, 6, 1, tzinfo=UTC), lat=46.0, lon=14.0))
    exif["1st"] = {piexif.ImageIFD.Compression: 6}
    exif["thumbnail"] = jpeg_bytes(1, size=(16, 16))
    data = jpeg_bytes(2, exif=piexif.dump(exif))
    stored = piexif.load(exif_tiff(data))["thumbnail"]
    at = data.index(stored)
    bad = data[:at] + b"\x00" + data[at + 1 :]  # the thumbnail loses its SOI
    out = with_description(bad, {"MAPFilename": "x"}, "x.jpg")
    loaded = piexif.load(exif_tiff(out))
    assert loaded["thumbnail"] is None
    assert _tags(out)["GPS"] == _tags(data)["GPS"]
    assert _tags(out)["Exif"] == _tags(data)["Exif"]
    good = piexif.load(exif_tiff(with_description(data, {"MAPFilename": "x"}, "x.jpg")))
    assert good["thumbnail"] == stored


def test_unencodable_tag_is_dropped_and_the_rest_kept() -> None:
    exif = [DTO, ascii_(0x829A, "1/60"), ascii_(0x829D, "f/2.8")]  # rationals written as text
    data = jpeg_with_tiff(build_tiff([ascii_(0x0131, "fw 1.0")], exif, gps_tags()))
    out = with_description(data, {"MAPFilename": "x"}, "x.jpg")
    tags = _tags(out)
    assert tags["Exif"] == {0x9003}
    assert tags["0th"] >= {0x0131, 0x010E}
    assert read(out) == read(data)


def test_oversize_drops_the_largest_non_essential_tag() -> None:
    maker_note = Tag(0x927C, UNDEFINED, bytes(65_300))
    data = jpeg_with_tiff(build_tiff([ascii_(0x0131, "fw 1.0")], [DTO, maker_note], gps_tags()))
    out = with_description(data, {"MAPFilename": "x" * 200}, "x.jpg")
    tags = _tags(out)
    assert 0x927C not in tags["Exif"]
    assert 0x0131 in tags["0th"] and 0x9003 in tags["Exif"]
    assert read(out) == read(data)


def test_unencodable_essential_tag_leaves_a_minimal_exif() -> None:
    gps = [*gps_tags(), ascii_(6, "300 m")]  # GPSAltitude as text: essential, unencodable
    data = jpeg_with_tiff(build_tiff([ascii_(0x0131, "fw 1.0")], [DTO, short(0xA405, 28)], gps))
    out = with_description(data, {"MAPFilename": "x"}, "x.jpg")
    tags = _tags(out)
    assert 0x0131 not in tags["0th"] and 0xA405 not in tags["Exif"]  # non-essential: gone
    assert tags["GPS"] == {1, 2, 3, 4} and tags["Exif"] == {0x9003}
    assert read(out) == read(data)


def test_essentials_too_big_for_a_segment() -> None:
    gps = [*gps_tags(), Tag(27, UNDEFINED, bytes(65_300))]  # GPSProcessingMethod
    data = jpeg_with_tiff(build_tiff([], [DTO], gps))
    with pytest.raises(CorruptMediaError, match=r"^x\.jpg: cannot write EXIF, even its essential"):
        with_description(data, {"MAPFilename": "x" * 300}, "x.jpg")


def test_metadata_requires_an_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ImageMetadata(
            capture_time=datetime(2024, 1, 1),  # noqa: DTZ001 - the case under test
            lat=1.0,
            lon=2.0,
            alt=None,
            heading=None,
            make=None,
            model=None,
            width=None,
            height=None,
            orientation=None,
            gps_time_used=False,
        )
