"""``mapillaryd process`` against the real ``mapillary_tools process`` (0.14.7, ``.venv-mt``).

Both commands run as subprocesses on the same folder with the SAME command line (ours accepts
mapillary_tools' spellings: a contributor's script works by changing the program name); only
the time zone is given differently (mapillary_tools reads naive camera times in the zone of
the machine, ``TZ=…``; we take ``--time-zone``). Their description files are compared image
by image:

* verdict: accepted by both, or rejected by both (and with the same error type);
* latitude/longitude within 1e-6°, the same ``MAPCaptureTime``, heading within 1°;
* the sequence partition (``MAPSequenceUUID`` groups over the images both accept, compared
  as partitions: the ids themselves are arbitrary).

Inputs: (a) every corpus JPEG; (b) synthetic drives with EXIF GPS (a stop at a light, a
pause, a jump, a crawl) with default options and with ``--duplicate_distance/angle``,
``--offset_angle``, ``--offset_time``, ``--interpolate_directions``,
``--cutoff_time/distance``; (c) drives without GPS geotagged from corpus GPX tracks (plain,
multi-segment, empty segment, no times, BOM; with ``--interpolation_offset_time`` and
``--interpolation_use_gpx_start_time``) and from NMEA logs ($GP and $GN); (d) naive camera
times (no OffsetTimeOriginal, no GPS time) in Europe/Ljubljana, summer, winter and across
the spring-forward gap, with EXIF GPS and from a GPX track.

Every difference is a row of the printed table (``pytest -s``; also written to
``differences.txt`` in the module's tmp dir) and must be on :data:`ALLOWED` with the reason
we are right; a listed difference that no longer occurs fails too, so the list stays true.
The deliberate ones are also asserted image by image in their own tests below.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import piexif
import pytest

from daemon.geo.validate import angle_difference
from daemon.media.gpx import read_gpx
from daemon.media.nmea import gga_sentence, rmc_sentence
from daemon.synth import destination, drive_points, exif_bytes, jpeg_bytes
from tests.conftest import CORPUS, REPO
from tests.integration.test_sequence_vs_mapillary_tools import (
    Frame,
    road,
    stop_at_light,
    with_gap,
)
from tests.integration.test_sequence_vs_mapillary_tools import write as write_frames

MAPILLARY_TOOLS = REPO / ".venv-mt" / "bin" / "mapillary_tools"
GPX = CORPUS / "gpx"
JPEG = CORPUS / "jpeg"
RUN_TIMEOUT_S = 120
LJUBLJANA = "Europe/Ljubljana"
SF = "mapillary__sf_30km_h.gpx"

pytestmark = [
    pytest.mark.mapillary_tools,
    pytest.mark.skipif(
        not MAPILLARY_TOOLS.exists(),
        reason=f"no mapillary_tools 0.14.7 at {MAPILLARY_TOOLS} (run `make venv-mt`)",
    ),
    pytest.mark.skipif(not CORPUS.is_dir(), reason=f"no shared corpus at {CORPUS}"),
]


# --- writing inputs -----------------------------------------------------------------------------


def naive_exif(
    wall: datetime,
    *,
    lat: float | None = None,
    lon: float | None = None,
    heading: float | None = None,
) -> bytes:
    """EXIF whose DateTimeOriginal is the wall-clock reading of ``wall`` (in its own zone),
    with no OffsetTimeOriginal and no GPS time stamp: the camera does not say its zone."""
    raw = exif_bytes(
        time=wall.replace(tzinfo=UTC), lat=lat, lon=lon, heading=heading, with_gps_time=False
    )
    exif = piexif.load(raw)
    del exif["Exif"][piexif.ExifIFD.OffsetTimeOriginal]
    assert piexif.GPSIFD.GPSTimeStamp not in exif["GPS"]
    return bytes(piexif.dump(exif))


def write_untagged(folder: Path, times: Sequence[datetime], seed: int = 0) -> list[str]:
    """JPEGs without GPS whose capture times (UTC, with milliseconds) are ``times``."""
    folder.mkdir(parents=True)
    names = []
    for i, t in enumerate(times):
        name = f"IMG_{i:04d}.jpg"
        exif = exif_bytes(time=t.astimezone(UTC), lat=None, lon=None)
        (folder / name).write_bytes(jpeg_bytes(seed * 1000 + i, size=(48, 32), exif=exif))
        names.append(name)
    return names


def ms(t: datetime) -> datetime:
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def times_on(gpx: Path, step_s: float, *, outside: bool = True) -> list[datetime]:
    """Capture times every ``step_s`` along each segment of ``gpx`` (on its first point too),
    three in every gap between segments (2 s in, the middle, 2 s before the next), and one
    30 s before and after the track."""
    track = read_gpx(gpx)
    out: list[datetime] = []
    for number, segment in enumerate(track.segments):
        start, end = segment[0].time, segment[-1].time
        t = start
        while t <= end:
            out.append(t)
            t += timedelta(seconds=step_s)
        if number + 1 < len(track.segments):
            nxt = track.segments[number + 1][0].time
            out += [end + timedelta(seconds=2), end + (nxt - end) / 2, nxt - timedelta(seconds=2)]
    if outside:
        out += [track.start - timedelta(seconds=30), track.end + timedelta(seconds=30)]
    return sorted({ms(t) for t in out})


def write_gps_drives(root: Path, folders: dict[str, Callable[[], list[Frame]]]) -> None:
    for seed, (name, frames) in enumerate(folders.items()):
        write_frames(root / name, frames(), seed + 1)


def jump() -> list[Frame]:
    """A road, then a 70 m jump in 1 s (252 km/h: not too fast), then the road again: one
    sequence at the default --cutoff_distance 100, two at 50."""
    a = road(10)
    last = a[-1]
    b = road(10, t=last.t + 1, at=destination(last.lat, last.lon, 60.0, 70.0), first=10)
    return [*a, *b]


def nmea_log(path: Path, talker: str, start: datetime, count: int) -> list[datetime]:
    """An NMEA log (RMC + GGA, 1 Hz) along a synthetic road; return its fix times."""
    lines, times = [], []
    for t, lat, lon, alt, _ in drive_points(count, start=start, spacing_m=10.0, seed=4):
        lines.append(rmc_sentence(t, lat, lon, speed_knots=19.4, course=None, talker=talker))
        lines.append(gga_sentence(t, lat, lon, alt, talker=talker))
        times.append(t)
    path.write_text("\r\n".join(lines) + "\r\n", encoding="ascii")
    return times


# --- the cases ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One folder of images processed by both tools with one command line.

    ``build(root)`` writes the images under ``root / "images"`` (and any track) and returns
    the options both commands get."""

    name: str
    build: Callable[[Path], list[str]]
    tz: str = "UTC"


