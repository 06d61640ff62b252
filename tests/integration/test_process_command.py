"""``mapillaryd process`` and ``process-and-upload`` as a user runs them (subprocesses).

* the real ``mapillary_tools upload --desc_path`` accepts the description file we write and
  uploads exactly our images, with our positions, to the sandbox;
* ``--offset_time auto``: a camera clock 1 h 0 min 37 s off (either way) is found and
  applied, and the summary says so; ambiguous cases are refused per image, nothing placed;
* every broken input (each corpus GPX and JPEG, broken NMEA logs and CSV files) gives each
  image a named reason, never a traceback;
* ``--overwrite_EXIF_gps_tag`` writes geotagged copies (originals untouched) that read back
  (by us and by mapillary_tools) where the description says;
* ``process-and-upload`` uploads into clusters, and a second run uploads nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daemon import synth
from daemon.geo.distance import distance_m
from daemon.media.exif import read_exif_facts
from daemon.media.gpx import read_gpx
from daemon.media.nmea import gga_sentence, rmc_sentence
from daemon.sandbox import Sandbox
from tests.conftest import CORPUS, REPO
from tests.e2e.harness import strip_exif

MAPILLARY_TOOLS = REPO / ".venv-mt" / "bin" / "mapillary_tools"
TOKEN = "process-command-token-7c2"
RUN_TIMEOUT_S = 120
T0 = datetime(2026, 6, 1, 9, 0, 0, tzinfo=UTC)
CLOCK_ERROR_S = 3637.0  # 1 h 0 min 37 s

needs_mapillary_tools = pytest.mark.skipif(
    not MAPILLARY_TOOLS.exists(),
    reason=f"no mapillary_tools 0.14.7 at {MAPILLARY_TOOLS} (run `make venv-mt`)",
)
needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"no shared corpus at {CORPUS}")


# --- helpers ------------------------------------------------------------------------------------


def mapillaryd(
    *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon", *map(str, args)],
        env={**os.environ, "TZ": "UTC", **(env or {})},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def process(
    images: Path, desc: Path, *options: str | Path
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    """``mapillaryd process``: exit 0, no traceback; return the run and its entries."""
    proc = mapillaryd("process", images, "--desc_path", desc, "--time-zone", "UTC", *options)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    entries: list[dict[str, Any]] = json.loads(desc.read_text())
    return proc, entries


def by_name(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {Path(e["filename"]).name: e for e in entries}


def capture_time(entry: dict[str, Any]) -> datetime:
    return datetime.strptime(f"{entry['MAPCaptureTime']}Z", "%Y_%m_%d_%H_%M_%S_%f%z")


def write_gpx(path: Path, points: Sequence[tuple[datetime, float, float, float]]) -> None:
    """A GPX 1.1 file with one track segment through ``points`` (time, lat, lon, ele)."""
    rows = [
        f'<trkpt lat="{lat:.8f}" lon="{lon:.8f}"><ele>{ele:.1f}</ele>'
        f"<time>{t.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3]}Z</time></trkpt>"
        for t, lat, lon, ele in points
    ]
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<gpx version="1.1" creator="test" xmlns="http://www.topografix.com/GPX/1/1">'
        "<trk><name>drive</name><trkseg>\n" + "\n".join(rows) + "\n</trkseg></trk></gpx>\n",
        encoding="utf-8",
    )


@dataclass(frozen=True)
class Truth:
    """Where and when one image really was taken."""

    name: str
    time: datetime
    lat: float
    lon: float


def write_images(
    folder: Path,
    truths: Sequence[Truth],
    *,
    clock_error_s: float = 0.0,
    with_gps: bool = False,
) -> None:
    """JPEGs whose camera time is the true time + ``clock_error_s``; GPS only if asked."""
    folder.mkdir(parents=True)
    for i, t in enumerate(truths):
        exif = synth.exif_bytes(
            time=t.time + timedelta(seconds=clock_error_s),
            lat=t.lat if with_gps else None,
            lon=t.lon if with_gps else None,
            with_gps_time=False,
        )
        (folder / t.name).write_bytes(synth.jpeg_bytes(i, size=(48, 32), exif=exif))


def drive(count: int, *, spacing_m: float = 6.0, seed: int = 5) -> list[Truth]:
    """A 1 Hz drive along a gently curving road (5–6 m/s)."""
    return [
        Truth(f"P{i:04d}.jpg", t, lat, lon)
        for i, (t, lat, lon, _, _) in enumerate(
            synth.drive_points(count, start=T0, spacing_m=spacing_m, seed=seed)
        )
    ]


def gpx_of(path: Path, truths: Sequence[Truth]) -> Path:
    write_gpx(path, [(t.time, t.lat, t.lon, 300.0) for t in truths])
    return path


def sandbox_stats(sandbox: Sandbox) -> dict[str, int]:
    with urllib.request.urlopen(f"{sandbox.url}/_sandbox/stats", timeout=10) as r:
        stats: dict[str, int] = json.loads(r.read())["requests"]
    return {k: v for k, v in stats.items() if "/_sandbox/" not in k}


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    with Sandbox(tmp_path / "sandbox", TOKEN) as s:
        yield s


# --- 2. mapillary_tools uploads what we describe ------------------------------------------------


def mapillary_tools_env(tmp_path: Path, sandbox: Sandbox) -> dict[str, str]:
    config = tmp_path / "mapillary.ini"
    config.write_text(f"[sandbox]\nuser_upload_token = {TOKEN}\n", encoding="utf-8")
    home = tmp_path / "mt-home"
    home.mkdir()
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TZ": "UTC",
        "MAPILLARY_UPLOAD_ENDPOINT": sandbox.upload_endpoint,
        "MAPILLARY_GRAPH_API_ENDPOINT": sandbox.graph_endpoint,
        "MAPILLARY_CONFIG_PATH": str(config),
        "MAPILLARY_TOOLS_PROMPT_DISABLED": "YES",
        "MAPILLARY_UPLOAD_HISTORY_PATH": str(tmp_path / "mt-history"),
        "MAPILLARY_TOOLS_UPLOAD_CACHE_DIR": str(tmp_path / "mt-cache"),
        "MAPILLARY_TOOLS_MAX_UPLOAD_RETRIES": "2",
    }


@pytest.mark.mapillary_tools
@needs_mapillary_tools
def test_mapillary_tools_uploads_our_description_file(tmp_path: Path, sandbox: Sandbox) -> None:
    """Images without GPS, geotagged by us from a GPX track (so the positions are ours, not
    copied from EXIF); one image before the track is an error entry, which upload skips."""
    truths = drive(16)
    track = gpx_of(tmp_path / "track.gpx", truths)
    early = Truth("EARLY.jpg", T0 - timedelta(seconds=40), truths[0].lat, truths[0].lon)
    write_images(tmp_path / "drive", [*truths, early])
    desc = tmp_path / "desc.json"
    _, entries = process(
        tmp_path / "drive", desc, "--geotag_source", "gpx", "--geotag_source_path", track
    )
    ours = by_name(entries)
    assert ours["EARLY.jpg"]["error"]["type"] == "MapillaryOutsideGPXTrackError"
    accepted = {n for n, e in ours.items() if "error" not in e}
    assert accepted == {t.name for t in truths}

    proc = subprocess.run(
        [str(MAPILLARY_TOOLS), "upload", str(tmp_path / "drive"), "--desc_path", str(desc),
         "--user_name", "sandbox"],
        env=mapillary_tools_env(tmp_path, sandbox),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (cluster,) = sandbox.clusters()
    uploaded = {i["description"]["MAPFilename"]: i for i in cluster["images"]}
    assert set(uploaded) == accepted
    truth = {t.name: t for t in truths}
    for name, image in uploaded.items():
        d, mine = image["description"], ours[name]
        assert (d["MAPLatitude"], d["MAPLongitude"]) == (mine["MAPLatitude"], mine["MAPLongitude"])
        assert d["MAPCaptureTime"] == mine["MAPCaptureTime"]
        assert (
            distance_m(d["MAPLatitude"], d["MAPLongitude"], truth[name].lat, truth[name].lon) < 0.05
        )


# --- 3. --offset_time auto ----------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """A GPS logger's track and the images a camera took along it."""

    track: list[Truth]
    images: list[Truth]
    with_gps: bool = False


