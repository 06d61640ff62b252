"""Track readers: GPX (every corpus file), NMEA (generated logs) and geotag CSV files."""

from __future__ import annotations

import codecs
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from daemon.errors import ItemError
from daemon.geo.track import Track, TrackFix, locate
from daemon.media.csvtrack import CsvRow, match_csv_rows, read_csv_geotags
from daemon.media.gpx import read_gpx
from daemon.media.nmea import GAP_S, checksum, gga_sentence, read_nmea, rmc_sentence
from daemon.synth import drive_points

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
GPX_DIR = CORPUS / "gpx"
GPX_FILES = sorted(GPX_DIR.glob("*.gpx")) if GPX_DIR.is_dir() else []

# --- GPX -----------------------------------------------------------------------------------

#: What each corpus file must give: segment sizes, or the reason text of the refusal.
GPX_EXPECTED: dict[str, list[int] | str] = {
    "exiftool__Geotag.gpx": [9],
    "gpsbabel__garminconnect.gpx": [68],
    "gpxpy__Mojstrovka.gpx": "184 timed before 1980-01-06 (the GPS epoch)",
    "gpxpy__around-visnjan-with-car.gpx": [104],
    "gpxpy__cerknicko-jezero.gpx": [173, 52, 2, 44, 2, 2, 21],
    "gpxpy__cerknicko-without-times.gpx": "291 of 296 track points have no time",
    "gpxpy__gpx1.0_with_all_fields.gpx": [1],
    "gpxpy__gpx_with_garmin_extension.gpx": "no tracks (<trk>) (1 waypoint(s) ignored",
    "gpxpy__track-with-empty-segment.gpx": [9],
    "gpxpy__unicode_with_bom.gpx": "no tracks (<trk>) (1 waypoint(s) ignored",
    "mapillary__sf_30km_h.gpx": [49],
    "sportslib__4623204522-1.gpx": [88],
    "sportslib__garmin.gpx": [217],
    "togeojson__Friday-Evening-Run.gpx": [4, 5, 8],
    "togeojson__bad.gpx": "invalid GPX content: Invalid value",
    "togeojson__empty_trk.gpx": "1 track(s) but no track points",
    "togeojson__missing_hr.gpx": [3, 10, 3],
    "togeojson__multitrackgpx.gpx": [38, 65, 14],
    "togeojson__run.gpx": [206],
    "togeojson__run_gpxtpx.gpx": [42],
}


@pytest.mark.skipif(not GPX_FILES, reason=f"no GPX corpus at {GPX_DIR}")
@pytest.mark.parametrize("path", GPX_FILES, ids=[p.name for p in GPX_FILES])
def test_every_corpus_gpx_gives_a_track_or_a_named_reason(path: Path) -> None:
    expected = GPX_EXPECTED.get(path.name)
    try:
        track = read_gpx(path)
    except ItemError as exc:
        assert exc.reason == "bad_gpx"
        assert str(exc).startswith(str(path))
        assert isinstance(expected, str), f"{path.name} refused: {exc}"
        assert expected in str(exc)
        return
    assert not isinstance(expected, str), f"{path.name} should be refused with {expected!r}"
    if expected is not None:  # a file added to the corpus later still must not raise
        assert [len(s) for s in track.segments] == expected
    for segment in track.segments:
        times = [p.time for p in segment]
        assert times == sorted(times)
        assert all(t.utcoffset() == timedelta(0) for t in times)
    assert track.source == str(path)


@pytest.mark.skipif(not GPX_FILES, reason=f"no GPX corpus at {GPX_DIR}")
def test_corpus_gpx_details() -> None:
    geotag = read_gpx(GPX_DIR / "exiftool__Geotag.gpx")  # stored newest first
    assert geotag.start == datetime(2003, 5, 24, 17, 9, 4, tzinfo=UTC)
    empty = read_gpx(GPX_DIR / "gpxpy__track-with-empty-segment.gpx")
    assert "1 track segment(s) without usable points were skipped" in empty.notes
    naive = read_gpx(GPX_DIR / "gpxpy__gpx1.0_with_all_fields.gpx")
    assert naive.start == datetime(2013, 1, 1, 12, 0, 4, tzinfo=UTC)
    assert "1 track point times had no zone and were read as UTC" in naive.notes
    assert "2 route(s) ignored" in naive.notes and "2 waypoint(s) ignored" in naive.notes
    # each <trk> of a multi-track file stays its own segment: a day apart, never joined
    multi = read_gpx(GPX_DIR / "togeojson__multitrackgpx.gpx")
    gap_time = multi.segments[0][-1].time + timedelta(hours=5)
    outside = locate(multi, gap_time)
    assert not isinstance(outside, TrackFix) and outside.code == "in_track_gap"
    run = read_gpx(GPX_DIR / "togeojson__Friday-Evening-Run.gpx")
    assert run.start == datetime(2025, 5, 2, 15, 51, 15, 692000, tzinfo=UTC)