def corpus_jpegs(root: Path) -> list[str]:
    images = root / "images"
    images.mkdir(parents=True)
    for path in sorted(JPEG.iterdir()):
        (images / path.name).write_bytes(path.read_bytes())
    return ["--geotag_source", "native"]


DRIVES: dict[str, Callable[[], list[Frame]]] = {
    "plain": lambda: road(25, turn=2.0),
    "stop_at_light": stop_at_light,
    "no_headings": lambda: road(20, headings=False, turn=4.0),
    "pause": with_gap,
    "jump": jump,
    "crawl": lambda: road(12, step=1.0),
}


def drives_defaults(root: Path) -> list[str]:
    write_gps_drives(root / "images", DRIVES)
    return ["--geotag_source", "native"]


def drives_options(root: Path) -> list[str]:
    write_gps_drives(root / "images", DRIVES)
    return [
        "--geotag_source", "native",
        "--duplicate_distance", "1.5", "--duplicate_angle", "10",
        "--offset_angle", "33.5", "--offset_time", "12.5", "--interpolate_directions",
        "--cutoff_time", "20", "--cutoff_distance", "50",
    ]  # fmt: skip


def gpx_case(
    file: str,
    step_s: float,
    *,
    camera_shift_s: float = 0.0,
    extra: Sequence[str] = (),
    times: Callable[[Path], list[datetime]] | None = None,
) -> Callable[[Path], list[str]]:
    """Images without GPS whose camera clock is ``camera_shift_s`` off the track's."""

    def build(root: Path) -> list[str]:
        path = GPX / file
        when = times(path) if times else times_on(path, step_s)
        write_untagged(root / "images", [t + timedelta(seconds=camera_shift_s) for t in when])
        return ["--geotag_source", "gpx", "--geotag_source_path", str(path), *extra]

    return build


