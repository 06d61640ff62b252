"""GoPro GPMF, CAMM and BlackVue readers, and read_video_track's choice among them.

GoPro: the corpus's raw GPMF payloads and its two GoPro MP4s, plus built payloads for what the
corpus lacks (GPS9, HERO11+; single SCAL values; missing GPSU). CAMM and BlackVue: there is no
licensed real CAMM or BlackVue file in the corpus (../shared/corpus/SOURCES.md, "Known gaps"),
so those files are BUILT here from the formats as documented — the CAMM spec's packet layouts,
and BlackVue's ``free``/``gps `` box of ``[milliseconds]$NMEA`` lines and ``free``/``cprt``
model string as mapillary_tools 0.14.7 parses them — and say so in each test.
"""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.errors import CorruptMediaError, ItemError
from daemon.media import blackvue, camm, gpmf, mp4
from daemon.media.nmea import checksum, gga_sentence, rmc_sentence
from daemon.media.video import VideoOptions, read_video_fileobj, read_video_track
from daemon.synth import drive_points
from tests.unit.test_mp4 import TrackSpec, box, make_mp4, udta_text

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
VIDEO = CORPUS / "video"
RAW = VIDEO / "gpmf_raw"
needs_corpus = pytest.mark.skipif(not VIDEO.is_dir(), reason=f"no video corpus at {VIDEO}")
START = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
EPOCH_2000 = datetime(2000, 1, 1, tzinfo=UTC)

# --- GPMF building -------------------------------------------------------------------------


def klv(key: bytes, type_char: str, struct_size: int, repeat: int, data: bytes) -> bytes:
    assert len(data) == struct_size * repeat
    return (
        key
        + type_char.encode("latin-1")
        + bytes([struct_size])
        + struct.pack(">H", repeat)
        + data
        + b"\x00" * (-len(data) % 4)
    )


def nest(key: bytes, *children: bytes) -> bytes:
    payload = b"".join(children)
    return klv(key, "\x00", 1, len(payload), payload)


def text(key: bytes, value: str) -> bytes:
    raw = value.encode()
    return klv(key, "c", 1, len(raw), raw)


def longs(key: bytes, values: Sequence[int]) -> bytes:
    return klv(key, "l", 4, len(values), struct.pack(f">{len(values)}i", *values))


def device(name: str, *streams: bytes, dvid: int = 1) -> bytes:
    return nest(
        b"DEVC", klv(b"DVID", "L", 4, 1, struct.pack(">I", dvid)), text(b"DVNM", name), *streams
    )


def gps5_stream(
    rows: Sequence[tuple[float, float, float, float]],
    *,
    fix: int | None = 3,
    dop: int | None = 150,
    gpsu: str | None = "240501120000.000",
    scal: Sequence[int] = (10_000_000, 10_000_000, 1000, 1000, 100),
) -> bytes:
    """A STRM with GPS5 rows of (lat, lon, alt, 2D speed); 3D speed written as 0."""
    items = [text(b"STNM", "GPS (Lat., Long., Alt., 2D speed, 3D speed)")]
    if fix is not None:
        items.append(klv(b"GPSF", "L", 4, 1, struct.pack(">I", fix)))
    if gpsu is not None:
        items.append(klv(b"GPSU", "U", 16, 1, gpsu.encode()))
    if dop is not None:
        items.append(klv(b"GPSP", "S", 2, 1, struct.pack(">H", dop)))
    items.append(longs(b"SCAL", scal))
    s = list(scal) * 5 if len(scal) == 1 else list(scal)
    data = b"".join(
        struct.pack(
            ">5i", round(la * s[0]), round(lo * s[1]), round(al * s[2]), round(sp * s[3]), 0
        )
        for la, lo, al, sp in rows
    )
    items.append(klv(b"GPS5", "l", 20, len(rows), data))
    return nest(b"STRM", *items)


GPS9_SCAL = (10_000_000, 10_000_000, 1000, 1000, 100, 1, 1000, 100, 1)


def gps9_stream(rows: Sequence[tuple[float, float, float, float, datetime, float, int]]) -> bytes:
    """A STRM with GPS9 rows of (lat, lon, alt, 2D speed, UTC time, DOP, fix)."""
    data = b""
    for lat, lon, alt, speed, when, dop, fix in rows:
        since = when - EPOCH_2000
        days = since.days
        millis = round((since - timedelta(days=days)).total_seconds() * 1000)
        data += struct.pack(
            ">7i2H",
            round(lat * 1e7),
            round(lon * 1e7),
            round(alt * 1000),
            round(speed * 1000),
            0,
            days,
            millis,
            round(dop * 100),
            fix,
        )
    return nest(
        b"STRM",
        text(b"STNM", "GPS9"),
        text(b"TYPE", "lllllllSS"),
        longs(b"SCAL", GPS9_SCAL),
        klv(b"GPS9", "?", 32, len(rows), data),
    )