TRACK_GPX = """<?xml version="1.0" encoding="{encoding}"?>
<gpx version="1.1" creator="test" xmlns="http://www.topografix.com/GPX/1/1">
  <trk><name>Čerknica</name><trkseg>
    <trkpt lat="46.0" lon="14.0"><ele>300</ele><time>2026-06-01T09:00:00Z</time></trkpt>
    <trkpt lat="46.001" lon="14.0"><time>2026-06-01T11:00:10+02:00</time></trkpt>
    <trkpt lat="46.002" lon="14.0"></trkpt>
  </trkseg></trk>
</gpx>
"""


@pytest.mark.parametrize(
    ("prefix", "encoding", "codec"),
    [
        (codecs.BOM_UTF8, "UTF-8", "utf-8"),
        (b"", "UTF-8", "utf-8"),
        (b"", "ISO-8859-2", "iso-8859-2"),
        (codecs.BOM_UTF16_LE, "UTF-16", "utf-16-le"),
    ],
)
def test_gpx_encodings_and_byte_order_marks(
    tmp_path: Path, prefix: bytes, encoding: str, codec: str
) -> None:
    path = tmp_path / "track.gpx"
    path.write_bytes(prefix + TRACK_GPX.format(encoding=encoding).encode(codec))
    track = read_gpx(path)
    assert [(p.lat, p.alt) for p in track.points()] == [(46.0, 300.0), (46.001, None)]
    assert track.end == datetime(2026, 6, 1, 9, 0, 10, tzinfo=UTC)
    assert track.notes == ("1 of 3 track points without a time were dropped",)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"<gpx><trk><trkseg>\n<trkpt lat='1' lon='2'></trkseg></trk></gpx>", "line 2, column"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "not valid utf-8 text at byte 0"),
        (b"<?xml version='1.0'?><kml><Document/></kml>", "not a GPX document"),
        (b"<?xml version='1.0' encoding='klingon'?><gpx/>", "unknown text encoding 'klingon'"),
        (b"<?xml version='1.0' encoding='rot13'?><gpx/>", "unknown text encoding 'rot13'"),
        (
            b"<gpx><trk><trkseg><trkpt lat='91' lon='2'><time>2026-01-01T00:00:00Z</time>"
            b"</trkpt></trkseg></trk></gpx>",
            "1 with a position out of range",
        ),
        (
            b"<gpx><trk><trkseg><trkpt lat='1' lon='2'><time>9999-12-31T23:59:59-14:00</time>"
            b"</trkpt></trkseg></trk></gpx>",
            "1 with a time out of range",
        ),
        (
            b"<gpx><trk><trkseg><trkpt lat='1' lon='2'><time>yesterday</time>"
            b"</trkpt></trkseg></trk></gpx>",
            "1 without a time",
        ),
    ],
)
def test_broken_gpx_is_a_named_reason(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "broken.gpx"
    path.write_bytes(content)
    with pytest.raises(ItemError) as caught:
        read_gpx(path)
    assert caught.value.reason == "bad_gpx"
    assert str(caught.value).startswith(f"{path}: ")
    assert reason in str(caught.value)


def test_unreadable_gpx_is_a_named_reason(tmp_path: Path) -> None:
    with pytest.raises(ItemError, match="cannot read") as caught:
        read_gpx(tmp_path / "missing.gpx")
    assert caught.value.reason == "bad_gpx"
    with pytest.raises(ItemError, match="cannot read"):
        read_gpx(tmp_path)  # a directory


# --- NMEA ----------------------------------------------------------------------------------

START = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
Fix = tuple[datetime, float, float, float, float]  # time, lat, lon, alt, heading


def drive(count: int, start: datetime = START, interval_s: float = 1.0) -> list[Fix]:
    return list(drive_points(count, start=start, interval_s=interval_s, spacing_m=8.0, seed=5))


def nmea_log(
    points: list[Fix],
    *,
    talker: str = "GP",
    gga_first: bool = False,
    rmc_every: int = 1,
) -> list[str]:
    """RMC + GGA per fix, as a logger writes them (speed 15.55 kn, course = heading)."""
    lines: list[str] = []
    for i, (t, lat, lon, alt, heading) in enumerate(points):
        rmc = rmc_sentence(t, lat, lon, speed_knots=15.55, course=heading, talker=talker)
        gga = gga_sentence(t, lat, lon, alt, talker=talker)
        pair = [gga, rmc] if gga_first else [rmc, gga]
        lines.extend(s for s in pair if s is gga or i % rmc_every == 0)
    return lines


def write(tmp_path: Path, lines: list[str], name: str = "log.nmea") -> Path:
    path = tmp_path / name
    path.write_text("\r\n".join(lines) + "\r\n", encoding="ascii")
    return path


def assert_same(track: Track, points: list[Fix]) -> None:
    got = list(track.points())
    assert len(got) == len(points)
    for p, (t, lat, lon, alt, heading) in zip(got, points, strict=True):
        assert p.time == t.replace(microsecond=t.microsecond // 1000 * 1000)
        assert p.lat == pytest.approx(lat, abs=1e-8)
        assert p.lon == pytest.approx(lon, abs=1e-8)
        assert p.alt == pytest.approx(round(alt, 1), abs=1e-9)
        assert p.heading == pytest.approx(round(heading, 2), abs=1e-9)


@pytest.mark.parametrize("talker", ["GP", "GN", "GL", "GA", "GB"])
def test_nmea_reads_back_a_drive_exactly(tmp_path: Path, talker: str) -> None:
    points = drive(120, interval_s=0.5)
    track = read_nmea(write(tmp_path, nmea_log(points, talker=talker)))
    assert len(track.segments) == 1
    assert_same(track, points)
    assert track.notes == ()


def test_nmea_mixed_talkers_merge_per_instant(tmp_path: Path) -> None:
    points = drive(30)
    lines = nmea_log(points, talker="GN")
    lines += [gga_sentence(t, la + 0.5, lo, alt, talker="GL") for t, la, lo, alt, _ in points]
    track = read_nmea(write(tmp_path, lines))
    assert_same(track, points)  # the first sentence of an instant wins


UNKNOWN_TALKER = "XXGGA,090000.000,4603.0000,N,01430.0000,E,1,08,0.9,300.0,M,46.9,M,,"


def test_nmea_bad_checksums_invalid_fixes_and_noise_are_skipped_and_counted(
    tmp_path: Path,
) -> None:
    points = drive(60)
    lines = nmea_log(points)
    corrupted = lines[10].replace(",N,", ",S,")  # flipped hemisphere, old checksum
    lines[10] = corrupted
    lines[11] = lines[11][:-2] + "00"  # wrong checksum digits
    void_t = START + timedelta(seconds=100)
    lines += [
        rmc_sentence(void_t, 10.0, 10.0, valid=False),  # status V
        gga_sentence(void_t, 10.0, 10.0, 5.0, quality=0),  # no fix
        "$GPGSV,3,1,11,03,03,111,00,04,15,270,00,06,01,010,00,13,06,292,00*74",
        "garbage without a dollar",
        f"${UNKNOWN_TALKER}*{checksum(UNKNOWN_TALKER)}",
        lines[0].split("*")[0],  # no checksum: accepted (it is complete)
        lines[2][:25],  # truncated last line: skipped
    ]
    track = read_nmea(write(tmp_path, lines))
    # epoch 5 lost its RMC (line 10) and GGA (line 11): no point; everything else intact
    expected = points[:5] + points[6:]
    got = list(track.points())
    assert [p.time for p in got] == [t for t, *_ in expected]
    assert got[4].heading is not None
    notes = " | ".join(track.notes)
    assert "2 sentence(s) with a bad checksum skipped" in notes
    assert "1 sentence(s) invalid fixes (RMC status V) skipped" in notes
    assert "1 sentence(s) invalid fixes (GGA quality 0) skipped" in notes
    assert "1 sentence(s) truncated skipped" in notes
    assert "1 sentence(s) without a checksum (accepted)" in notes
    assert "1 sentence(s) from an unknown talker (XX) skipped" in notes


def test_nmea_midnight_rollover(tmp_path: Path) -> None:
    """GGA before RMC, RMC only every 10 s: GGAs after midnight still get the new date."""
    points = drive(90, start=datetime(2026, 12, 31, 23, 59, 15, tzinfo=UTC))
    track = read_nmea(write(tmp_path, nmea_log(points, gga_first=True, rmc_every=10)))
    got = list(track.points())
    assert [p.time for p in got] == [t for t, *_ in points]
    assert got[-1].time == datetime(2027, 1, 1, 0, 0, 44, tzinfo=UTC)
    assert len(track.segments) == 1


def test_nmea_gga_before_the_first_rmc_takes_its_date(tmp_path: Path) -> None:
    points = drive(20, start=datetime(2026, 3, 1, 23, 59, 50, tzinfo=UTC))
    lines = nmea_log(points)
    ggas = [line for line in lines if "GGA" in line]
    rmcs = [line for line in lines if "RMC" in line]
    track = read_nmea(write(tmp_path, ggas + rmcs[-1:]))  # one RMC, after midnight, last
    assert [p.time for p in track.points()] == [t for t, *_ in points]


@pytest.mark.parametrize(("pause_s", "segments"), [(GAP_S, 1), (GAP_S + 1, 2)])
def test_nmea_pauses_split_segments(tmp_path: Path, pause_s: float, segments: int) -> None:
    first = drive(10)
    second = drive(10, start=first[-1][0] + timedelta(seconds=pause_s))
    track = read_nmea(write(tmp_path, nmea_log(first) + nmea_log(second)))
    assert len(track.segments) == segments
    assert track.point_count == 20


def test_nmea_course_is_a_heading_only_when_moving(tmp_path: Path) -> None:
    t = START
    lines = [
        rmc_sentence(t, 46.0, 14.0, speed_knots=0.2, course=123.0),
        rmc_sentence(t + timedelta(seconds=1), 46.0, 14.0, speed_knots=5.0, course=350.0),
        rmc_sentence(t + timedelta(seconds=2), 46.0, 14.001, speed_knots=5.0, course=10.0),
    ]
    track = read_nmea(write(tmp_path, lines))
    assert [p.heading for p in track.points()] == [None, 350.0, 10.0]
    fix = locate(track, t + timedelta(seconds=1.5))
    assert isinstance(fix, TrackFix) and fix.heading == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        ([], "no NMEA sentences"),
        (["hello", "world"], "no NMEA sentences"),
        ([rmc_sentence(START, 1.0, 2.0, valid=False)], "no valid $--RMC/$--GGA fix among 1"),
        ([gga_sentence(START, 1.0, 2.0, 3.0)], "no valid $--RMC sentence, so no date"),
        (["$GPRMC,xx*00"], "1 with a bad checksum"),
    ],
)
def test_broken_nmea_is_a_named_reason(tmp_path: Path, lines: list[str], reason: str) -> None:
    path = write(tmp_path, lines)
    with pytest.raises(ItemError) as caught:
        read_nmea(path)
    assert caught.value.reason == "bad_nmea"
    assert str(caught.value).startswith(f"{path}: ")
    assert reason in str(caught.value)