def logger_and_camera_switched_together() -> Scenario:
    """Images every 3 s from the first to the last second of the track: only one offset puts
    them all on it (the "span" method)."""
    track = drive(121)
    images = [Truth(f"IMG_{i:04d}.jpg", t.time, t.lat, t.lon) for i, t in enumerate(track[::3])]
    return Scenario(track, images)


def distance_triggered_in_traffic() -> Scenario:
    """A camera shooting every 15 m in stop-and-go traffic, in the middle of a longer track:
    only at the right offset are the images evenly spaced along it (the "spacing" method)."""
    rng = random.Random(11)
    speeds: list[float] = []
    while len(speeds) < 240:
        speeds += [rng.choice([0.0, 0.0, 4.0, 8.0, 12.0, 15.0])] * rng.randint(5, 20)
    lat, lon, along = 46.05, 14.5, [0.0]
    track = []
    for i, v in enumerate(speeds[:240]):
        track.append(Truth(f"fix{i}", T0 + timedelta(seconds=i), lat, lon))
        lat, lon = synth.destination(lat, lon, 60.0, v)
        along.append(along[-1] + v)
    images, d = [], along[40]
    while d < along[200]:
        k = max(i for i in range(len(track) - 1) if along[i] <= d and along[i + 1] > d)
        f = (d - along[k]) / (along[k + 1] - along[k])
        a, b = track[k], track[k + 1]
        images.append(
            Truth(
                f"IMG_{len(images):04d}.jpg",
                a.time + (b.time - a.time) * f,
                a.lat + (b.lat - a.lat) * f,
                a.lon + (b.lon - a.lon) * f,
            )
        )
        d += 15.0
    return Scenario(track, images)