def drive(
    count: int, *, seed: int = 0, spacing_m: float = 3.0
) -> list[tuple[float, float, float, float]]:
    return [
        (lat, lon, alt, 3.0)
        for _t, lat, lon, alt, _h in drive_points(
            count, start=START, spacing_m=spacing_m, seed=seed
        )
    ]


def gpmd_mp4(
    payloads: Sequence[bytes], *, durations: Sequence[int] | None = None, moov_extra: bytes = b""
) -> bytes:
    video = TrackSpec(samples=[b"\x00" * 50] * 3, durations=[1000] * 3)
    gpmd = TrackSpec(
        samples=list(payloads),
        durations=list(durations or [1001] * len(payloads)),
        handler=b"meta",
        formats=(b"gpmd",),
    )
    return make_mp4([video, gpmd], moov_extra=moov_extra)


def gopro_of(data: bytes, **kwargs: object) -> gpmf.GoProTelemetry | None:
    f = io.BytesIO(data)
    return gpmf.gopro_track(f, "gopro.mp4", **kwargs)  # type: ignore[arg-type]


# --- GPMF: KLV parsing ---------------------------------------------------------------------

RAW_EXPECTED = {
    # file: (top-level DEVC count, device names, GPS5 points in the first DEVC, first point)
    "gpmfparser__hero5.raw": (
        1,
        {"Camera"},
        18,
        (33.1264969, -117.3273542, -20.184, 1492450263.0, 3, 606),
    ),
    "gpmfparser__hero6.raw": (
        1,
        {"Hero6 Black"},
        17,
        (33.1265542, -117.3271299, -18.172, 1516822081.699, 0, 9999),
    ),
    "gpmfparser__Fusion.raw": (
        1,
        {"Fusion"},
        19,
        (33.1266299, -117.3274386, -18.524, 1521825937.375, 3, 674),
    ),
    "goprotelemetry__hero7.raw": (
        17,
        {"Hero7 Black"},
        17,
        (42.3425835, -8.7526142, 58.512, 1546533214.094, 3, 141),
    ),
    "goprotelemetry__consecutive1.raw": (
        2,
        {"Hero7 Black"},
        22,
        (42.1771847, -1.132886, -277.962, 1565624401.449, 0, 9999),
    ),
}


@needs_corpus
@pytest.mark.parametrize("file_name", sorted(RAW_EXPECTED))
def test_raw_payloads(file_name: str) -> None:
    devices, names, count, first = RAW_EXPECTED[file_name]
    items = gpmf.parse_gpmf((RAW / file_name).read_bytes(), file_name)
    assert [i.name for i in items] == ["DEVC"] * devices
    found = gpmf.payload_points(items, 0.0, 1.0)
    assert {f.device_name for f in found} == names
    assert len(found[0].points) == count
    p = found[0].points[0]
    assert (p.lat, p.lon, p.alt, p.epoch_s, p.fix, p.dop100) == first
    assert [q.time_s for q in found[0].points] == [(1.0 / count) * i for i in range(count)]


def test_klv_value_types() -> None:
    items = gpmf.parse_gpmf(
        klv(b"AAAA", "b", 1, 2, b"\xff\x01")
        + klv(b"BBBB", "S", 2, 2, struct.pack(">HH", 65535, 2))
        + klv(b"CCCC", "s", 4, 1, struct.pack(">hh", -2, 3))
        + klv(b"DDDD", "J", 8, 1, struct.pack(">Q", 2**63))
        + klv(b"EEEE", "f", 4, 1, struct.pack(">f", 1.5))
        + klv(b"FFFF", "d", 8, 1, struct.pack(">d", -2.25))
        + klv(b"GGGG", "q", 4, 1, struct.pack(">i", -(3 << 16)))
        + klv(b"HHHH", "F", 4, 2, b"ABCDEFGH")
        + klv(b"IIII", "c", 3, 2, b"degm/s")
        + klv(b"JJJJ", "?", 6, 1, struct.pack(">hL", -1, 7))
    )
    rows = {i.name: gpmf.klv_rows(i, "sL" if i.type == "?" else None) for i in items}
    assert rows["AAAA"] == [(-1,), (1,)]
    assert rows["BBBB"] == [(65535,), (2,)]
    assert rows["CCCC"] == [(-2, 3)]
    assert rows["DDDD"] == [(2**63,)]
    assert rows["EEEE"] == [(1.5,)]
    assert rows["FFFF"] == [(-2.25,)]
    assert rows["GGGG"] == [(-3.0,)]
    assert rows["HHHH"] == [(b"ABCD",), (b"EFGH",)]
    assert rows["IIII"] == [(b"deg",), (b"m/s",)]
    assert rows["JJJJ"] == [(-1, 7)]
    with pytest.raises(gpmf.GpmfError, match="no TYPE"):
        gpmf.klv_rows(items[-1])
    with pytest.raises(gpmf.GpmfError, match="TYPE 'sBB' is 4 bytes, not 6"):
        gpmf.klv_rows(items[-1], "sBB")
    with pytest.raises(gpmf.GpmfError, match="not a multiple of 4"):
        gpmf.klv_rows(gpmf.parse_gpmf(klv(b"XXXX", "l", 6, 1, b"\x00" * 6))[0])


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (klv(b"DEVC", "\x00", 1, 8, b"\x00" * 8)[:-4], "declares 8 data bytes, 4 past the end"),
        (
            nest(b"DEVC", b"GPS5l\x04\x00\x09" + b"\x00" * 4),
            "KLV b'GPS5' at offset 8 declares 36 data bytes",
        ),
        (text(b"DVNM", "Hero") + b"\x01\x02", "2 stray byte\\(s\\) at offset 12"),
    ],
)
def test_malformed_klv(payload: bytes, words: str) -> None:
    with pytest.raises(CorruptMediaError, match=words) as err:
        gpmf.parse_gpmf(payload, "payload")
    assert str(err.value).startswith("payload: ")