def cerknicko_times(_: Path) -> list[datetime]:
    """Among the five timed points of the file whose other 291 points lost their times."""
    start = datetime(2010, 8, 5, 16, 23, 0, tzinfo=UTC)
    return [start + timedelta(seconds=5 * i) for i in range(6)]


def with_bom(root: Path) -> list[str]:
    """The sf track behind a UTF-8 byte order mark (the corpus BOM file has no track)."""
    path = root / "bom.gpx"
    path.write_bytes(b"\xef\xbb\xbf" + (GPX / SF).read_bytes())
    write_untagged(root / "images", times_on(path, 5.0), seed=3)
    return ["--geotag_source", "gpx", "--geotag_source_path", str(path)]


def bom_times(_: Path) -> list[datetime]:
    return [datetime(2025, 3, 14, 7, 0, 10, tzinfo=UTC) + timedelta(seconds=i) for i in range(4)]


def nmea_case(talker: str) -> Callable[[Path], list[str]]:
    def build(root: Path) -> list[str]:
        log = root / f"{talker}.nmea"
        fixes = nmea_log(log, talker, datetime(2026, 6, 1, 23, 59, 0, tzinfo=UTC), 120)
        times = [fixes[0] + timedelta(seconds=2.5 + 3 * i) for i in range(38)]
        write_untagged(root / "images", times, seed=7)
        return ["--geotag_source", "nmea", "--geotag_source_path", str(log)]

    return build


#: Local wall-clock starts of the naive-time drives (Europe/Ljubljana): summer (+02:00),
#: winter (+01:00), and 6 s before the spring-forward gap (02:00 → 03:00 on 29 March 2026).
#: Wall-clock arithmetic (a camera clock that ignores DST runs into 02:00:05, which does not
#: exist in Ljubljana that night: read with the offset before the gap, +01:00).
NAIVE_STARTS = {
    "summer": datetime(2026, 7, 1, 9, 0, 0, tzinfo=ZoneInfo(LJUBLJANA)),
    "winter": datetime(2026, 1, 15, 9, 0, 0, tzinfo=ZoneInfo(LJUBLJANA)),
    "spring_forward": datetime(2026, 3, 29, 1, 59, 54, tzinfo=ZoneInfo(LJUBLJANA)),
}


def naive_with_gps(root: Path) -> list[str]:
    for seed, (name, start) in enumerate(NAIVE_STARTS.items()):
        folder = root / "images" / name
        folder.mkdir(parents=True)
        for i, (t, lat, lon, _, heading) in enumerate(
            drive_points(12, start=start, spacing_m=8.0, seed=seed)
        ):
            exif = naive_exif(t, lat=lat, lon=lon, heading=heading)
            (folder / f"IMG_{i:04d}.jpg").write_bytes(jpeg_bytes(seed * 100 + i, exif=exif))
    return ["--geotag_source", "native"]


def naive_with_gpx(root: Path) -> list[str]:
    """The sf track runs 07:00:00–07:01:33 UTC on 14 March 2025 (08:00 in Ljubljana)."""
    path = GPX / "mapillary__sf_30km_h.gpx"
    folder = root / "images"
    folder.mkdir(parents=True)
    for i, t in enumerate(times_on(path, 4.0, outside=False)):
        local = t.astimezone(ZoneInfo(LJUBLJANA))
        (folder / f"IMG_{i:04d}.jpg").write_bytes(
            jpeg_bytes(500 + i, size=(48, 32), exif=naive_exif(local))
        )
    return ["--geotag_source", "gpx", "--geotag_source_path", str(path)]