def images_with_positions() -> Scenario:
    """The camera has GPS but a wrong clock; a part of a longer track (the "positions"
    method)."""
    track = drive(150)
    images = [
        Truth(f"IMG_{i:04d}.jpg", t.time, t.lat, t.lon) for i, t in enumerate(track[40:110:2])
    ]
    return Scenario(track, images, with_gps=True)


def steady_speed_fixed_interval() -> Scenario:
    """Every 3 s at a steady speed, in the middle of the track: any offset in a 2-minute
    window places them equally well."""
    track = drive(180)
    images = [
        Truth(f"IMG_{i:04d}.jpg", t.time, t.lat, t.lon) for i, t in enumerate(track[60:120:3])
    ]
    return Scenario(track, images)


def loop_driven_twice() -> Scenario:
    """Two laps of a 600 m loop; the camera (with GPS) shot during the first lap only: lap 1
    and lap 2 fit its positions equally."""
    centre, track = (46.05, 14.5), []
    for i in range(120):
        lat, lon = synth.destination(*centre, (i % 60) * 6.0, 95.0)
        track.append(Truth(f"fix{i}", T0 + timedelta(seconds=i), lat, lon))
    images = [Truth(f"IMG_{i:04d}.jpg", t.time, t.lat, t.lon) for i, t in enumerate(track[5:55:2])]
    return Scenario(track, images, with_gps=True)


def run_auto(
    tmp_path: Path, scenario: Scenario, clock_error_s: float
) -> tuple[str, dict[str, Any]]:
    track = gpx_of(tmp_path / "logger.gpx", scenario.track)
    write_images(
        tmp_path / "card", scenario.images, clock_error_s=clock_error_s, with_gps=scenario.with_gps
    )
    proc, entries = process(
        tmp_path / "card",
        tmp_path / "desc.json",
        "--geotag_source", "gpx", "--geotag_source_path", track, "--offset_time", "auto",
    )  # fmt: skip
    assert sorted(by_name(entries)) == sorted(t.name for t in scenario.images)
    return proc.stderr, by_name(entries)