def test_klv_depth_and_padding() -> None:
    deep = text(b"DVNM", "x")
    for _ in range(gpmf.MAX_DEPTH + 1):
        deep = nest(b"DEVC", deep)
    with pytest.raises(CorruptMediaError, match="nests deeper than 8 levels"):
        gpmf.parse_gpmf(deep)
    assert [i.name for i in gpmf.parse_gpmf(text(b"DVNM", "x") + b"\x00" * 5)] == ["DVNM"]
    assert gpmf.parse_gpmf(b"") == ()


# --- GPMF: GPS streams ---------------------------------------------------------------------


def test_gps5_values_single_scal_and_bad_fields() -> None:
    rows = drive(4)
    items = gpmf.parse_gpmf(device("Hero9 Black", gps5_stream(rows, scal=(1000,))))
    (found,) = gpmf.payload_points(items, 10.0, 1.0)
    assert [p.time_s for p in found.points] == [10.0, 10.25, 10.5, 10.75]
    assert found.points[0].lat == round(rows[0][0] * 1000) / 1000  # one SCAL for every member
    assert found.points[0].epoch_s == START.timestamp()
    no_gpsu = gpmf.parse_gpmf(
        device("X", gps5_stream(rows, gpsu="garbage garbage!", fix=None, dop=None))
    )
    point = gpmf.payload_points(no_gpsu, 0.0, 1.0)[0].points[0]
    assert (point.epoch_s, point.fix, point.dop100) == (None, None, None)
    zero_scal = gpmf.parse_gpmf(device("X", gps5_stream(rows, scal=(0, 1, 1, 1, 1))))
    assert gpmf.payload_points(zero_scal, 0.0, 1.0)[0].points == []


def test_gps9() -> None:
    """GPS9 (HERO11+): no such payload in the corpus, so one is built from the GPMF spec."""
    rows = [
        (lat, lon, alt, 4.0, START + timedelta(seconds=i / 10), 1.5, 3)
        for i, (lat, lon, alt, _s) in enumerate(drive(10))
    ]
    items = gpmf.parse_gpmf(device("HERO11 Black", gps9_stream(rows)))
    (found,) = gpmf.payload_points(items, 0.0, 1.0)
    assert len(found.points) == 10
    p = found.points[3]
    assert p.stream == "GPS9" and p.fix == 3 and p.dop100 == 150.0 and p.speed == 4.0
    assert p.epoch_s == pytest.approx((START + timedelta(seconds=0.3)).timestamp(), abs=1e-6)
    assert p.lat == round(rows[3][0] * 1e7) / 1e7
    bad_type = gpmf.parse_gpmf(device("X", gps9_stream(rows).replace(b"lllllllSS", b"llllllllS")))
    assert gpmf.payload_points(bad_type, 0.0, 1.0)[0].points == []
    bad = gps9_stream(rows).replace(
        b"TYPEc\x01\x00\x09lllllllSS", b"TYPEc\x01\x00\x09lllllSS\x00\x00"
    )
    (skipped,) = gpmf.payload_points(gpmf.parse_gpmf(device("X", bad)), 0.0, 1.0)
    assert skipped.points == [] and "GPS9 TYPE" in skipped.notes[0]


def test_first_stream_and_first_device_win() -> None:
    first, second = drive(3, seed=1), drive(5, seed=2)
    payload = device("Cam", gps5_stream(first), gps5_stream(second), dvid=7) + device(
        "Other", gps5_stream(second), dvid=8
    )
    gps = gpmf.collect_gps([(gpmf.parse_gpmf(payload), 0.0, 1.0)])
    assert len(gps.points) == 3 and gps.devices == 2
    assert gps.device_names == {"7": "Cam", "8": "Other"}


def test_gps_times_are_back_and_forward_filled() -> None:
    rows = drive(4)
    payloads = [
        (gpmf.parse_gpmf(device("Cam", gps5_stream(rows[:2], gpsu=None))), 0.0, 1.0),
        (gpmf.parse_gpmf(device("Cam", gps5_stream(rows[2:], gpsu="240501120001.000"))), 1.0, 1.0),
    ]
    gps = gpmf.collect_gps(payloads)
    epochs = [p.epoch_s for p in gps.points]
    base = START.timestamp() + 1
    assert epochs == [base - 1.0, base - 0.5, base, base]  # GPSU is per payload: shared