CASES = [
    Case("corpus jpeg", corpus_jpegs),
    Case("drives defaults", drives_defaults),
    Case("drives options", drives_options),
    Case("gpx sf", gpx_case(SF, 3.0)),
    Case(
        "gpx sf offset",
        gpx_case(
            SF, 3.0, camera_shift_s=-3637.25, extra=["--interpolation_offset_time", "3637.25"]
        ),
    ),
    Case(
        "gpx sf start time",
        gpx_case(
            SF,
            3.0,
            camera_shift_s=5400,
            extra=["--interpolation_use_gpx_start_time", "--offset_time", "-2"],
            times=lambda p: times_on(p, 3.0, outside=False),
        ),
    ),
    Case("gpx friday run", gpx_case("togeojson__Friday-Evening-Run.gpx", 2.0)),
    Case("gpx empty segment", gpx_case("gpxpy__track-with-empty-segment.gpx", 4.0)),
    Case(
        "gpx without times",
        gpx_case("gpxpy__cerknicko-without-times.gpx", 0, times=cerknicko_times),
    ),
    Case("gpx bom", gpx_case("gpxpy__unicode_with_bom.gpx", 0, times=bom_times)),
    Case("gpx bom track", with_bom),
    Case("nmea GP", nmea_case("GP")),
    Case("nmea GN", nmea_case("GN")),
    Case("naive times", naive_with_gps, tz=LJUBLJANA),
    Case("naive times gpx", naive_with_gpx, tz=LJUBLJANA),
]


# --- running both sides -------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """One image in one description file: ``status`` is "ok" or the error type."""

    status: str
    sequence: str | None = None
    time: str | None = None
    lat: float | None = None
    lon: float | None = None
    heading: float | None = None
    message: str = ""
    vars: dict[str, Any] | None = None
    #: every other field of an accepted image's entry (altitude, make, model, size, …)
    other: dict[str, Any] | None = None


#: Compared on their own (or, for the sequence id, as a partition).
COMPARED = {"MAPSequenceUUID", "MAPCaptureTime", "MAPLatitude", "MAPLongitude", "MAPCompassHeading"}


@dataclass(frozen=True)
class Run:
    code: int
    stderr: str
    results: dict[str, Result]  # by path relative to the images folder; empty if none written


def read_description(path: Path, images: Path) -> dict[str, Result]:
    out = {}
    for entry in json.loads(path.read_text()):
        name = Path(entry["filename"]).resolve().relative_to(images.resolve()).as_posix()
        if "error" in entry:
            error = entry["error"]
            out[name] = Result(
                error["type"], message=error.get("message", ""), vars=error.get("vars")
            )
        else:
            out[name] = Result(
                "ok",
                entry["MAPSequenceUUID"],
                entry["MAPCaptureTime"],
                entry["MAPLatitude"],
                entry["MAPLongitude"],
                entry.get("MAPCompassHeading", {}).get("TrueHeading"),
                other={k: v for k, v in entry.items() if k not in COMPARED},
            )
    return out


def run_mapillary_tools(root: Path, options: list[str], tz: str) -> Run:
    scratch = root / "mt"
    home = scratch / "home"
    home.mkdir(parents=True)
    desc = scratch / "desc.json"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TZ": tz,
        "MAPILLARY_TOOLS_PROMPT_DISABLED": "YES",
        "MAPILLARY_CONFIG_PATH": str(home / "config.ini"),
        "MAPILLARY_UPLOAD_HISTORY_PATH": str(scratch / "history"),
        "MAPILLARY_TOOLS_UPLOAD_CACHE_DIR": str(scratch / "cache"),
    }
    command = [str(MAPILLARY_TOOLS), "process", str(root / "images"), "--desc_path", str(desc)]
    proc = subprocess.run(
        [*command, "--skip_process_errors", "--num_processes", "0", *options],
        env=env,
        cwd=scratch,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    results = read_description(desc, root / "images") if desc.exists() else {}
    return Run(proc.returncode, proc.stderr, results)


def run_ours(root: Path, options: list[str], tz: str) -> Run:
    scratch = root / "ours"
    scratch.mkdir()
    desc = scratch / "desc.json"
    command = [sys.executable, "-m", "daemon", "process", str(root / "images")]
    proc = subprocess.run(
        [*command, "--desc_path", str(desc), "--skip_process_errors", "--num_processes", "0",
         *options, "--time-zone", tz],
        env={**os.environ, "TZ": "UTC"},  # the zone must come from --time-zone, not the host
        cwd=scratch,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )  # fmt: skip
    results = read_description(desc, root / "images") if desc.exists() else {}
    return Run(proc.returncode, proc.stderr, results)


@dataclass(frozen=True)
class Side:
    case: Case
    images: list[str]
    theirs: Run
    ours: Run


def run_case(case: Case, root: Path) -> Side:
    root.mkdir(parents=True)
    options = case.build(root)
    images = sorted(
        p.relative_to(root / "images").as_posix()
        for p in (root / "images").rglob("*")
        if p.suffix.lower() in (".jpg", ".jpeg")
    )
    with ThreadPoolExecutor(2) as pool:
        theirs = pool.submit(run_mapillary_tools, root, options, case.tz)
        ours = pool.submit(run_ours, root, options, case.tz)
        return Side(case, images, theirs.result(), ours.result())


@pytest.fixture(scope="module")
def sides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Side]:
    base = tmp_path_factory.mktemp("parity")
    return {c.name: run_case(c, base / c.name.replace(" ", "_")) for c in CASES}