def test_nmea_binary_and_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "junk.nmea"
    path.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(ItemError) as caught:
        read_nmea(path)
    assert caught.value.reason == "bad_nmea"
    with pytest.raises(ItemError, match="cannot read"):
        read_nmea(tmp_path / "missing.nmea")


# --- CSV -----------------------------------------------------------------------------------


def csv_file(tmp_path: Path, text: str, name: str = "geotags.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_by_file_name_with_header(tmp_path: Path) -> None:
    path = csv_file(
        tmp_path,
        "file,lat,lon,time,heading,alt\n"
        "IMG_0002.JPG,46.0002,14.0002,2026-06-01T09:00:02Z,359.5,301.5\n"
        "img_0001.jpg,46.0001,14.0001,2026-06-01T11:00:01+02:00,-10,300\n",
    )
    rows = read_csv_geotags(
        path,
        filename_column=1,
        timestamp_column=4,
        latitude_column=2,
        longitude_column=3,
        heading_column=5,
        altitude_column=6,
    )
    assert [r.line for r in rows] == [2, 3]
    assert rows[1].time == datetime(2026, 6, 1, 9, 0, 1, tzinfo=UTC)
    assert (rows[1].heading, rows[0].altitude) == (350.0, 301.5)
    match = match_csv_rows(rows, ["/card/DCIM/IMG_0001.JPG", "/card/DCIM/IMG_0002.JPG", "x.jpg"])
    assert match.matched["/card/DCIM/IMG_0001.JPG"].lat == 46.0001
    assert match.matched["/card/DCIM/IMG_0002.JPG"].lat == 46.0002
    assert match.images_without_row == ("x.jpg",)
    assert match.rows_without_image == ()


def test_csv_by_order_semicolon_epoch_ms_without_header(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "1780304401000;46.1;14.1\n1780304402500;46.2;14.2\n")
    rows = read_csv_geotags(
        path, filename_column=None, timestamp_column=1, latitude_column=2, longitude_column=3
    )
    assert [r.time for r in rows] == [
        datetime(2026, 6, 1, 9, 0, 1, tzinfo=UTC),
        datetime(2026, 6, 1, 9, 0, 2, 500000, tzinfo=UTC),
    ]
    match = match_csv_rows(rows, ["b.jpg", "a.jpg"])  # by sorted file name
    assert (match.matched["a.jpg"].lat, match.matched["b.jpg"].lat) == (46.1, 46.2)
    with pytest.raises(ItemError, match="2 CSV row\\(s\\) for 3 image\\(s\\)") as caught:
        match_csv_rows(rows, ["a.jpg", "b.jpg", "c.jpg"])
    assert caught.value.reason == "bad_csv"


@pytest.mark.parametrize(
    ("cell", "time_format", "expected"),
    [
        ("1780304401", None, datetime(2026, 6, 1, 9, 0, 1, tzinfo=UTC)),
        ("1780304401.25", None, datetime(2026, 6, 1, 9, 0, 1, 250000, tzinfo=UTC)),
        ("1780304401000000", None, datetime(2026, 6, 1, 9, 0, 1, tzinfo=UTC)),
        ("2026:06:01 11:00:01", None, datetime(2026, 6, 1, 9, 0, 1, tzinfo=UTC)),
        ("2026:06:01 11:00:01.5", None, datetime(2026, 6, 1, 9, 0, 1, 500000, tzinfo=UTC)),
        ("2026_06_01_11_00_01_250", None, datetime(2026, 6, 1, 9, 0, 1, 250000, tzinfo=UTC)),
        ("2026-06-01 11:00:01", None, datetime(2026, 6, 1, 9, 0, 1, tzinfo=UTC)),
        ("01/06/2026 11.00.01", "%d/%m/%Y %H.%M.%S", datetime(2026, 6, 1, 9, 0, 1, tzinfo=UTC)),
    ],
)
def test_csv_time_formats(
    tmp_path: Path, cell: str, time_format: str | None, expected: datetime
) -> None:
    path = csv_file(tmp_path, f"{cell},46,14\n{cell},46,14\n")
    rows = read_csv_geotags(
        path,
        filename_column=None,
        timestamp_column=1,
        latitude_column=2,
        longitude_column=3,
        time_format=time_format,
        tz=timezone(timedelta(hours=2)),  # for the naive ones
        delimiter=",",
    )
    assert rows[0].time == expected


def test_csv_every_problem_is_reported_with_its_line(tmp_path: Path) -> None:
    path = csv_file(
        tmp_path,
        "name,time,lat,lon\n"
        "a.jpg,2026-06-01T09:00:00Z,46.0,14.0\n"
        "b.jpg,2026-06-01T09:00:01Z,north,14.0\n"
        "c.jpg,2026-06-01T09:00:02Z\n"
        "d.jpg,teatime,46.0,14.0\n"
        "e.jpg,2026-06-01T09:00:03Z,46.0,214.0\n"
        "a.jpg,2026-06-01T09:00:04Z,46.0,14.0\n"
        "f.jpg,2026-06-01T09:00:05Z,,14.0\n",
    )
    with pytest.raises(ItemError) as caught:
        read_csv_geotags(
            path, filename_column=1, timestamp_column=2, latitude_column=3, longitude_column=4
        )
    text = str(caught.value)
    assert caught.value.reason == "bad_csv"
    assert text.startswith(f"{path}: 7 problem(s):")
    for expected in (
        "line 3: column 3: latitude 'north' is not a number",
        "line 4: has 2 column(s), column 3 (latitude) requested",
        "line 4: has 2 column(s), column 4 (longitude) requested",
        "line 5: column 2 (timestamp): unrecognised time 'teatime'",
        "line 6: column 4: longitude 214.0 is not in [-180, 180]",
        "line 7: file name 'a.jpg' already on line 2",
        "line 8: column 3 (latitude) is empty",
    ):
        assert expected in text


def test_csv_a_typo_in_the_first_row_is_not_taken_for_a_header(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "1780304401,46.O,14.0\n1780304402,46.1,14.1\n")
    with pytest.raises(ItemError, match=r"line 1: column 2: latitude '46\.O' is not a number"):
        read_csv_geotags(
            path, filename_column=None, timestamp_column=1, latitude_column=2, longitude_column=3
        )


def test_csv_meta_columns_and_times_only(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "f\tt\tq\tok\nx.jpg\t2026-06-01T09:00:00Z\t0.5\tyes\n")
    rows = read_csv_geotags(
        path,
        filename_column=1,
        timestamp_column=2,
        latitude_column=None,
        longitude_column=None,
        meta_columns={"quality": (3, "double"), "ok": (4, "boolean")},
    )
    assert rows == [
        CsvRow(
            2,
            "x.jpg",
            datetime(2026, 6, 1, 9, tzinfo=UTC),
            None,
            None,
            None,
            None,
            {"quality": 0.5, "ok": True},
        )
    ]


def test_csv_configuration_mistakes_and_unusable_files(tmp_path: Path) -> None:
    path = csv_file(tmp_path, "1,2,3\n")
    with pytest.raises(ValueError, match="numbered from 1"):
        read_csv_geotags(
            path, filename_column=0, timestamp_column=1, latitude_column=2, longitude_column=3
        )
    with pytest.raises(ValueError, match="go together"):
        read_csv_geotags(
            path, filename_column=None, timestamp_column=1, latitude_column=2, longitude_column=None
        )
    latin = tmp_path / "latin.csv"
    latin.write_bytes("čaj.jpg,1,2,3\n".encode("cp1250"))
    with pytest.raises(ItemError, match="not UTF-8 text at byte 0"):
        read_csv_geotags(
            latin, filename_column=1, timestamp_column=2, latitude_column=3, longitude_column=4
        )
    only_header = csv_file(tmp_path, "time,lat,lon\n", "header.csv")
    with pytest.raises(ItemError, match="no data rows"):
        read_csv_geotags(
            only_header,
            filename_column=None,
            timestamp_column=1,
            latitude_column=2,
            longitude_column=3,
        )
    empty = csv_file(tmp_path, "\n\n", "empty.csv")
    with pytest.raises(ItemError, match="no data rows"):
        read_csv_geotags(
            empty, filename_column=None, timestamp_column=1, latitude_column=2, longitude_column=3
        )
    with pytest.raises(ItemError, match="cannot read"):
        read_csv_geotags(
            tmp_path / "missing.csv",
            filename_column=None,
            timestamp_column=1,
            latitude_column=2,
            longitude_column=3,
        )


# --- mutated inputs: a named reason or a result, never anything else -----------------------

_SPLICES = [
    b'<trkpt lat="1e400" lon="nan">',
    b"<time>9999-12-31T23:59:59-14:00</time>",
    b"</gpx>",
    b"<trkseg>",
    b"$GPRMC,",
    b"*",
    b",",
    b"\n",
    b"\x00",
    b"99999999999999999999",
]


def _mutations(data: bytes, seed: int, count: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        b = bytearray(data)
        for _ in range(rng.randint(1, 12)):
            i = rng.randrange(len(b) + 1)
            op = rng.random()
            if op < 0.4 and i < len(b):
                b[i] = rng.randrange(256)
            elif op < 0.6:
                del b[i : i + rng.randint(1, 40)]
            else:
                b[i:i] = rng.choice(_SPLICES)
        out.append(bytes(b))
    return out


@pytest.mark.parametrize("kind", ["gpx", "nmea", "csv"])
def test_mutated_files_give_a_track_or_a_named_reason(tmp_path: Path, kind: str) -> None:
    if kind == "gpx":
        source = (GPX_DIR / "togeojson__missing_hr.gpx").read_bytes() if GPX_FILES else b""
        if not source:
            pytest.skip("no GPX corpus")
    elif kind == "nmea":
        source = "\r\n".join(nmea_log(drive(2), talker="GN")).encode()
    else:
        source = b"a.jpg,2026-06-01T09:00:00Z,46,14\nb.jpg,1780304401,46.1,14.1\n"
    path = tmp_path / f"mutant.{kind}"
    outcomes = set()
    for data in _mutations(source, seed=len(kind), count=300):
        path.write_bytes(data)
        try:
            if kind == "gpx":
                read_gpx(path)
            elif kind == "nmea":
                read_nmea(path)
            else:
                read_csv_geotags(
                    path,
                    filename_column=1,
                    timestamp_column=2,
                    latitude_column=3,
                    longitude_column=4,
                )
            outcomes.add("read")
        except ItemError as exc:
            assert exc.reason == f"bad_{kind}"
            outcomes.add("refused")
    assert outcomes == {"read", "refused"}  # the mutations exercised both paths