def test_upper_whisker_and_camera_model() -> None:
    assert gpmf.upper_whisker([4, 1, 3, 2]) == 6.5
    assert gpmf.upper_whisker([0, 1, 2, 3, 4]) == 8.0
    with pytest.raises(ValueError, match="two values"):
        gpmf.upper_whisker([1.0])
    assert gpmf.camera_model(["Camera", "GoPro Karma v1.0"]) == "GoPro Karma v1.0"
    assert gpmf.camera_model(["GoPro Max", "Hero7 Black "]) == "Hero7 Black"
    assert gpmf.camera_model(["Zed", "Abc"]) == "Abc"
    assert gpmf.camera_model([]) == ""


def points(
    rows: Sequence[tuple[float, float, float, float]], **fields: object
) -> list[gpmf.GoProPoint]:
    out = []
    for i, (lat, lon, alt, speed) in enumerate(rows):
        values: dict[str, object] = {"fix": 3, "dop100": 150.0, "epoch_s": None, "speed": speed}
        values.update(fields)
        out.append(gpmf.GoProPoint(i * 0.1, lat, lon, alt, stream="GPS5", **values))  # type: ignore[arg-type]
    return out


def test_filters() -> None:
    rows = drive(30, spacing_m=0.3)  # 3 m/s at 10 Hz; the camera reports 3 to 5 m/s
    clean = points(rows)
    kept, notes = gpmf.filter_points(clean)
    assert kept == clean and notes == []

    noisy = points(rows)
    for i, p in enumerate(noisy):
        p.speed = 3.0 + (i % 3)
    noisy[3].fix, noisy[4].fix, noisy[5].fix = 0, 2, None
    noisy[6].dop100 = 1200
    teleport = noisy[15]
    teleport.lat += 0.01  # 1.1 km away for one sample
    kept, notes = gpmf.filter_points(noisy)
    assert noisy[3] not in kept and noisy[6] not in kept and teleport not in kept
    assert noisy[4] in kept and noisy[5] in kept
    assert len(kept) == 27
    assert notes == [
        "1 point(s) without a GPS fix in [2, 3]",
        "1 point(s) with DOP × 100 above 1000",
        "1 outlier point(s) (precision 15 m)",
    ]
    off = gpmf.GpsFilter(fixes=None, max_dop100=None, precision_m=None)
    assert gpmf.filter_points(noisy, off) == (noisy, [])
    custom = gpmf.GpsFilter(fixes=frozenset({3}), max_dop100=500, precision_m=None)
    kept, _ = gpmf.filter_points(noisy, custom)
    assert noisy[4] not in kept and teleport in kept


# --- GPMF: MP4 files -----------------------------------------------------------------------


def test_gopro_track_from_built_mp4() -> None:
    """A gpmd track of three GPS9 payloads, one of them without a fix; MINF and FIRM in udta."""
    rows = drive(12)
    payloads = []
    for second in range(3):
        chunk = rows[second * 4 : second * 4 + 4]
        fix = 0 if second == 1 else 3
        gps9 = [
            (la, lo, al, 3.0, START + timedelta(seconds=second + i / 4), 1.2, fix)
            for i, (la, lo, al, _s) in enumerate(chunk)
        ]
        payloads.append(device("HERO11 Black", gps9_stream(gps9)))
    udta = box(
        b"udta",
        box(b"FIRM", b"H22.01.02.32.00")
        + box(b"GPMF", device("Global Settings", text(b"MINF", "HERO11 Black Mini"))),
    )
    telemetry = gopro_of(gpmd_mp4(payloads, moov_extra=udta))
    assert telemetry is not None and telemetry.timed is not None
    assert len(telemetry.raw_points) == 12 and len(telemetry.points) == 8
    assert [p.time_s for p in telemetry.points[:5]] == [1.001 / 4 * i for i in range(4)] + [2.002]
    assert telemetry.model == "HERO11 Black Mini" and telemetry.firmware == "H22.01.02.32.00"
    assert telemetry.timed.clock == "gps" and telemetry.timed.start_time == START
    assert "4 point(s) without a GPS fix in [2, 3]" in telemetry.notes


def test_gpmd_without_devc_is_not_gopro() -> None:
    """Other cameras reuse the gpmd sample format (mapillary_tools mentions a VANTRUE dashcam)."""
    data = gpmd_mp4([text(b"XXXX", "not gopro")] * 2)
    assert gopro_of(data) is None
    with pytest.raises(ItemError) as err:
        read_video_fileobj(io.BytesIO(data), "dashcam.mp4")
    assert err.value.reason == "no_video_gps"


def test_gopro_all_filtered_is_gps_noise() -> None:
    payload = device("Hero8 Black", gps5_stream(drive(5), fix=0))
    with pytest.raises(ItemError, match="all 10 point\\(s\\) were filtered out") as err:
        read_video_fileobj(io.BytesIO(gpmd_mp4([payload, payload])), "noisy.mp4")
    assert err.value.reason == "gps_noise"
    unfiltered = VideoOptions(gps_filter=gpmf.GpsFilter(fixes=None))
    assert (
        len(read_video_fileobj(io.BytesIO(gpmd_mp4([payload, payload])), "x", unfiltered).points)
        == 10
    )