@pytest.fixture(scope="module")
def table_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("parity_table") / "differences.txt"


# --- comparing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    case: str
    image: str
    field: str
    theirs: str
    ours: str


def _text(r: Result | None, field: str) -> str:
    if r is None:
        return "(no entry)"
    if field in ("verdict", "error type"):
        return "accepted" if r.status == "ok" else r.status
    if field == "position":
        return f"{r.lat:.7f},{r.lon:.7f}"
    if field == "heading":
        return "None" if r.heading is None else f"{r.heading:.2f}"
    return str(getattr(r, field))


def _vars_time(text: str) -> datetime:
    """A time in an error's vars: mapillary_tools writes its capture-time format
    (``2025_05_02_15_50_45_692``), we ISO 8601 (``2025-05-02T15:50:45.692Z``)."""
    if text.endswith("Z"):
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    return datetime.strptime(f"{text}Z", "%Y_%m_%d_%H_%M_%S_%f%z")


def _outside_vars(name: str, image: str, theirs: Result, ours: Result) -> list[Row]:
    """Both say the image is outside the track: the same image time and track span."""
    assert theirs.vars is not None and ours.vars is not None
    rows = []
    for key in ("image_time", "gpx_start_time", "gpx_end_time"):
        if _vars_time(theirs.vars[key]) != _vars_time(ours.vars[key]):
            rows.append(Row(name, image, f"vars.{key}", theirs.vars[key], ours.vars[key]))
    return rows


def compare(side: Side) -> list[Row]:
    """One row per image and field that differ."""
    name = side.case.name
    rows: list[Row] = []
    ours, theirs = side.ours.results, side.theirs.results
    assert side.ours.code == 0, side.ours.stderr[-2000:]
    assert "Traceback" not in side.ours.stderr, side.ours.stderr[-2000:]
    assert sorted(ours) == side.images, f"{name}: our description misses images"
    if not theirs:
        last = side.theirs.stderr.strip().splitlines()[-1:] or [""]
        assert side.theirs.code != 0
        what = f"exit {side.theirs.code}, no description: {last[0][:70]}"
        for image in side.images:
            rows.append(Row(name, image, "verdict", what, _text(ours[image], "verdict")))
        return rows
    assert sorted(theirs) == side.images, f"{name}: mapillary_tools' description misses images"
    both = [i for i in side.images if ours[i].status == theirs[i].status == "ok"]

    def mates(results: dict[str, Result], image: str) -> frozenset[str]:
        return frozenset(i for i in both if results[i].sequence == results[image].sequence)

    for image in side.images:
        mine, other = ours[image], theirs[image]
        if (mine.status == "ok") != (other.status == "ok"):
            rows.append(
                Row(name, image, "verdict", _text(other, "verdict"), _text(mine, "verdict"))
            )
            continue
        if mine.status != "ok":
            if mine.status != other.status:
                rows.append(Row(name, image, "error type", other.status, mine.status))
            elif mine.status == "MapillaryOutsideGPXTrackError":
                rows += _outside_vars(name, image, other, mine)
            continue
        assert mine.lat is not None and mine.lon is not None
        assert other.lat is not None and other.lon is not None
        if abs(mine.lat - other.lat) > 1e-6 or abs(mine.lon - other.lon) > 1e-6:
            rows.append(
                Row(name, image, "position", _text(other, "position"), _text(mine, "position"))
            )
        if mine.time != other.time:
            rows.append(Row(name, image, "time", str(other.time), str(mine.time)))
        if (mine.heading is None) != (other.heading is None) or (
            mine.heading is not None
            and other.heading is not None
            and angle_difference(mine.heading, other.heading) > 1.0
        ):
            rows.append(
                Row(name, image, "heading", _text(other, "heading"), _text(mine, "heading"))
            )
        assert mine.other is not None and other.other is not None
        for key in sorted(set(mine.other) | set(other.other)):
            x, y = other.other.get(key), mine.other.get(key)
            close = isinstance(x, float) and isinstance(y, float) and abs(x - y) <= 1e-6
            if x != y and not close:
                rows.append(Row(name, image, key, repr(x), repr(y)))
        a, b = mates(ours, image), mates(theirs, image)
        if a != b:
            rows.append(
                Row(
                    name,
                    image,
                    "sequence",
                    f"with {len(b) - 1} others",
                    f"with {len(a) - 1} others",
                )
            )
    return rows


