"""GPX/NMEA geotagging side by side with the real mapillary_tools 0.14.7 ``process``.

For each corpus track, images WITHOUT GPS are generated whose capture times fall along the
track (inside segments, on exact track points, in the gaps between segments, and outside),
and the real ``mapillary_tools process --geotag_source gpx|nmea`` geotags them. Every image's
result is compared with :func:`daemon.geo.track.locate` after
:func:`daemon.geo.track.apply_offsets` with the same options:

* both place it: latitude/longitude within 1e-6°, heading within 1°, altitude within 1 mm,
  the same (shifted) capture time within 1 ms;
* both refuse it: mapillary_tools' ``MapillaryOutsideGPXTrackError`` vars (image time, GPX
  start and end) equal our :class:`~daemon.geo.track.OutsideTrack` times.

How mapillary_tools computes the heading of a GPX-interpolated image (``geo.Point.
interpolate_with``): always the bearing from the earlier to the later of the two neighbouring
points chosen by ``bisect_left`` over the merged, sorted points; so an image exactly on a
track point takes the bearing of the pair *ending* there, an image on the first point the
bearing of the first pair. Point angles are never used (GPX and NMEA points carry none).

Differences on purpose are labelled, asserted to occur where they must, and printed:

* ``#129 gap``: an image in a gap between segments; mapillary_tools interpolates across it,
  we refuse it (``in_track_gap``).
* ``segment-start heading``: an image exactly on the first point of a later segment; same
  position, but mapillary_tools' heading is the bearing *across the gap* from the previous
  segment's end, ours that segment's own first bearing.
* ``coincident heading``: neighbours at the same position; mapillary_tools says 0°, we say
  None (no bearing exists; the sequence stage fills it in).
* ``NMEA course``: our NMEA points carry the receiver's RMC course, interpolated; mapillary_tools
  ignores it and uses the bearing (with an empty course field both agree, also tested).
* ``GN talker``: a ``$GN…`` log; mapillary_tools finds no points and crashes, we geotag.
* ``bad file``: a broken or unusable GPX; mapillary_tools crashes with a traceback or rejects
  each image, we refuse the file with a named reason.
* ``encoding``: a GPX declared ISO-8859-2 or UTF-16 with a non-ASCII name; mapillary_tools
  reads it as UTF-8 and crashes, we decode it as declared.
"""

from __future__ import annotations

import codecs
import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daemon.describe import format_capture_time
from daemon.errors import ItemError
from daemon.geo.track import OutsideTrack, Track, TrackFix, apply_offsets, locate
from daemon.media.gpx import read_gpx
from daemon.media.nmea import gga_sentence, read_nmea, rmc_sentence
from daemon.synth import drive_points, exif_bytes, jpeg_bytes

REPO = Path(__file__).resolve().parents[2]
MAPILLARY_TOOLS = REPO / ".venv-mt" / "bin" / "mapillary_tools"
CORPUS = REPO.parent / "shared" / "corpus"
GPX = CORPUS / "gpx"
RUN_TIMEOUT_S = 180

pytestmark = [
    pytest.mark.mapillary_tools,
    pytest.mark.skipif(
        not MAPILLARY_TOOLS.exists(), reason=f"no mapillary_tools 0.14.7 at {MAPILLARY_TOOLS}"
    ),
]
needs_corpus = pytest.mark.skipif(not GPX.is_dir(), reason=f"no GPX corpus at {GPX}")

SAME = "same"
GAP = "#129 gap"
SEGMENT_START = "segment-start heading"
COINCIDENT = "coincident heading"
COURSE = "NMEA course"


# --- running both sides --------------------------------------------------------------------