def test_unparsable_payload_is_skipped() -> None:
    good = device("Hero8 Black", gps5_stream(drive(5)))
    telemetry = gopro_of(gpmd_mp4([good, good[:-6], good]))
    assert telemetry is not None and len(telemetry.points) == 10
    assert "1 gpmd payload(s) that do not parse were skipped" in telemetry.notes


@needs_corpus
def test_karma_reads_the_drone_gps_unless_told_not_to() -> None:
    """HERO5 on a Karma drone: the camera's DEVC has no GPS stream; the drone's DEVC has GPRI.
    mapillary_tools reads only GPS5/GPS9 and gets no point; we read GPRI (see the
    integration test for the comparison and the reasons)."""
    path = VIDEO / "gpmfparser__karma.mp4"
    with open(path, "rb") as f:
        telemetry = gpmf.gopro_track(f, "karma.mp4")
        assert telemetry is not None and telemetry.timed is not None
        assert len(telemetry.points) == 47 and {p.stream for p in telemetry.raw_points} == {"GPRI"}
        assert telemetry.timed.clock == "gps"
        # the drone's SYST clock puts the first fix 0.63 s before the camera's mvhd time
        assert telemetry.timed.start_time == datetime(2017, 4, 17, 19, 27, 57, 367422, tzinfo=UTC)
        off = gpmf.gopro_track(f, "karma.mp4", options=gpmf.GoProOptions(karma_gpri=False))
    assert off is not None and off.timed is None and off.raw_points == ()
    assert off.model == "GoPro Karma v1.0" and off.firmware == "HD5.02.02.00.00"
    with pytest.raises(ItemError, match="no GPS stream \\(GPS5/GPS9\\)") as err:
        read_video_track(path, VideoOptions(gopro=gpmf.GoProOptions(karma_gpri=False)))
    assert err.value.reason == "no_video_gps"


# --- CAMM ----------------------------------------------------------------------------------


def test_camm_encode_parse_round_trip() -> None:
    five = camm.encode_min_gps(46.0569, 14.5058, 301.5)
    assert len(five) == 28 and five[:4] == b"\x00\x00\x05\x00"
    assert camm.parse_camm_sample(five) == camm.CammPacket(5, (46.0569, 14.5058, 301.5))
    assert camm.gps_from_packet(
        camm.parse_camm_sample(camm.encode_min_gps(1.0, 2.0, None))
    ) == camm.CammGps(1.0, 2.0, -1.0)  # type: ignore[arg-type]
    point = camm.CammGps(46.0, 14.0, 300.25, 1_714_564_800.125, 3, 2.5, 4.0, 1.0, -2.0, 0.5, 0.25)
    six = camm.encode_gps(point)
    assert len(six) == 60
    assert camm.gps_from_packet(camm.parse_camm_sample(six)) == point  # type: ignore[arg-type]
    assert point.speed == pytest.approx(5**0.5)
    with pytest.raises(ValueError, match="needs epoch_s"):
        camm.encode_gps(camm.CammGps(1.0, 2.0, 3.0))


def test_encode_point_follows_mapillary_tools() -> None:
    with_time = camm.parse_camm_sample(camm.encode_point(mp4.TimedPoint(0.0, 1.0, 2.0, None, 1e9)))
    assert with_time is not None and with_time.type == 6
    assert with_time.values[:5] == (1e9, 2, 1.0, 2.0, -1.0)  # fix 2 without altitude
    with_alt = camm.parse_camm_sample(camm.encode_point(mp4.TimedPoint(0.0, 1.0, 2.0, 5.0, 1e9)))
    assert with_alt is not None and with_alt.values[1] == 3
    without = camm.parse_camm_sample(camm.encode_point(mp4.TimedPoint(0.0, 1.0, 2.0, 5.0)))
    assert without == camm.CammPacket(5, (1.0, 2.0, 5.0))


@pytest.mark.parametrize(
    ("packet_type", "payload", "values"),
    [
        (0, struct.pack("<3f", 0.5, 0.25, 1.0), (0.5, 0.25, 1.0)),
        (1, struct.pack("<2i", 1000, -20), (1000, -20)),
        (2, struct.pack("<3f", 1.0, 2.0, 3.0), (1.0, 2.0, 3.0)),
        (3, struct.pack("<3f", 0.0, 9.75, 0.0), (0.0, 9.75, 0.0)),
        (4, struct.pack("<3f", 1.0, 1.0, 1.0), (1.0, 1.0, 1.0)),
        (7, struct.pack("<3f", 20.0, 0.0, -40.0), (20.0, 0.0, -40.0)),
    ],
)
def test_camm_other_types(packet_type: int, payload: bytes, values: tuple[float, ...]) -> None:
    packet = camm.parse_camm_sample(struct.pack("<HH", 0, packet_type) + payload)
    assert packet == camm.CammPacket(packet_type, values)
    assert camm.gps_from_packet(packet) is None