#: (case, field) → why we differ from mapillary_tools on purpose (we are right).
ALLOWED = {
    ("corpus jpeg", "MAPAltitude"): (
        "mapillary__adobe_coords.jpg: its XMP exif:GPSAltitude is a rational string "
        "'136169/100' (as the XMP spec says); mapillary_tools only tries float() and loses "
        "it, we read 1361.69 m (see test_exif_vs_mapillary_tools)"
    ),
    ("gpx friday run", "verdict"): (
        "#129: images taken in the gaps between the track's 3 segments (the runner stopped "
        "recording); mapillary_tools merges the segments and interpolates straight across "
        "minutes of missing track, we refuse them (MapillaryOutsideGPXTrackError, 'in a gap')"
    ),
    ("gpx friday run", "heading"): (
        "images exactly on the first point of a later segment: same position, but "
        "mapillary_tools' heading is the bearing across the gap from the previous segment's "
        "end, ours the bearing of that segment's own first stretch"
    ),
    ("gpx without times", "verdict"): (
        "291 of the file's 296 points have no time (a route stripped of its times); "
        "mapillary_tools interpolates between the 5 timed points left as if they were a "
        "recording, we refuse the file (MapillaryGPXEmptyError naming it and why)"
    ),
    ("gpx bom", "verdict"): (
        "the corpus BOM file has no track (one waypoint): mapillary_tools crashes "
        "(AssertionError, exit 1) and writes no description at all; we refuse each image "
        "with MapillaryGPXEmptyError saying the file has no <trk>"
    ),
    ("nmea GN", "verdict"): (
        "a $GN (multi-constellation) log: mapillary_tools reads only $GP sentences, finds no "
        "point and crashes (exit 1, no description); we geotag, exactly where mapillary_tools "
        "puts the same log spoken as $GP (asserted below)"
    ),
}