def run_mapillary_tools(
    tmp_path: Path, images: Path, source: str, source_path: Path, *extra: str
) -> tuple[int, list[dict[str, Any]] | None, str]:
    """(exit code, description entries or None, last stderr line) of a real ``process``."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    desc = tmp_path / f"{images.name}.desc.json"
    desc.unlink(missing_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TZ": "UTC",
        "MAPILLARY_TOOLS_PROMPT_DISABLED": "YES",
        "MAPILLARY_CONFIG_PATH": str(home / "config.ini"),
        "MAPILLARY_UPLOAD_HISTORY_PATH": str(home / "history"),
        "MAPILLARY_TOOLS_UPLOAD_CACHE_DIR": str(home / "cache"),
    }
    command = [
        str(MAPILLARY_TOOLS),
        "process",
        str(images),
        "--geotag_source",
        source,
        "--geotag_source_path",
        str(source_path),
        "--desc_path",
        str(desc),
        "--skip_process_errors",
        "--num_processes",
        "0",
        # isolate geotagging from the sequence rules (tested elsewhere): every image its own
        # sequence, no duplicate or zig-zag verdicts
        "--cutoff_time",
        "0",
        "--duplicate_distance",
        "-1",
        "--skip_zigzag_check",
        *extra,
    ]
    proc = subprocess.run(
        command,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    lines = proc.stderr.strip().splitlines()
    entries = json.loads(desc.read_text()) if proc.returncode == 0 and desc.exists() else None
    return proc.returncode, entries, lines[-1] if lines else ""


def write_images(folder: Path, camera_times: Sequence[datetime]) -> dict[str, datetime]:
    """JPEGs without GPS, capture time in UTC (offset +00:00) with milliseconds."""
    folder.mkdir(parents=True)
    names = {}
    for i, t in enumerate(camera_times):
        name = f"IMG_{i:04d}.jpg"
        exif = exif_bytes(time=t.astimezone(UTC), lat=None, lon=None)
        (folder / name).write_bytes(jpeg_bytes(i, size=(32, 24), exif=exif))
        names[name] = t
    return names


def ms(t: datetime) -> datetime:
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def times_along(track: Track) -> list[datetime]:
    """Capture times that exercise the track: inside, on points, in gaps, outside."""
    out: list[datetime] = []
    for number, segment in enumerate(track.segments):
        start, end = segment[0].time, segment[-1].time
        span = end - start
        out += [start + span * f for f in (0.1, 0.37, 0.5, 0.83)]
        out += [segment[0].time, segment[len(segment) // 2].time, segment[-1].time]
        if number + 1 < len(track.segments):
            nxt = track.segments[number + 1][0].time
            gap = nxt - end
            if gap > timedelta(seconds=4):
                out += [end + gap / 2, end + timedelta(seconds=2), nxt - timedelta(seconds=2)]
    out += [track.start - timedelta(seconds=30), track.end + timedelta(seconds=30)]
    return sorted({ms(t) for t in out})


@dataclass
class Row:
    case: str
    image: str
    time: str
    reference: str
    ours: str
    kind: str


def _fix_text(lat: float, lon: float, heading: float | None) -> str:
    h = "None" if heading is None else f"{heading:.3f}"
    return f"{lat:.7f},{lon:.7f} h={h}"


def _heading_diff(a: float, b: float) -> float:
    d = abs(a - b) % 360
    return min(d, 360 - d)


def _capture(text: str) -> datetime:
    return datetime.strptime(f"{text}Z", "%Y_%m_%d_%H_%M_%S_%f%z")


def compare(
    case: str,
    track: Track,
    names: dict[str, datetime],
    entries: list[dict[str, Any]],
    *,
    offset_seconds: float = 0.0,
    use_gps_start_time: bool = False,
    course_headings: bool = False,
) -> list[Row]:
    """One row per image; ``kind`` is SAME or the label of a deliberate difference.

    Raises AssertionError on any difference that is not one of the labelled ones.
    """
    ordered = sorted(names)
    shifted = dict(
        zip(
            ordered,
            apply_offsets(
                [names[n] for n in ordered],
                offset_seconds=offset_seconds,
                use_gps_start_time=use_gps_start_time,
                track=track,
            ),
            strict=True,
        )
    )
    later_starts = {s[0].time for s in track.segments[1:]}
    rows: list[Row] = []
    assert len(entries) == len(names)
    for entry in entries:
        name = Path(entry["filename"]).name
        t = shifted[name]
        ours = locate(track, t)
        if "error" in entry:
            error = entry["error"]
            reference = error["type"]
            assert error["type"] == "MapillaryOutsideGPXTrackError", (case, name, error)
            assert isinstance(ours, OutsideTrack), (case, name, ours, error)
            assert ours.kind in ("before", "after"), (case, name, ours)
            assert error["vars"]["image_time"] == format_capture_time(t)
            assert error["vars"]["gpx_start_time"] == format_capture_time(track.start)
            assert error["vars"]["gpx_end_time"] == format_capture_time(track.end)
            rows.append(Row(case, name, t.isoformat(), reference, ours.code, SAME))
            continue
        lat, lon = entry["MAPLatitude"], entry["MAPLongitude"]
        heading = entry.get("MAPCompassHeading", {}).get("TrueHeading")
        reference = _fix_text(lat, lon, heading)
        assert abs(_capture(entry["MAPCaptureTime"]) - t) <= timedelta(milliseconds=1), (
            case,
            name,
        )
        if isinstance(ours, OutsideTrack):
            assert ours.kind == "gap", (case, name, ours.message)
            rows.append(Row(case, name, t.isoformat(), reference, ours.code, GAP))
            continue
        assert isinstance(ours, TrackFix)
        assert abs(ours.lat - lat) <= 1e-6 and abs(ours.lon - lon) <= 1e-6, (case, name, ours)
        alt = entry.get("MAPAltitude")
        assert (alt is None) == (ours.alt is None), (case, name, alt, ours.alt)
        if alt is not None and ours.alt is not None:
            assert abs(alt - ours.alt) <= 1e-3 + 1e-9, (case, name, alt, ours.alt)
        kind = SAME
        assert heading is not None, (case, name)  # mapillary_tools always gives one
        if ours.heading is not None and _heading_diff(heading, ours.heading) <= 1.0:
            pass
        elif t in later_starts:
            kind = SEGMENT_START
        elif ours.heading is None:
            assert heading == 0.0, (case, name, heading)
            kind = COINCIDENT
        elif course_headings:
            assert _heading_diff(heading, ours.heading) <= 5.0, (case, name)
            kind = COURSE
        else:
            raise AssertionError(f"{case} {name}: heading {heading} vs {ours.heading}")
        ours_text = _fix_text(ours.lat, ours.lon, ours.heading)
        rows.append(Row(case, name, t.isoformat(), reference, ours_text, kind))
    return rows


def print_table(title: str, rows: Sequence[Row]) -> None:
    differences = [r for r in rows if r.kind != SAME]
    print(f"\n{title}: {len(rows)} images, {len(differences)} deliberate difference(s)")
    if differences:
        header = ("case", "image", "time (shifted)", "mapillary_tools", "mapillaryd", "why")
        table = [header] + [
            (r.case, r.image, r.time, r.reference, r.ours, r.kind) for r in differences
        ]
        widths = [max(len(line[i]) for line in table) for i in range(len(header))]
        for line in table:
            print("  " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))


# --- GPX -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpxCase:
    name: str
    file: str
    offset_seconds: float = 0.0
    use_gps_start_time: bool = False
    camera_shift_s: float = 0.0  # how far the camera clock is off (only with use_gps_start_time)
    expect: tuple[str, ...] = ()  # difference kinds that must occur


GPX_CASES = [
    GpxCase("sf plain", "mapillary__sf_30km_h.gpx"),
    GpxCase("sf offset", "mapillary__sf_30km_h.gpx", offset_seconds=3637.25),
    GpxCase(
        "sf gpx start", "mapillary__sf_30km_h.gpx", use_gps_start_time=True, camera_shift_s=-7200
    ),
    GpxCase(
        "sf start+offset",
        "mapillary__sf_30km_h.gpx",
        offset_seconds=-12.5,
        use_gps_start_time=True,
        camera_shift_s=5400,
    ),
    GpxCase("visnjan plain", "gpxpy__around-visnjan-with-car.gpx"),
    GpxCase("visnjan offset", "gpxpy__around-visnjan-with-car.gpx", offset_seconds=-45.5),
    GpxCase(
        "friday run (3 segments)",
        "togeojson__Friday-Evening-Run.gpx",
        expect=(GAP, SEGMENT_START),
    ),
    GpxCase("missing_hr (3 segments)", "togeojson__missing_hr.gpx", expect=(GAP, SEGMENT_START)),
    GpxCase("multitrack (3 tracks)", "togeojson__multitrackgpx.gpx", expect=(GAP, SEGMENT_START)),
    GpxCase(
        "cerknicko (8 tracks, 1 empty)",
        "gpxpy__cerknicko-jezero.gpx",
        expect=(GAP, SEGMENT_START),
    ),
    GpxCase("empty segment", "gpxpy__track-with-empty-segment.gpx"),
    GpxCase("reversed points", "exiftool__Geotag.gpx"),
    GpxCase("garmin connect", "gpsbabel__garminconnect.gpx"),
]


def _camera_times(case: GpxCase, track: Track) -> list[datetime]:
    """Camera times whose shifted values are ``times_along(track)``."""
    wanted = times_along(track)
    if case.use_gps_start_time:
        # the earliest image will be moved onto the track start; keep the others' spacing
        wanted = [t for t in wanted if t >= track.start]
        return [t + timedelta(seconds=case.camera_shift_s) for t in wanted]
    return [ms(t - timedelta(seconds=case.offset_seconds)) for t in wanted]


@needs_corpus
@pytest.mark.parametrize("case", GPX_CASES, ids=[c.name for c in GPX_CASES])
def test_gpx_geotagging_matches_mapillary_tools(tmp_path: Path, case: GpxCase) -> None:
    path = GPX / case.file
    track = read_gpx(path)
    names = write_images(tmp_path / "images", _camera_times(case, track))
    extra: list[str] = []
    if case.offset_seconds:
        extra += ["--interpolation_offset_time", str(case.offset_seconds)]
    if case.use_gps_start_time:
        extra += ["--interpolation_use_gpx_start_time"]
    code, entries, last = run_mapillary_tools(tmp_path, tmp_path / "images", "gpx", path, *extra)
    assert code == 0 and entries is not None, last
    rows = compare(
        case.name,
        track,
        names,
        entries,
        offset_seconds=case.offset_seconds,
        use_gps_start_time=case.use_gps_start_time,
    )
    print_table(f"GPX {case.name} ({case.file})", rows)
    kinds = {r.kind for r in rows}
    for kind in case.expect:
        assert kind in kinds, f"{case.name}: expected a '{kind}' difference"
    assert kinds <= {SAME, COINCIDENT, *case.expect}, kinds
    assert sum(r.kind == SAME for r in rows) >= len(rows) // 2


@needs_corpus
def test_use_gps_start_time_puts_the_first_image_on_the_first_point(tmp_path: Path) -> None:
    track = read_gpx(GPX / "mapillary__sf_30km_h.gpx")
    camera = [datetime(2030, 1, 1, tzinfo=UTC) + timedelta(seconds=5 * i) for i in range(5)]
    names = write_images(tmp_path / "images", camera)
    code, entries, last = run_mapillary_tools(
        tmp_path,
        tmp_path / "images",
        "gpx",
        GPX / "mapillary__sf_30km_h.gpx",
        "--interpolation_use_gpx_start_time",
    )
    assert code == 0 and entries is not None, last
    rows = compare("gpx start", track, names, entries, use_gps_start_time=True)
    assert {r.kind for r in rows} == {SAME}
    first = min(entries, key=lambda e: e["MAPCaptureTime"])
    p0 = track.segments[0][0]
    assert (first["MAPLatitude"], first["MAPLongitude"]) == (round(p0.lat, 7), round(p0.lon, 7))


@needs_corpus
def test_gpx_with_a_utf8_bom_matches(tmp_path: Path) -> None:
    """The corpus BOM file has no track; a real track behind a BOM reads the same in both."""
    source = GPX / "mapillary__sf_30km_h.gpx"
    bom = tmp_path / "bom.gpx"
    bom.write_bytes(codecs.BOM_UTF8 + source.read_bytes())
    track = read_gpx(bom)
    assert [len(s) for s in track.segments] == [len(s) for s in read_gpx(source).segments]
    names = write_images(tmp_path / "images", times_along(track))
    code, entries, last = run_mapillary_tools(tmp_path, tmp_path / "images", "gpx", bom)
    assert code == 0 and entries is not None, last
    rows = compare("BOM", track, names, entries)
    print_table("GPX with UTF-8 BOM", rows)
    assert {r.kind for r in rows} == {SAME}


@needs_corpus
@pytest.mark.parametrize(
    ("declared", "codec"), [("ISO-8859-2", "iso-8859-2"), ("UTF-16", "utf-16")]
)
def test_declared_encodings_mapillary_tools_fails_we_read(
    tmp_path: Path, declared: str, codec: str
) -> None:
    """A track named "Čerknica" in a non-UTF-8 file: mapillary_tools cannot decode it."""
    text = (GPX / "mapillary__sf_30km_h.gpx").read_text(encoding="utf-8")
    text = text.replace('encoding="UTF-8"', f'encoding="{declared}"', 1)
    text = text.replace("<trk>", "<trk><name>Čerknica</name>", 1)
    assert f'encoding="{declared}"' in text and "Čerknica" in text
    path = tmp_path / f"{codec}.gpx"
    path.write_bytes(text.encode(codec))
    track = read_gpx(path)
    write_images(tmp_path / "images", times_along(track))
    code, entries, last = run_mapillary_tools(tmp_path, tmp_path / "images", "gpx", path)
    print(f"\n{declared} GPX: mapillary_tools exit {code}: {last[:120]}")
    print(f"{declared} GPX: mapillaryd reads {track.point_count} points")
    assert code != 0 and entries is None and "UnicodeDecodeError" in last
    same = read_gpx(GPX / "mapillary__sf_30km_h.gpx")
    assert list(track.points()) == list(same.points())


BAD_GPX = [
    "gpxpy__unicode_with_bom.gpx",
    "gpxpy__gpx_with_garmin_extension.gpx",
    "togeojson__bad.gpx",
    "togeojson__empty_trk.gpx",
    "gpxpy__cerknicko-without-times.gpx",
    "gpxpy__Mojstrovka.gpx",
]


@needs_corpus
def test_unusable_gpx_files_named_reason_versus_mapillary_tools(tmp_path: Path) -> None:
    """Neither side geotags anything; we say why once, mapillary_tools crashes or rejects."""
    start = datetime(2010, 8, 5, 16, 23, 0, tzinfo=UTC)  # inside the 5 timed cerknicko points
    write_images(tmp_path / "images", [start + timedelta(seconds=10 * i) for i in range(3)])
    print("\nUnusable GPX files: file | mapillary_tools | mapillaryd")
    for name in BAD_GPX:
        with pytest.raises(ItemError) as caught:
            read_gpx(GPX / name)
        assert caught.value.reason == "bad_gpx"
        code, entries, last = run_mapillary_tools(tmp_path, tmp_path / "images", "gpx", GPX / name)
        if entries is None:
            reference = f"exit {code}: {last}"
            assert code != 0
        else:
            kinds = sorted({e.get("error", {}).get("type", "GEOTAGGED") for e in entries})
            reference = f"exit {code}: every image {', '.join(kinds)}"
            # with the 5 timed points of cerknicko-without-times, mapillary_tools even places
            # images; we refuse a file whose times were stripped
            if name != "gpxpy__cerknicko-without-times.gpx":
                assert kinds == ["MapillaryOutsideGPXTrackError"], (name, kinds)
        print(f"  {name} | {reference[:110]} | {str(caught.value).split(': ', 1)[1][:110]}")


# --- NMEA ----------------------------------------------------------------------------------

NMEA_START = datetime(2026, 6, 1, 23, 58, 0, tzinfo=UTC)  # crosses midnight


def nmea_drive(*, talker: str, course: bool, pause_after: int | None = None) -> list[str]:
    lines = []
    for i, (t, lat, lon, alt, heading) in enumerate(
        drive_points(240, start=NMEA_START, spacing_m=12.0, seed=9)
    ):
        if pause_after is not None and i > pause_after:
            t += timedelta(seconds=45)  # the receiver lost its fix for 45 s
        lines.append(
            rmc_sentence(
                t, lat, lon, speed_knots=23.3, course=heading if course else None, talker=talker
            )
        )
        lines.append(gga_sentence(t, lat, lon, alt, talker=talker))
    return lines


def nmea_images(folder: Path) -> dict[str, datetime]:
    times = [NMEA_START + timedelta(seconds=3.25 + 6.5 * i) for i in range(36)]  # to 230.75 s
    times += [NMEA_START + timedelta(seconds=s) for s in (0, 100, 150.5, -20, 400)]
    return write_images(folder, sorted(times))


@pytest.mark.parametrize(
    ("course", "pause_after", "expect"),
    [(False, None, set()), (True, None, {COURSE}), (False, 150, {GAP})],
    ids=["bearing", "course", "pause"],
)
def test_nmea_gp_matches_mapillary_tools(
    tmp_path: Path, course: bool, pause_after: int | None, expect: set[str]
) -> None:
    log = tmp_path / "drive.nmea"
    log.write_text("\r\n".join(nmea_drive(talker="GP", course=course, pause_after=pause_after)))
    track = read_nmea(log)
    assert len(track.segments) == (1 if pause_after is None else 2)
    names = nmea_images(tmp_path / "images")
    code, entries, last = run_mapillary_tools(tmp_path, tmp_path / "images", "nmea", log)
    assert code == 0 and entries is not None, last
    rows = compare("NMEA GP", track, names, entries, course_headings=course)
    print_table(f"NMEA $GP (course={course}, pause={pause_after})", rows)
    kinds = {r.kind for r in rows}
    assert kinds - {SAME} == expect
    past_midnight = [r for r in rows if r.time.startswith("2026-06-02") and r.kind == SAME]
    assert past_midnight, "the rollover must be exercised"


def test_nmea_gn_talker_mapillary_tools_fails_we_geotag(tmp_path: Path) -> None:
    log = tmp_path / "drive.nmea"
    log.write_text("\r\n".join(nmea_drive(talker="GN", course=False)))
    track = read_nmea(log)
    names = nmea_images(tmp_path / "images")
    code, entries, last = run_mapillary_tools(tmp_path, tmp_path / "images", "nmea", log)
    assert code != 0 and entries is None
    print(f"\nNMEA $GN: mapillary_tools exit {code}: {last}")
    placed = [n for n, t in names.items() if isinstance(locate(track, t), TrackFix)]
    print(f"NMEA $GN: mapillaryd geotags {len(placed)} of {len(names)} images (GN talker)")
    assert len(placed) == 36 + 3  # all but the two outside the log

    # and where it places them is where mapillary_tools puts the same log spoken as $GP
    gp = tmp_path / "gp.nmea"
    gp.write_text("\r\n".join(nmea_drive(talker="GP", course=False)))
    code, entries, last = run_mapillary_tools(tmp_path, tmp_path / "images", "nmea", gp)
    assert code == 0 and entries is not None, last
    assert {r.kind for r in compare("NMEA GN", track, names, entries)} == {SAME}