def test_camm_unknown_and_short() -> None:
    assert camm.parse_camm_sample(struct.pack("<HH", 0, 9) + b"\x00" * 40) is None
    with pytest.raises(CorruptMediaError, match="needs 60 bytes, the sample has 30"):
        camm.parse_camm_sample(camm.encode_gps(camm.CammGps(1, 2, 3, 4.0))[:30], "s")
    with pytest.raises(CorruptMediaError, match="too short for a CAMM header"):
        camm.parse_camm_sample(b"\x00")


def camm_mp4(
    samples: Sequence[bytes],
    durations: Sequence[int],
    *,
    edits: Sequence[tuple[int, int]] = (),
    moov_extra: bytes = b"",
) -> bytes:
    video = TrackSpec(samples=[b"\x00" * 40] * 2, durations=[5000, 5000])
    track = TrackSpec(
        samples=list(samples),
        durations=list(durations),
        handler=b"camm",
        formats=(b"camm",),
        edits=edits,
    )
    return make_mp4([video, track], moov_extra=moov_extra)


def test_camm_track_from_built_mp4() -> None:
    """A built CAMM track (no real one in the corpus): gyro packets between GPS packets, a type-5
    point that the type-6 ones take precedence over, an initial empty edit, @mak/@mod."""
    rows = drive(5)
    samples, durations = [], []
    for i, (lat, lon, alt, _s) in enumerate(rows):
        samples.append(
            camm.encode_gps(
                camm.CammGps(lat, lon, alt, START.timestamp() + i, 3, 1.0, 2.0, 3.0, 4.0, 0.0, 0.5)
            )
        )
        samples.append(struct.pack("<HH3f", 0, 2, 0.1, 0.2, 0.3))
        durations += [500, 500]
    samples.append(camm.encode_min_gps(1.0, 2.0, 3.0))
    durations.append(0)
    udta = box(b"udta", box(b"@mak", b"Insta360") + box(b"@mod", b"Pro2 "))
    data = camm_mp4(samples, durations, edits=[(2500, -1), (6000, 0)], moov_extra=udta)
    telemetry = camm.camm_track(io.BytesIO(data), "camm.mp4")
    assert telemetry is not None and telemetry.timed is not None and telemetry.kind == 6
    assert [p.time_s for p in telemetry.points] == [
        2.5,
        3.5,
        4.5,
        5.5,
        6.5,
    ]  # shifted by the empty edit
    assert [p.lat for p in telemetry.points] == [r[0] for r in rows]
    assert telemetry.points[0].speed == pytest.approx(5.0)
    assert (telemetry.make, telemetry.model) == ("Insta360", "Pro2")
    assert telemetry.timed.start_time == START - timedelta(seconds=2.5)
    video = read_video_fileobj(io.BytesIO(data), "camm.mp4")
    assert video.source == "camm" and video.model == "Pro2" and len(video.points) == 5


def test_camm_edit_list_keeps_only_edited_media() -> None:
    samples = [camm.encode_min_gps(float(i), 2.0, 3.0) for i in range(6)]
    data = camm_mp4(samples, [1000] * 6, edits=[(2000, 1000)])  # media 1 s .. 3 s
    telemetry = camm.camm_track(io.BytesIO(data), "camm.mp4")
    assert telemetry is not None and telemetry.kind == 5
    assert [(p.time_s, p.lat) for p in telemetry.points] == [(1.0, 1.0), (2.0, 2.0), (3.0, 3.0)]
    assert "3 CAMM GPS sample(s) outside the track's edit list dropped" in telemetry.notes


def test_camm_without_gps_and_short_samples() -> None:
    data = camm_mp4(
        [struct.pack("<HH3f", 0, 3, 0.0, 9.8, 0.0), struct.pack("<HH", 0, 6) + b"\x00" * 10],
        [10, 10],
    )
    telemetry = camm.camm_track(io.BytesIO(data), "imu.mp4")
    assert telemetry is not None and telemetry.timed is None
    assert telemetry.notes == (
        "1 CAMM sample(s) too short for their packet type skipped",
        "the CAMM track has no GPS packet (type 5 or 6)",
    )
    with pytest.raises(ItemError, match="CAMM track without GPS") as err:
        read_video_fileobj(io.BytesIO(data), "imu.mp4")
    assert err.value.reason == "no_video_gps"


# --- BlackVue ------------------------------------------------------------------------------

CAMERA_UTC_OFFSET_MS = 2 * 3600 * 1000  # the camera clock runs in local time (UTC+2)