def print_table(rows: list[Row], out: Path) -> None:
    """The differences grouped by (case, field), with the reason each is allowed; the full
    per-image list goes to ``out`` too."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.case, r.field), []).append(r)
    lines = [
        "mapillaryd process vs mapillary_tools 0.14.7 process: differences",
        f"{len(CASES)} cases; {len(rows)} image/field differences in {len(groups)} groups",
        "case | field | images | example: mapillary_tools → mapillaryd | why",
    ]
    for (case, field), members in sorted(groups.items()):
        first = members[0]
        why = ALLOWED.get((case, field), "NOT ALLOWED")
        example = f"{first.image}: {first.theirs} → {first.ours}"
        lines.append(f"{case} | {field} | {len(members)} | {example} | {why}")
    detail = ["", "per image: case | image | field | mapillary_tools | mapillaryd"]
    detail += [f"{r.case} | {r.image} | {r.field} | {r.theirs} | {r.ours}" for r in rows]
    print("\n" + "\n".join(lines))
    out.write_text("\n".join(lines + detail) + "\n", encoding="utf-8")


def test_per_image_parity_and_the_table_of_differences(
    sides: dict[str, Side], table_file: Path
) -> None:
    rows = [r for side in sides.values() for r in compare(side)]
    print_table(rows, table_file)
    print(f"(table written to {table_file})")
    found = {(r.case, r.field) for r in rows}
    assert found - set(ALLOWED) == set(), "differences not on the allow-list"
    assert set(ALLOWED) - found == set(), "allowed differences that no longer occur"
    # enough was compared: every case but the crashes has images both accept
    for name, side in sides.items():
        both = [
            i
            for i in side.images
            if side.theirs.results.get(i, Result("")).status == "ok"
            and side.ours.results[i].status == "ok"
        ]
        if name not in ("gpx bom", "nmea GN", "gpx without times"):
            assert len(both) >= 5, name
    # and the outside-the-track verdicts were compared with their times
    outside = [
        i
        for side in sides.values()
        for i, r in side.ours.results.items()
        if r.status
        == side.theirs.results.get(i, Result("")).status
        == "MapillaryOutsideGPXTrackError"
    ]
    assert len(outside) >= 8


# --- the deliberate differences and the options, image by image --------------------------------


def _ok(run: Run, prefix: str = "") -> dict[str, Result]:
    return {k: r for k, r in run.results.items() if k.startswith(prefix) and r.status == "ok"}


def _groups(results: dict[str, Result]) -> list[list[str]]:
    seqs: dict[str | None, list[str]] = {}
    for name, r in sorted(results.items()):
        seqs.setdefault(r.sequence, []).append(name)
    return sorted(seqs.values())


def _utc(capture: str | None) -> datetime:
    assert capture is not None
    return datetime.strptime(f"{capture}Z", "%Y_%m_%d_%H_%M_%S_%f%z")


def test_the_drives_exercise_every_option(sides: dict[str, Side]) -> None:
    """Guard against a scenario silently not doing what it is for, on both sides."""
    defaults, options = sides["drives defaults"], sides["drives options"]
    for run in (defaults.theirs, defaults.ours, options.theirs, options.ours):
        dups = sorted(k for k, r in run.results.items() if r.status == "MapillaryDuplicationError")
        # the stop at the light: five repeated fixes and the wobble within 5°
        assert [k for k in dups if k.startswith("stop_at_light/")] == [
            f"stop_at_light/IMG_{i:05d}.jpg" for i in range(8, 14)
        ]
    for run in (options.theirs, options.ours):  # 1 m steps, --duplicate_distance 1.5
        crawl = [r.status for k, r in sorted(run.results.items()) if k.startswith("crawl/")]
        assert crawl == ["ok", "MapillaryDuplicationError"] * 6
    for run in (defaults.theirs, defaults.ours):
        assert all(r.status == "ok" for k, r in run.results.items() if k.startswith("crawl/"))
    # the 30 s pause and the 70 m jump: one sequence each by default, two with 20 s and 50 m
    for folder in ("pause/", "jump/"):
        for run, count in ((defaults.theirs, 1), (defaults.ours, 1)):
            assert len(_groups(_ok(run, folder))) == count, folder
        for run in (options.theirs, options.ours):
            assert [len(g) for g in _groups(_ok(run, folder))] == [10, 10], folder
    # --offset_time 12.5 moved every capture time; --offset_angle 33.5 with
    # --interpolate_directions turned the derived headings (the road turns 2° a frame)
    for before, after in ((defaults.theirs, options.theirs), (defaults.ours, options.ours)):
        for name, r in _ok(before, "plain/").items():
            shift = _utc(after.results[name].time) - _utc(r.time)
            assert shift == timedelta(seconds=12.5), name
        first = options.ours.results["plain/IMG_00000.jpg"].heading
        assert first is not None and angle_difference(first, 62.0 + 33.5) < 0.1


def test_corpus_verdicts(sides: dict[str, Side]) -> None:
    side = sides["corpus jpeg"]
    for run in (side.theirs, side.ours):
        statuses = [r.status for r in run.results.values()]
        assert statuses.count("ok") >= 15
        assert {"MapillaryGeoTaggingError", "MapillaryNullIslandError"} <= set(statuses)


def test_129_images_in_segment_gaps_are_refused(sides: dict[str, Side]) -> None:
    side = sides["gpx friday run"]
    track = read_gpx(GPX / "togeojson__Friday-Evening-Run.gpx")
    gaps = [
        (a[-1].time, b[0].time) for a, b in zip(track.segments, track.segments[1:], strict=False)
    ]
    in_gap = set()
    for name, r in side.theirs.results.items():
        if r.status == "ok" and any(lo < _utc(r.time) < hi for lo, hi in gaps):
            in_gap.add(name)
    assert len(in_gap) == 6  # three in each of the two gaps, placed by mapillary_tools
    refused = {k for k, r in side.ours.results.items() if r.status != "ok"}
    assert in_gap <= refused
    for name in in_gap:
        r = side.ours.results[name]
        assert r.status == "MapillaryOutsideGPXTrackError" and "gap between track segments" in (
            r.message
        )
        assert r.vars is not None and r.vars["reason"] == "outside_track"


def test_interpolation_offset_and_gpx_start_time(sides: dict[str, Side]) -> None:
    track = read_gpx(GPX / SF)
    plain, offset = sides["gpx sf"].ours.results, sides["gpx sf offset"].ours.results
    assert len(_ok(sides["gpx sf offset"].ours)) >= 30
    # the camera clock was 3637.25 s behind; the offset puts every image where it was
    for name, r in plain.items():
        assert offset[name].status == r.status, name
        if r.status == "ok":
            assert (offset[name].lat, offset[name].lon, offset[name].time) == (r.lat, r.lon, r.time)
    # --interpolation_use_gpx_start_time: the first image on the first point, then
    # --offset_time -2 on the final capture time
    start = sides["gpx sf start time"]
    for run in (start.theirs, start.ours):
        first = run.results["IMG_0000.jpg"]
        p0 = track.segments[0][0]
        assert (first.lat, first.lon) == (round(p0.lat, 7), round(p0.lon, 7))
        assert _utc(first.time) == track.start - timedelta(seconds=2)


def test_naive_camera_times_are_read_in_the_given_zone(sides: dict[str, Side]) -> None:
    """Computed independently of both tools: the wall clock minus the zone's offset."""
    side = sides["naive times"]
    expected_offset = {"summer": 2, "winter": 1, "spring_forward": 1}
    for folder, start in NAIVE_STARTS.items():
        ok = _ok(side.ours, f"{folder}/")
        assert len(ok) == 12, folder
        for i in range(12):
            wall = (start + timedelta(seconds=i)).replace(tzinfo=UTC)
            utc = wall - timedelta(hours=expected_offset[folder])
            assert _utc(ok[f"{folder}/IMG_{i:04d}.jpg"].time) == utc, (folder, i)
    # the spring-forward drive runs into wall-clock times that do not exist (02:00:05)
    walls = [NAIVE_STARTS["spring_forward"] + timedelta(seconds=i) for i in range(12)]
    assert [t.hour for t in walls] == [1] * 6 + [2] * 6
    gpx = sides["naive times gpx"]
    assert len(_ok(gpx.ours)) == len(gpx.images) == len(_ok(gpx.theirs))


def test_gn_talker_geotags_where_mapillary_tools_puts_the_gp_log(sides: dict[str, Side]) -> None:
    gn, gp = sides["nmea GN"], sides["nmea GP"]
    assert gn.theirs.code != 0 and not gn.theirs.results
    reference = gp.theirs.results
    assert len(_ok(gp.theirs)) >= 30
    for name, r in gn.ours.results.items():
        other = reference[name]
        assert r.status == other.status, name
        if r.status == "ok":
            assert r.lat is not None and other.lat is not None
            assert r.lon is not None and other.lon is not None
            assert abs(r.lat - other.lat) <= 1e-6 and abs(r.lon - other.lon) <= 1e-6, name
            assert r.time == other.time, name


def test_unusable_gpx_files_are_refused_with_a_named_reason(sides: dict[str, Side]) -> None:
    for case, file, words in (
        ("gpx without times", "gpxpy__cerknicko-without-times.gpx", "have no time"),
        ("gpx bom", "gpxpy__unicode_with_bom.gpx", "no tracks"),
    ):
        for name, r in sides[case].ours.results.items():
            assert r.status == "MapillaryGPXEmptyError", (case, name)
            assert file in r.message and words in r.message, r.message
            assert r.vars == {"reason": "bad_gpx"}