@pytest.mark.parametrize(
    ("scenario", "clock_error_s", "method"),
    [
        (logger_and_camera_switched_together, -CLOCK_ERROR_S, "span"),
        (logger_and_camera_switched_together, +CLOCK_ERROR_S, "span"),
        (distance_triggered_in_traffic, -CLOCK_ERROR_S, "spacing"),
        (images_with_positions, +CLOCK_ERROR_S, "positions"),
    ],
    ids=["span-behind", "span-ahead", "spacing-behind", "positions-ahead"],
)
def test_auto_offset_finds_a_clock_1h_37s_off(
    tmp_path: Path, scenario: Any, clock_error_s: float, method: str
) -> None:
    s: Scenario = scenario()
    stderr, entries = run_auto(tmp_path, s, clock_error_s)
    for truth in s.images:
        e = entries[truth.name]
        assert "error" not in e, e
        off = distance_m(e["MAPLatitude"], e["MAPLongitude"], truth.lat, truth.lon)
        assert off < 3.0, (truth.name, off)
        assert abs((capture_time(e) - truth.time).total_seconds()) < 1.0, truth.name
    # the summary says which offset was applied, and how it was found
    side = "behind" if clock_error_s < 0 else "ahead of"
    sign = "+" if clock_error_s < 0 else "-"
    notes = [line for line in stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1, stderr
    assert f"1 h 0 min 37.00 s {side} GPS time" in notes[0], notes
    assert f"offset {sign}1 h 0 min 37.00 s" in notes[0], notes
    assert f"({method})" in notes[0] and "applied" in notes[0], notes


@pytest.mark.parametrize(
    ("scenario", "words"),
    [
        (steady_speed_fixed_interval, "the speed hardly changes"),
        (loop_driven_twice, "two offsets fit the image positions about equally"),
    ],
    ids=["steady-speed", "loop-twice"],
)
def test_auto_offset_refuses_an_ambiguous_fit(tmp_path: Path, scenario: Any, words: str) -> None:
    s: Scenario = scenario()
    stderr, entries = run_auto(tmp_path, s, -CLOCK_ERROR_S)
    for name, e in entries.items():
        assert "error" in e, f"{name} was placed although the offset is ambiguous"
        error = e["error"]
        assert error["vars"]["reason"] == "offset_ambiguous"
        assert error["message"].startswith(f"{name}: the camera clock offset cannot be determined")
        assert words in error["message"]
    assert f"\t{len(s.images)} offset_ambiguous" in stderr
    assert "\t0 ready" in stderr
    assert "applied" not in stderr


# --- 4. a named reason for every broken input, never a traceback -------------------------------


def assert_every_image_has_a_verdict(
    entries: list[dict[str, Any]], images: Path, source: str | None = None
) -> dict[str, dict[str, Any]]:
    """Every image is described, or has an error entry with a reason code and a message that
    names the image or the ``source`` file (the track or the CSV)."""
    found = by_name(entries)
    assert sorted(found) == sorted(p.name for p in images.iterdir()), "an image is missing"
    for name, e in found.items():
        if "error" not in e:
            assert -90 <= e["MAPLatitude"] <= 90 and e["MAPCaptureTime"], e
            continue
        error = e["error"]
        assert error["vars"]["reason"], e
        assert error["type"].startswith("Mapillary"), e
        named = name in error["message"] or (source is not None and source in error["message"])
        assert named, f"{name}: the message names neither the image nor the file: {error}"
    return found


def untagged_images(folder: Path, count: int, start: datetime = T0) -> Path:
    write_images(
        folder,
        [Truth(f"IMG_{i}.jpg", start + timedelta(seconds=i), 0.0, 0.0) for i in range(count)],
    )
    return folder


#: Corpus GPX files that cannot place any image (the reasons are in the track tests).
UNUSABLE_GPX = {
    "gpxpy__unicode_with_bom.gpx",  # no track, one waypoint
    "gpxpy__gpx_with_garmin_extension.gpx",  # no track
    "togeojson__bad.gpx",  # not well-formed
    "togeojson__empty_trk.gpx",  # an empty <trk>
    "gpxpy__cerknicko-without-times.gpx",  # 291 of 296 points without time
    "gpxpy__Mojstrovka.gpx",  # a route without times
}


@needs_corpus
def test_every_corpus_gpx_gives_each_image_a_named_reason(tmp_path: Path) -> None:
    """One image inside the first segment of each usable track (placed by its own track,
    outside every other), one without any capture time; every file, one run each."""
    files = sorted((CORPUS / "gpx").glob("*.gpx"))
    assert len(files) >= 20
    images = tmp_path / "images"
    truths = []
    for path in files:
        if path.name not in UNUSABLE_GPX:
            first = read_gpx(path).segments[0]
            middle = first[0].time + (first[-1].time - first[0].time) / 2
            truths.append(Truth(f"{path.stem}.jpg", middle, 0.0, 0.0))
    write_images(images, truths)
    (images / "NOTIME.jpg").write_bytes(synth.jpeg_bytes(1, size=(48, 32)))

    def one(path: Path) -> dict[str, dict[str, Any]]:
        _, entries = process(
            images, tmp_path / f"{path.stem}.json",
            "--geotag_source", "gpx", "--geotag_source_path", path,
        )  # fmt: skip
        return assert_every_image_has_a_verdict(entries, images, path.name)

    with ThreadPoolExecutor(2) as pool:
        results = dict(zip(files, pool.map(one, files), strict=True))
    for path, found in results.items():
        if path.name in UNUSABLE_GPX:
            for name, e in found.items():  # the track's problem first, even without a time
                assert e["error"]["vars"]["reason"] == "bad_gpx", (path.name, name)
                assert path.name in e["error"]["message"]
        else:
            assert found["NOTIME.jpg"]["error"]["vars"]["reason"] == "no_time", path.name
            assert "error" not in found[f"{path.stem}.jpg"], (path.name, found[f"{path.stem}.jpg"])
            refused = [e for e in found.values() if "error" in e]
            reasons = {e["error"]["vars"]["reason"] for e in refused}
            assert reasons <= {"no_time", "outside_track"}, (path.name, reasons)


def nmea_lines(start: datetime, count: int, talker: str = "GP") -> list[str]:
    lines = []
    for t, lat, lon, alt, heading in synth.drive_points(count, start=start, spacing_m=8.0):
        lines.append(rmc_sentence(t, lat, lon, speed_knots=15.5, course=heading, talker=talker))
        lines.append(gga_sentence(t, lat, lon, alt, talker=talker))
    return lines


def _bad_checksums(lines: list[str]) -> str:
    return "\r\n".join(line[:-2] + ("00" if line[-2:] != "00" else "11") for line in lines)


def _no_fix(lines: list[str]) -> str:
    out = []
    for line in lines:
        fields = line.split(",")
        if fields[0].endswith("RMC"):
            fields[2] = "V"  # receiver warning: no fix
        else:
            fields[6] = "0"  # fix quality: invalid
        body = ",".join(fields)[1:].split("*")[0]
        out.append(f"${body}*{reduce_xor(body):02X}")
    return "\r\n".join(out)


def reduce_xor(body: str) -> int:
    value = 0
    for ch in body.encode("ascii"):
        value ^= ch
    return value


BROKEN_NMEA: dict[str, Any] = {
    "empty": lambda lines: "",
    "bad checksums": _bad_checksums,
    "garbage": lambda lines: "hello\nthis is not NMEA\n$$$\n$GPXYZ,1,2,3*00\n,,,,\n" * 20,
    "binary": lambda lines: bytes(range(256)) * 8,
    "no fix": _no_fix,
    "gga only (no date)": lambda lines: "\r\n".join(x for x in lines if "GGA" in x),
    "truncated lines": lambda lines: "\r\n".join(x[: len(x) // 2] for x in lines),
    "gsv only": lambda lines: (
        "$GPGSV,3,1,11,03,03,111,00,04,15,270,00,06,01,010,00,13,06,292,00*74\r\n" * 30
    ),
}


@pytest.mark.parametrize("kind", sorted(BROKEN_NMEA))
def test_a_broken_nmea_log_gives_each_image_a_named_reason(tmp_path: Path, kind: str) -> None:
    images = untagged_images(tmp_path / "images", 4, T0 + timedelta(seconds=10))
    content = BROKEN_NMEA[kind](nmea_lines(T0, 60))
    log = tmp_path / "broken.nmea"
    log.write_bytes(content if isinstance(content, bytes) else content.encode("ascii"))
    _, entries = process(
        images, tmp_path / "desc.json", "--geotag_source", "nmea", "--geotag_source_path", log
    )
    found = assert_every_image_has_a_verdict(entries, images, "broken.nmea")
    for name, e in found.items():
        assert e["error"]["vars"]["reason"] == "bad_nmea", (name, e)
        assert "broken.nmea" in e["error"]["message"]


def test_good_sentences_among_garbage_still_geotag(tmp_path: Path) -> None:
    images = untagged_images(tmp_path / "images", 4, T0 + timedelta(seconds=10))
    lines = nmea_lines(T0, 60)
    noisy = []
    for i, line in enumerate(lines):
        noisy.append(line)
        noisy.append(["garbage", "$GPRMC,12*00", line[: len(line) // 3], "\x00\xff"][i % 4])
    log = tmp_path / "noisy.nmea"
    log.write_bytes("\r\n".join(noisy).encode("latin-1"))
    _, entries = process(
        images, tmp_path / "desc.json", "--geotag_source", "nmea", "--geotag_source_path", log
    )
    found = assert_every_image_has_a_verdict(entries, images, "noisy.nmea")
    assert all("error" not in e for e in found.values()), found


CSV_COLUMNS = (
    "--filename_column", "1", "--timestamp_column", "2",
    "--latitude_column", "3", "--longitude_column", "4",
)  # fmt: skip


def csv_rows(count: int) -> list[str]:
    return [
        f"IMG_{i}.jpg,2026-06-01T09:00:{i:02d}Z,{46.05 + i * 1e-4:.6f},{14.5 + i * 1e-4:.6f}"
        for i in range(count)
    ]


#: name → (CSV text, options, the reasons the images may get)
BROKEN_CSV: dict[str, tuple[str | bytes, tuple[str, ...], set[str]]] = {
    "missing columns": (
        "name,time,lat,lon\n" + "\n".join(csv_rows(3)),
        (*CSV_COLUMNS[:6], "--longitude_column", "9"),
        {"bad_csv"},
    ),
    "bad numbers": (
        "name,time,lat,lon\n"
        "IMG_0.jpg,2026-06-01T09:00:00Z,abc,14.5\n"
        "IMG_1.jpg,2026-06-01T09:00:01Z,46.05,14,5x\n"
        "IMG_2.jpg,2026-06-01T09:00:02Z,123.4,14.5\n",
        CSV_COLUMNS,
        {"bad_csv"},
    ),
    "bad dates": (
        "name,time,lat,lon\n"
        "IMG_0.jpg,yesterday,46.05,14.5\n"
        "IMG_1.jpg,2026-13-45T09:00:01Z,46.05,14.5\n"
        "IMG_2.jpg,2026-06-01T09:00:02Z,46.05,14.5\n",
        CSV_COLUMNS,
        {"bad_csv"},
    ),
    "fewer rows than images (by name)": (
        "name,time,lat,lon\n" + "\n".join(csv_rows(2)),
        CSV_COLUMNS,
        {"no_csv_row"},
    ),
    "fewer rows than images (by order)": (
        "time,lat,lon\n" + "\n".join(r.split(",", 1)[1] for r in csv_rows(2)),
        ("--timestamp_column", "1", "--latitude_column", "2", "--longitude_column", "3"),
        {"bad_csv"},
    ),
    "empty file": ("", CSV_COLUMNS, {"bad_csv"}),
    "header only": ("name,time,lat,lon\n", CSV_COLUMNS, {"bad_csv"}),
    "not UTF-8": (b"name,time,lat,lon\n" + b"IMG_0.jpg,\xff\xfe,46,14\n", CSV_COLUMNS,
                  {"bad_csv"}),
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(BROKEN_CSV))
def test_a_broken_csv_gives_each_image_a_named_reason(tmp_path: Path, kind: str) -> None:
    text, options, reasons = BROKEN_CSV[kind]
    images = untagged_images(tmp_path / "images", 3)
    path = tmp_path / "positions.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    _, entries = process(
        images, tmp_path / "desc.json",
        "--geotag_source", "csv", "--geotag_source_path", path, *options,
    )  # fmt: skip
    found = assert_every_image_has_a_verdict(entries, images, "positions.csv")
    refused = {n: e["error"]["vars"]["reason"] for n, e in found.items() if "error" in e}
    assert refused and set(refused.values()) <= reasons, refused
    if kind == "fewer rows than images (by name)":
        assert refused == {"IMG_2.jpg": "no_csv_row"}  # the other two are placed


@pytest.mark.parametrize(
    "options",
    [
        ("--filename_column", "1"),
        ("--timestamp_column", "2", "--latitude_column", "0", "--longitude_column", "4"),
        ("--timestamp_column", "2", "--latitude_column", "3"),
    ],
    ids=["no time nor position column", "column 0", "latitude without longitude"],
)
def test_impossible_csv_column_options_are_an_argument_error(
    tmp_path: Path, options: tuple[str, ...]
) -> None:
    images = untagged_images(tmp_path / "images", 2)
    path = tmp_path / "positions.csv"
    path.write_text("name,time,lat,lon\n" + "\n".join(csv_rows(2)), encoding="utf-8")
    proc = mapillaryd(
        "process", images, "--desc_path", tmp_path / "desc.json", "--time-zone", "UTC",
        "--geotag_source", "csv", "--geotag_source_path", path, *options,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 2 and proc.stderr.startswith("mapillaryd: "), proc.stderr


@needs_corpus
def test_every_corpus_jpeg_gets_a_verdict_with_a_named_reason(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted((CORPUS / "jpeg").iterdir()):
        (images / path.name).write_bytes(path.read_bytes())
    proc, entries = process(images, tmp_path / "desc.json")
    found = assert_every_image_has_a_verdict(entries, images)
    reasons = {e["error"]["vars"]["reason"] for e in found.values() if "error" in e}
    assert {"no_gps", "no_time", "corrupt_media", "null_island"} <= reasons
    assert sum("error" not in e for e in found.values()) >= 15
    assert f"{len(found)} image(s) read in total" in proc.stderr


# --- 5. geotagged copies; process-and-upload ----------------------------------------------------


def sha256s(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def geotagged_copies(tmp_path: Path, *flags: str) -> tuple[Path, Path, dict[str, dict[str, Any]]]:
    """A camera 1 h 0 min 37 s behind, without GPS, in two folders; a GPX track; processed
    with the offset and ``flags`` into copies. Returns (images, copies, entries)."""
    truths = drive(12)
    track = gpx_of(tmp_path / "track.gpx", truths)
    images = tmp_path / "card"
    write_images(images / "DCIM" / "100CAM", truths[:6], clock_error_s=-CLOCK_ERROR_S)
    write_images(images / "DCIM" / "101CAM", truths[6:], clock_error_s=-CLOCK_ERROR_S)
    late = Truth("LATE.jpg", T0 + timedelta(seconds=600), 0.0, 0.0)
    write_images(images / "late", [late], clock_error_s=-CLOCK_ERROR_S)
    before = sha256s(images)
    copies = tmp_path / "copies"
    _, entries = process(
        images, tmp_path / "desc.json",
        "--geotag_source", "gpx", "--geotag_source_path", track,
        "--interpolation_offset_time", str(CLOCK_ERROR_S), "--copies-dir", copies, *flags,
    )  # fmt: skip
    assert sha256s(images) == before, "an original was modified, or a file added on the card"
    found = by_name(entries)
    assert "error" in found["LATE.jpg"] and len(found) == 13
    return images, copies, found


@pytest.mark.parametrize("flag", ["--overwrite_EXIF_gps_tag", "--overwrite_all_EXIF_tags"])
def test_geotags_are_written_into_copies_never_the_originals(tmp_path: Path, flag: str) -> None:
    images, copies, found = geotagged_copies(tmp_path, flag)
    written = sorted(p.relative_to(copies).as_posix() for p in copies.rglob("*") if p.is_file())
    assert written == [f"DCIM/{d}/P{i:04d}.jpg" for d, r in (("100CAM", range(6)),
                       ("101CAM", range(6, 12))) for i in r]  # fmt: skip
    for rel in written:
        copy, original = (copies / rel).read_bytes(), (images / rel).read_bytes()
        assert strip_exif(copy) == strip_exif(original), f"{rel}: more than EXIF changed"
        facts = read_exif_facts(copy, rel, default_tz=UTC)
        e = found[Path(rel).name]
        assert facts.lat is not None and facts.lon is not None
        assert (
            abs(facts.lat - e["MAPLatitude"]) < 1e-6 and abs(facts.lon - e["MAPLongitude"]) < 1e-6
        )
        assert facts.capture_time == capture_time(e)  # the GPS time stamp, corrected
        camera = read_exif_facts(original, rel, default_tz=UTC)
        assert camera.lat is None and camera.capture_time is not None
        if flag == "--overwrite_all_EXIF_tags":
            heading = e["MAPCompassHeading"]["TrueHeading"]
            assert facts.heading is not None and abs(facts.heading - heading) < 1e-3
        else:
            assert facts.heading is None  # the direction was not asked for


@pytest.mark.mapillary_tools
@needs_mapillary_tools
def test_mapillary_tools_reads_our_copies_where_our_description_says(tmp_path: Path) -> None:
    _, copies, found = geotagged_copies(tmp_path, "--overwrite_all_EXIF_tags")
    home = tmp_path / "mt-home"
    home.mkdir()
    desc = tmp_path / "mt.json"
    proc = subprocess.run(
        [str(MAPILLARY_TOOLS), "process", str(copies), "--geotag_source", "native",
         "--desc_path", str(desc), "--skip_process_errors", "--num_processes", "0"],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "TZ": "UTC",
             "MAPILLARY_TOOLS_PROMPT_DISABLED": "YES"},
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = by_name(json.loads(desc.read_text()))
    assert len(theirs) == 12
    for name, e in theirs.items():
        mine = found[name]
        assert "error" not in e, e
        assert abs(e["MAPLatitude"] - mine["MAPLatitude"]) < 1e-6, name
        assert abs(e["MAPLongitude"] - mine["MAPLongitude"]) < 1e-6, name
        assert e["MAPCaptureTime"] == mine["MAPCaptureTime"], name
        heading = mine["MAPCompassHeading"]["TrueHeading"]
        assert abs(e["MAPCompassHeading"]["TrueHeading"] - heading) < 1e-3, name


def test_process_and_upload_uploads_clusters_then_nothing_new(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """Two drives 10 minutes apart (two sequences) and a file without GPS, uploaded through
    the daemon's queue; the same command again finds everything already known."""
    images = tmp_path / "card"
    first = synth.write_drive(images, 7, seed=1)
    later = synth.write_drive(
        images, 5, start=T0 + timedelta(minutes=10), prefix="LATER_", seed=2, spacing_m=8.0
    )
    (images / "NOGPS.jpg").write_bytes(
        synth.jpeg_bytes(9, exif=synth.exif_bytes(time=T0, lat=None, lon=None))
    )
    config = tmp_path / "config.toml"
    config.write_text(
        f'[state]\ndir = "{tmp_path / "state"}"\nlog_dir = "{tmp_path / "logs"}"\n'
        '[process]\ntime_zone = "UTC"\n'
        "[upload]\nretry_base_seconds = 0.1\nretry_cap_seconds = 0.5\n",
        encoding="utf-8",
    )
    env = {
        "MAPILLARY_TOKEN": TOKEN,
        "MAPILLARY_UPLOAD_ENDPOINT": sandbox.upload_endpoint,
        "MAPILLARY_GRAPH_API_ENDPOINT": sandbox.graph_endpoint,
        "HOME": str(tmp_path / "home"),
    }
    args = ("process-and-upload", images, "--config", config, "--time-zone", "UTC")
    proc = mapillaryd(*args, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "2 sequence(s) uploaded, 0 failed" in proc.stderr, proc.stderr
    assert "1 no_gps" in proc.stderr
    clusters = sandbox.clusters()
    names = sorted(sorted(i["description"]["MAPFilename"] for i in c["images"]) for c in clusters)
    assert names == sorted([sorted(f.path.name for f in first), sorted(f.path.name for f in later)])
    truth = {f.path.name: f for f in [*first, *later]}
    for c in clusters:
        for i in c["images"]:
            d, f = i["description"], truth[i["description"]["MAPFilename"]]
            assert abs(d["MAPLatitude"] - f.lat) < 1e-6 and abs(d["MAPLongitude"] - f.lon) < 1e-6
    requests = sandbox_stats(sandbox)

    again = mapillaryd(*args, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing new" in again.stderr, again.stderr
    assert len(sandbox.clusters()) == 2
    assert sandbox_stats(sandbox) == requests, "the second run sent requests"


@pytest.mark.parametrize(
    "sources",
    [("--geotag_source", "native", "--geotag_source", "gpx"), ("--geotag_source", "native,gpx")],
    ids=["repeated", "comma-separated"],
)
def test_several_geotag_sources_are_tried_in_order(
    tmp_path: Path, sources: tuple[str, ...]
) -> None:
    """Some images have EXIF GPS but fall outside the track, the others no GPS but are on it:
    ``mapillary_tools process --geotag_source native --geotag_source gpx`` (or
    ``native,gpx``) places all 15 (checked with 0.14.7; with gpx first it does not: an image
    outside the track does not fall through)."""
    on_track = drive(10)
    track = gpx_of(tmp_path / "track.gpx", on_track)
    elsewhere = [
        Truth(f"GPS_{i}.jpg", T0 + timedelta(hours=2, seconds=i), 46.1, 14.6 + i * 1e-4)
        for i in range(5)
    ]
    write_images(tmp_path / "card" / "phone", elsewhere, with_gps=True)
    write_images(tmp_path / "card" / "camera", on_track)
    _, entries = process(
        tmp_path / "card", tmp_path / "desc.json", *sources, "--geotag_source_path", track
    )
    refused = {n: e["error"]["vars"]["reason"] for n, e in by_name(entries).items() if "error" in e}
    assert refused == {}