def blackvue_gps(
    count: int = 10,
    *,
    rmc: bool = True,
    gga: bool = True,
    noise: bool = True,
    talker: str = "GP",
    trailing_stamp: bool = False,
) -> tuple[bytes, list[tuple[datetime, float, float, float]]]:
    """A ``gps `` box payload as BlackVue writes it: ``[camera ms]$NMEA`` per line, one fix a
    second, the bracket clock in local time and a few ms after the fix it stamps."""
    fixes = [
        (t, lat, lon, alt)
        for t, lat, lon, alt, _h in drive_points(count, start=START, spacing_m=8.0)
    ]
    lines = []
    for i, (when, lat, lon, alt) in enumerate(fixes):
        ms = round(when.timestamp() * 1000) + CAMERA_UTC_OFFSET_MS + 37 + (i % 3)
        stamp = f"[{ms}]"
        if noise:
            body = "GPGSV,3,1,11,01,45,100,40"
            lines.append(f"{stamp}${body}*{checksum(body)}")
        if rmc:
            lines.append(
                stamp
                + rmc_sentence(when, lat, lon, speed_knots=15.5, course=45.0, talker=talker)
                + (f"[{ms}]" if trailing_stamp else "")
            )
        if gga:
            lines.append(stamp + gga_sentence(when, lat, lon, alt, talker=talker))
    if noise:
        bad = rmc_sentence(START, 1.0, 1.0)
        lines.append(f"[{round(START.timestamp() * 1000)}]{bad[:-2]}00")  # bad checksum
        void = rmc_sentence(START, 1.0, 1.0, valid=False)
        lines.append(f"[{round(START.timestamp() * 1000)}]{void}")
        lines.append("garbage without a stamp")
    return ("\n".join(lines) + "\n").encode(), fixes


def blackvue_mp4(
    gps: bytes, cprt: bytes | None = b' {"model":"DR900X Plus","ver":0.918,"lang":"English"}'
) -> bytes:
    """ftyp, free(gps , cprt), mdat, moov — the BlackVue layout (built: no real file exists)."""
    free = box(b"free", box(b"gps ", gps) + (box(b"cprt", cprt) if cprt is not None else b""))
    video = TrackSpec(samples=[b"\x00" * 30] * 3, durations=[1000] * 3)
    return make_mp4([video], top_extra=free)


def test_blackvue_rmc_with_gga_altitude() -> None:
    """Built BlackVue file (no licensed real one exists): the camera clock in local time is
    corrected by the first RMC; RMC points take the GGA altitude of the same stamp."""
    gps, fixes = blackvue_gps()
    telemetry = blackvue.blackvue_track(io.BytesIO(blackvue_mp4(gps)), "bv.mp4")
    assert telemetry is not None and telemetry.timed is not None
    assert (telemetry.make, telemetry.model) == ("BlackVue", "DR900X Plus")
    assert len(telemetry.points) == 10
    # the first RMC sets the camera's offset (-2 h and its 37 ms stamping lag): UTC again
    assert telemetry.timed.start_time == START
    assert telemetry.timed.clock == "gps"
    assert [round(p.time_s, 3) for p in telemetry.points[:4]] == [0.0, 1.001, 2.002, 3.0]
    for point, (_when, lat, lon, alt) in zip(telemetry.points, fixes, strict=True):
        assert point.lat == pytest.approx(lat, abs=1e-7) and point.lon == pytest.approx(
            lon, abs=1e-7
        )
        assert point.alt == pytest.approx(alt, abs=0.05)


def test_blackvue_gga_only_and_gn_talker() -> None:
    gps, fixes = blackvue_gps(rmc=False, talker="GN")
    parsed = blackvue.parse_gps_box(gps)
    assert parsed.clock == "gps" and len(parsed.points) == 10
    assert parsed.points[0].epoch_s == START.timestamp()
    assert parsed.points[1].epoch_s == START.timestamp() + 1.001
    assert parsed.points[0].alt == pytest.approx(fixes[0][3], abs=0.05)


def test_blackvue_trailing_stamp_and_no_time() -> None:
    gps, _ = blackvue_gps(count=3, gga=False, noise=False, trailing_stamp=True)
    assert len(blackvue.parse_gps_box(gps).points) == 3
    body = "GPGLL,4603.4140,N,01430.3480,E,,A,A"  # GLL without a time: the camera clock stays
    parsed = blackvue.parse_gps_box(f"[1714564800000]${body}*{checksum(body)}\n".encode())
    assert parsed.clock == "camera" and parsed.points[0].epoch_s == 1714564800.0
    assert parsed.notes == ["no NMEA time: the camera clock is taken as UTC"]


def test_blackvue_without_fix() -> None:
    gps, _ = blackvue_gps(count=3, rmc=False, gga=False)
    data = blackvue_mp4(gps, cprt=b"Pittasoft Co., Ltd.;DR900S-1CH;1.008;English;1;")
    telemetry = blackvue.blackvue_track(io.BytesIO(data), "bv.mp4")
    assert telemetry is not None and telemetry.timed is None and telemetry.model == "DR900S-1CH"
    with pytest.raises(ItemError, match="BlackVue video without GPS") as err:
        read_video_fileobj(io.BytesIO(data), "bv.mp4")
    assert err.value.reason == "no_video_gps"


def test_free_box_of_padding_is_not_blackvue() -> None:
    video = TrackSpec(samples=[b"\x00" * 30], durations=[1000])
    for junk in (b"\x00" * 64, b"\x12\x34" * 40):
        data = make_mp4([video], top_extra=box(b"free", junk))
        assert blackvue.blackvue_track(io.BytesIO(data), "x.mp4") is None


@pytest.mark.parametrize(
    ("cprt", "model"),
    [
        (b' {"model":"DR900X Plus","ver":0.918,"GPS":1}', "DR900X Plus"),
        (
            b" Pittasoft Co., Ltd.;DR900S-1CH;1.008;English;1;D90SS1HAE00661;T69;\x00\x00",
            "DR900S-1CH",
        ),
        (b"Pittasoft", ""),
        (b"\xff\xfe", ""),
        (json.dumps([1, 2]).encode(), ""),
    ],
)
def test_cprt(cprt: bytes, model: str) -> None:
    assert blackvue.camera_model_from_cprt(cprt) == model


# --- read_video_track ----------------------------------------------------------------------

CORPUS_VIDEOS = {
    "gpmfparser__max-heromode.mp4": ("gopro", "GoPro Max", 191, "gps"),
    "gpmfparser__karma.mp4": ("gopro", "GoPro Karma v1.0", 47, "gps"),
    "mde__with-gps.mov": ("quicktime_location", "iPhone 6", 1, "camera"),
    "mde__with-gps.mp4": ("quicktime_location", "", 1, "container"),
    "mde__sample.3gp": "no_video_gps",
    "exiftool__QuickTime.mov": "no_video_gps",
    "mde__ftyp3gp5.mp4": "null_island",
}


@needs_corpus
@pytest.mark.parametrize("file_name", sorted(CORPUS_VIDEOS))
def test_corpus_videos(file_name: str) -> None:
    expected = CORPUS_VIDEOS[file_name]
    if isinstance(expected, str):
        with pytest.raises(ItemError) as err:
            read_video_track(VIDEO / file_name)
        assert err.value.reason == expected
        assert str(err.value).startswith(str(VIDEO / file_name))
        return
    source, model, count, clock = expected
    video = read_video_track(VIDEO / file_name)
    assert (video.source, video.model, len(video.points), video.clock) == (
        source,
        model,
        count,
        clock,
    )
    assert video.track.point_count == count
    assert video.duration_s is not None and video.duration_s > 0


@needs_corpus
def test_single_location_times() -> None:
    mov = read_video_track(VIDEO / "mde__with-gps.mov")
    assert mov.start_time == datetime(2019, 7, 24, 8, 25, 40, tzinfo=UTC)  # Apple creationdate
    assert (mov.make, mov.points[0].alt) == ("Apple", 28.516)
    mp4_video = read_video_track(VIDEO / "mde__with-gps.mp4")
    assert mp4_video.start_time == datetime(2017, 2, 22, 8, 20, 28, tzinfo=UTC)  # mvhd
    assert (mp4_video.points[0].lat, mp4_video.points[0].lon) == (51.4169, -0.0806)
    off = VideoOptions(quicktime_location=False)
    with pytest.raises(ItemError) as err:
        read_video_track(VIDEO / "mde__with-gps.mp4", off)
    assert err.value.reason == "no_video_gps"


@needs_corpus
@pytest.mark.parametrize("cut", [5_000, 3_638_610, 3_650_000])
def test_truncated_video(cut: int, tmp_path: Path) -> None:
    path = tmp_path / "cut.mp4"
    path.write_bytes((VIDEO / "gpmfparser__max-heromode.mp4").read_bytes()[:cut])
    with pytest.raises(CorruptMediaError) as err:
        read_video_track(path)
    assert err.value.reason == "truncated_mp4"


def test_unreadable_paths(tmp_path: Path) -> None:
    for path in (tmp_path / "missing.mp4", tmp_path):
        with pytest.raises(ItemError) as err:
            read_video_track(path)
        assert err.value.reason == "unreadable"


def test_gopro_is_tried_before_camm_and_location() -> None:
    gopro_payload = device("Hero8 Black", gps5_stream(drive(4)))
    gpmd = TrackSpec(samples=[gopro_payload], durations=[1001], handler=b"meta", formats=(b"gpmd",))
    camm_track = TrackSpec(
        samples=[camm.encode_min_gps(1.0, 2.0, 3.0)],
        durations=[10],
        handler=b"camm",
        formats=(b"camm",),
    )
    udta = box(b"udta", udta_text(b"\xa9xyz", "+10.0+020.0/"))
    both = make_mp4([gpmd, camm_track], moov_extra=udta)
    assert read_video_fileobj(io.BytesIO(both), "x").source == "gopro"
    camm_only = make_mp4([camm_track], moov_extra=udta)
    assert read_video_fileobj(io.BytesIO(camm_only), "x").source == "camm"
    assert (
        read_video_fileobj(
            io.BytesIO(make_mp4([TrackSpec([b"a"], [1])], moov_extra=udta)), "x"
        ).source
        == "quicktime_location"
    )
