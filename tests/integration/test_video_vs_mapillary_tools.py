"""Video GPS side by side with the real mapillary_tools 0.14.7 parsers (run in ``.venv-mt``).

A helper script (``MT_SCRIPT``) imports mapillary_tools' own readers —
``gpmf.gpmf_parser.extract_gopro_info`` + ``gpmf.gpmf_gps_filter.remove_noisy_points``,
``camm.camm_parser``, ``blackvue_parser.extract_blackvue_info``, the MP4 sample parser and the
``native`` video extractor — and prints what they find as JSON; the tests compare that with
:mod:`daemon.media.gpmf` / :mod:`~daemon.media.camm` / :mod:`~daemon.media.blackvue` /
:mod:`~daemon.media.mp4`: point count, movie times (1e-9 s), latitude/longitude (1e-6°, in
practice equal), and the other fields each side has.

What is compared:

* **GoPro MAX** (``gpmfparser__max-heromode.mp4``): the 191 points before and after the
  filters, GPS times, fix, DOP, speed; the model.
* **Raw GPMF payloads** (``gpmf_raw/*.raw``): each top-level ``DEVC`` is taken as the payload of
  one 1.001 s sample (as in an MP4), on both sides; raw and filtered points.
* **Karma** (``gpmfparser__karma.mp4``, HERO5 on a Karma drone): mapillary_tools finds **no
  point at all** — not because a filter removes them: the camera's own ``DEVC`` carries no
  GPS stream, and the GPS is in the drone's ``DEVC`` as ``GPRI`` (the drone's GPS receiver:
  time, lat, lon, alt, accuracies, speed, course, fix, satellites), a key its parser does not
  know (it reads GPS5/GPS9 only). Its native extractor stops with ``MapillaryGPXEmptyError``
  ("Empty GPS data found") and the video is not uploaded. **We read GPRI by default**: it is a
  real 3D fix (fix 3, 20 satellites) of the aircraft carrying the camera, it describes itself
  (TYPE/SCAL/UNIT in the stream), and its SYST clock puts the first fix within a second of the
  camera's ``mvhd`` time. The test shows (1) with ``karma_gpri=False`` we agree with
  mapillary_tools exactly (no point, ``no_video_gps``); (2) our 47 GPRI points equal the GPRI
  rows decoded from mapillary_tools' own KLV tree, timed the way it times GPS5; (3)
  mapillary_tools' own ``remove_noisy_points`` keeps all 47 of them, as our filters do.
* **CAMM**: points encoded by our encoder, parsed by mapillary_tools' CAMM sample parser; and
  the CAMM MP4 that mapillary_tools itself builds for upload from max-heromode.mp4
  (``VideoUploader.build_camm_stream``) read by our CAMM reader and by its own.
* **BlackVue**: no licensed real BlackVue file exists in the corpus, so files are BUILT from
  the format as documented and as mapillary_tools parses it (``free``/``gps `` NMEA with
  ``[ms]`` stamps, ``free``/``cprt``), then read by both. One difference on purpose: our RMC
  points carry the altitude of the GGA of the same stamp (mapillary_tools leaves it None).
* **Sample tables**: every track of every corpus video, sample by sample (offset, size, time,
  duration, sync, description).
* **Truncated copies** of max-heromode.mp4: ours ``truncated_mp4``; mapillary_tools' outcome is
  recorded (``MapillaryInvalidVideoError`` without moov, but "No GPS data found" when the cut
  falls inside ``moov``).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from daemon.errors import CorruptMediaError, ItemError
from daemon.media import blackvue, camm, gpmf, mp4
from daemon.media.nmea import checksum, gga_sentence, rmc_sentence
from daemon.media.video import VideoOptions, read_video_track
from daemon.synth import drive_points
from tests.unit.test_mp4 import TrackSpec, box, make_mp4

REPO = Path(__file__).resolve().parents[2]
MT_PYTHON = REPO / ".venv-mt" / "bin" / "python"
VIDEO = REPO.parent / "shared" / "corpus" / "video"
RAW = VIDEO / "gpmf_raw"
MAX = VIDEO / "gpmfparser__max-heromode.mp4"
KARMA = VIDEO / "gpmfparser__karma.mp4"
RUN_TIMEOUT_S = 300
DEG = 1e-6  # latitude/longitude tolerance, degrees
SECONDS = 1e-9  # movie time tolerance

pytestmark = [
    pytest.mark.mapillary_tools,
    pytest.mark.skipif(not MT_PYTHON.exists(), reason=f"no mapillary_tools venv at {MT_PYTHON}"),
    pytest.mark.skipif(not VIDEO.is_dir(), reason=f"no video corpus at {VIDEO}"),
]

MT_SCRIPT = r'''
import json, shutil, struct, sys, types
from pathlib import Path
from mapillary_tools import blackvue_parser, telemetry
from mapillary_tools.camm import camm_parser
from mapillary_tools.geotag.video_extractors.native import NativeVideoExtractor
from mapillary_tools.gpmf import gpmf_gps_filter, gpmf_parser
from mapillary_tools.mp4.mp4_sample_parser import MovieBoxParser
from mapillary_tools.uploader import VideoUploader


def gps(p):
    if hasattr(p, "epoch_time"):  # telemetry.GPSPoint
        epoch, fix = p.epoch_time, p.fix.value if p.fix is not None else None
    else:  # telemetry.CAMMGPSPoint or a plain geo.Point
        epoch, fix = getattr(p, "time_gps_epoch", None), getattr(p, "gps_fix_type", None)
    return {
        "time": p.time, "lat": p.lat, "lon": p.lon, "alt": p.alt, "epoch": epoch, "fix": fix,
        "precision": getattr(p, "precision", None), "speed": getattr(p, "ground_speed", None),
    }


def native(path):
    try:
        md = NativeVideoExtractor(Path(path)).extract()
        return {"points": len(md.points), "filetype": md.filetype.value,
                "model": md.model, "make": md.make}
    except Exception as exc:
        return {"error": type(exc).__name__, "message": str(exc)}


def gopro(job):
    with open(job["path"], "rb") as fp:
        info = gpmf_parser.extract_gopro_info(fp)
    raw = info.gps if info else None
    filtered = list(gpmf_gps_filter.remove_noisy_points(raw)) if raw else []
    return {
        "raw": None if raw is None else [gps(p) for p in raw],
        "filtered": [gps(p) for p in filtered],
        "model": info.model if info else None,
        "native": native(job["path"]),
    }


def gopro_raw(job):
    data = open(job["path"], "rb").read()
    devices = [k for k in gpmf_parser.GPMFSampleData.parse(data) if k["key"] == b"DEVC"]
    by_dvid = {}
    duration = job["duration"]
    for index, device in enumerate(devices):
        dvid = gpmf_parser._find_first_device_id(device["data"])
        points = gpmf_parser._find_first_gps_stream(device["data"])
        if points:
            step = duration / len(points)
            for i, p in enumerate(points):
                p.time = index * duration + step * i
            by_dvid.setdefault(dvid, []).extend(points)
    raw = list(by_dvid.values())[0] if by_dvid else []
    gpmf_parser._backfill_gps_timestamps(raw)
    gpmf_parser._backfill_gps_timestamps(reversed(raw))
    filtered = list(gpmf_gps_filter.remove_noisy_points(raw)) if raw else []
    return {"raw": [gps(p) for p in raw], "filtered": [gps(p) for p in filtered]}


def karma_gpri(job):
    """GPRI rows from mapillary_tools' own KLV tree, timed like its GPS5, filtered by it."""
    fp = open(job["path"], "rb")
    moov = MovieBoxParser.parse_stream(fp)
    points = []
    for track in moov.extract_tracks():
        if not gpmf_parser._contains_gpmd_description(track):
            continue
        samples = gpmf_parser._filter_gpmd_samples(track)
        for sample, data in gpmf_parser._iterate_read_sample_data(fp, samples):
            for device in gpmf_parser.GPMFSampleData.parse(data):
                for stream in device["data"]:
                    if stream["key"] != b"STRM":
                        continue
                    index = {k["key"]: k for k in stream["data"]}
                    if b"GPRI" not in index:
                        continue
                    types = b"".join(index[b"TYPE"]["data"]).decode()
                    scal = [s[0] for s in index[b"SCAL"]["data"]]
                    fmt = ">" + types.replace("J", "Q").replace("l", "i").replace("S", "H")
                    rows = [struct.unpack(fmt, raw) for raw in index[b"GPRI"]["data"]]
                    step = sample.exact_timedelta / len(rows) if rows else 0
                    for i, row in enumerate(rows):
                        v = [a / b for a, b in zip(row, scal)]
                        points.append(telemetry.GPSPoint(
                            time=sample.exact_time + step * i, lat=v[1], lon=v[2], alt=v[3],
                            angle=None, epoch_time=None, fix=telemetry.GPSFix(int(v[8])),
                            precision=None, ground_speed=v[6]))
        break
    kept = gpmf_gps_filter.remove_noisy_points(points)
    return {"raw": [gps(p) for p in points], "filtered": [gps(p) for p in kept]}


def camm_samples(job):
    out = []
    for index, hexdata in enumerate(job["samples"]):
        box = camm_parser.CAMMSampleData.parse(bytes.fromhex(hexdata))
        klass = camm_parser.SAMPLE_ENTRY_CLS_BY_CAMM_TYPE[camm_parser.CAMMType(box.type)]
        stub = types.SimpleNamespace(exact_time=float(index))
        out.append({"type": box.type, **gps(klass.deserialize(stub, box.data))})
    return out


def camm_file(job):
    with open(job["path"], "rb") as fp:
        info = camm_parser.extract_camm_info(fp)
    if info is None:
        return None
    return {
        "gps": [gps(p) for p in info.gps or []],
        "mini_gps": [gps(p) for p in info.mini_gps or []],
        "make": info.make, "model": info.model, "native": native(job["path"]),
    }


def build_camm(job):
    md = NativeVideoExtractor(Path(job["path"])).extract()
    with VideoUploader.build_camm_stream(md) as stream, open(job["out"], "wb") as out:
        shutil.copyfileobj(stream, out)
    return {"points": len(md.points)}


def blackvue_file(job):
    with open(job["path"], "rb") as fp:
        info = blackvue_parser.extract_blackvue_info(fp)
    if info is None:
        return None
    return {"gps": [gps(p) for p in info.gps or []], "model": info.model,
            "native": native(job["path"])}


def samples(job):
    out = []
    with open(job["path"], "rb") as fp:
        moov = MovieBoxParser.parse_stream(fp)
        for track in moov.extract_tracks():
            try:
                out.append([[s.raw_sample.offset, s.raw_sample.size, s.exact_time,
                             s.exact_timedelta, s.raw_sample.is_sync, s.raw_sample.description_idx]
                            for s in track.extract_samples()])
            except Exception as exc:
                out.append(type(exc).__name__)
    return out


def outcome(job):
    return native(job["path"])


MODES = {f.__name__: f for f in (gopro, gopro_raw, karma_gpri, camm_samples, camm_file,
                                 build_camm, blackvue_file, samples, outcome)}
jobs = json.load(sys.stdin)
print(json.dumps([MODES[job["mode"]](job) for job in jobs]))
'''


def run_mt(jobs: list[dict[str, Any]]) -> list[Any]:
    """Run mapillary_tools' readers on ``jobs``; one result per job."""
    proc = subprocess.run(
        [str(MT_PYTHON), "-c", MT_SCRIPT],
        input=json.dumps(jobs),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results: list[Any] = json.loads(proc.stdout)
    return results


RAW_FILES = sorted(RAW.glob("*.raw")) if RAW.is_dir() else []
CORPUS_FILES = sorted(p for p in VIDEO.iterdir() if p.is_file()) if VIDEO.is_dir() else []
PAYLOAD_S = 1.001


@cache
def corpus_results() -> dict[str, Any]:
    """mapillary_tools' reading of the corpus, run once for the whole module."""
    jobs: list[dict[str, Any]] = [
        {"mode": "gopro", "path": str(MAX)},
        {"mode": "gopro", "path": str(KARMA)},
        {"mode": "karma_gpri", "path": str(KARMA)},
    ]
    jobs += [{"mode": "gopro_raw", "path": str(p), "duration": PAYLOAD_S} for p in RAW_FILES]
    jobs += [{"mode": "samples", "path": str(p)} for p in CORPUS_FILES]
    results = run_mt(jobs)
    keys = ["max", "karma", "karma_gpri"]
    keys += [f"raw:{p.name}" for p in RAW_FILES]
    keys += [f"samples:{p.name}" for p in CORPUS_FILES]
    return dict(zip(keys, results, strict=True))


def assert_same_points(
    ours: Sequence[dict[str, Any]], theirs: Sequence[dict[str, Any]], fields: Sequence[str] = ()
) -> None:
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert abs(a["time"] - b["time"]) <= SECONDS, (i, a, b)
        assert abs(a["lat"] - b["lat"]) <= DEG and abs(a["lon"] - b["lon"]) <= DEG, (i, a, b)
        for name in fields:
            if b[name] is None or a[name] is None:
                assert a[name] == b[name], (i, name, a, b)
            else:
                assert a[name] == pytest.approx(b[name], abs=1e-6), (i, name, a, b)


def gopro_dicts(points: Sequence[gpmf.GoProPoint]) -> list[dict[str, Any]]:
    return [
        {
            "time": p.time_s,
            "lat": p.lat,
            "lon": p.lon,
            "alt": p.alt,
            "epoch": p.epoch_s,
            "fix": p.fix,
            "precision": p.dop100,
            "speed": p.speed,
        }
        for p in points
    ]


# --- GoPro ---------------------------------------------------------------------------------


def test_gopro_max_matches() -> None:
    theirs = corpus_results()["max"]
    with open(MAX, "rb") as f:
        ours = gpmf.gopro_track(f, str(MAX))
    assert ours is not None and ours.timed is not None
    fields = ("alt", "epoch", "fix", "precision", "speed")
    assert_same_points(gopro_dicts(ours.raw_points), theirs["raw"], fields)
    kept = [p for p in ours.raw_points if any(p.time_s == q.time_s for q in ours.points)]
    assert len(theirs["filtered"]) == 191 == len(ours.points)
    assert_same_points(gopro_dicts(kept), theirs["filtered"], fields)
    assert theirs["native"] == {
        "points": 191,
        "filetype": "gopro",
        "model": "GoPro Max",
        "make": "GoPro",
    }
    video = read_video_track(MAX)
    assert (video.make, video.model, len(video.points)) == ("GoPro", "GoPro Max", 191)
    print(
        f"max-heromode: {len(ours.raw_points)} raw and 191 kept points identical to mapillary_tools"
    )


@pytest.mark.parametrize("path", RAW_FILES, ids=[p.name for p in RAW_FILES])
def test_raw_gpmf_payloads_match(path: Path) -> None:
    theirs = corpus_results()[f"raw:{path.name}"]
    items = gpmf.parse_gpmf(path.read_bytes(), path.name)
    payloads = [((item,), i * PAYLOAD_S, PAYLOAD_S) for i, item in enumerate(items)]
    gps = gpmf.collect_gps(payloads)
    fields = ("alt", "epoch", "fix", "precision", "speed")
    assert_same_points(gopro_dicts(gps.points), theirs["raw"], fields)
    kept, _notes = gpmf.filter_points(gps.points)
    assert_same_points(gopro_dicts(kept), theirs["filtered"], fields)
    print(f"{path.name}: {len(gps.points)} raw, {len(kept)} kept, identical to mapillary_tools")


def test_karma() -> None:
    results = corpus_results()
    theirs, gpri = results["karma"], results["karma_gpri"]
    # mapillary_tools: a GoPro (device found) without one GPS point; its extractor gives up
    assert theirs["raw"] == [] and theirs["filtered"] == []
    assert theirs["model"] == "GoPro Karma v1.0"
    assert theirs["native"]["error"] == "MapillaryGPXEmptyError"
    # (1) ours without GPRI: the same verdict
    strict = VideoOptions(gopro=gpmf.GoProOptions(karma_gpri=False))
    with pytest.raises(ItemError) as err:
        read_video_track(KARMA, strict)
    assert err.value.reason == "no_video_gps"
    # (2) ours by default: the GPRI rows as mapillary_tools' KLV tree holds them, same timing
    with open(KARMA, "rb") as f:
        ours = gpmf.gopro_track(f, str(KARMA))
    assert ours is not None and ours.timed is not None
    assert_same_points(gopro_dicts(ours.raw_points), gpri["raw"], ("alt", "fix", "speed"))
    # (3) mapillary_tools' own filters would keep every one of them, as ours do
    assert len(gpri["filtered"]) == len(gpri["raw"]) == len(ours.points) == 47
    video = read_video_track(KARMA)
    assert video.source == "gopro" and video.clock == "gps"
    print(
        "karma: mapillary_tools reads 0 points (no GPS5/GPS9; MapillaryGPXEmptyError); "
        f"we read the drone's 47 GPRI fixes, {video.start_time.isoformat()} UTC by the drone's SYST"
    )


# --- CAMM ----------------------------------------------------------------------------------


def test_camm_samples_from_our_encoder_parse_in_mapillary_tools() -> None:
    with open(MAX, "rb") as f:
        track = gpmf.gopro_track(f, str(MAX))
    assert track is not None
    points = list(track.points[:40])
    stripped = [
        mp4.TimedPoint(p.time_s, p.lat, p.lon, p.alt if i % 2 else None)
        for i, p in enumerate(points[:10])
    ]
    samples = [camm.encode_point(p) for p in points] + [camm.encode_point(p) for p in stripped]
    theirs = run_mt([{"mode": "camm_samples", "samples": [s.hex() for s in samples]}])[0]
    assert [t["type"] for t in theirs] == [6] * 40 + [5] * 10
    for sample, mine, their in zip(samples, [*points, *stripped], theirs, strict=True):
        packet = camm.parse_camm_sample(sample)
        assert packet is not None
        gps = camm.gps_from_packet(packet)
        assert gps is not None
        assert (gps.lat, gps.lon) == (their["lat"], their["lon"]) == (mine.lat, mine.lon)
        assert gps.alt == their["alt"]
        if packet.type == 6:
            assert gps.epoch_s == their["epoch"] == mine.epoch_s
            assert gps.fix == their["fix"] == 3
        else:
            assert gps.alt == (-1.0 if mine.alt is None else mine.alt)


def test_camm_mp4_built_by_mapillary_tools(tmp_path: Path) -> None:
    """The CAMM MP4 mapillary_tools uploads for max-heromode.mp4, read by both readers."""
    built = tmp_path / "max-camm.mp4"
    run_mt([{"mode": "build_camm", "path": str(MAX), "out": str(built)}])
    theirs = run_mt([{"mode": "camm_file", "path": str(built)}])[0]
    # extract_camm_info files every point under mini_gps (CAMMGPSPoint is a geo.Point and
    # that isinstance test comes first) and its extractor takes ``gps or mini_gps``: the same
    their_points = theirs["gps"] or theirs["mini_gps"]
    assert theirs["native"]["points"] == len(their_points) == 191
    assert {p["fix"] for p in their_points} == {3}  # type-6 packets (with GPS time)
    with open(built, "rb") as f:
        ours = camm.camm_track(f, str(built))
    assert ours is not None and ours.timed is not None and ours.kind == 6
    mine = [
        {
            "time": p.time_s,
            "lat": p.lat,
            "lon": p.lon,
            "alt": g.alt,
            "epoch": g.epoch_s,
            "fix": g.fix,
        }
        for p, g in zip(ours.points, ours.gps, strict=True)
    ]
    assert_same_points(mine, their_points, ("alt", "epoch", "fix"))
    assert (ours.make, ours.model) == (theirs["make"], theirs["model"]) == ("GoPro", "GoPro Max")
    # and against the GoPro track it was built from (the builder truncates every time delta
    # to its 1/90000 s timescale, so times drift by at most a tick per sample)
    source = read_video_track(MAX)
    video = read_video_track(built)
    assert video.source == "camm" and len(video.points) == len(source.points) == 191
    for a, b in zip(video.points, source.points, strict=True):
        assert abs(a.time_s - b.time_s) <= 191 / 90000
        assert abs(a.lat - b.lat) <= DEG and abs(a.lon - b.lon) <= DEG
    assert video.start_time == source.start_time


# --- BlackVue ------------------------------------------------------------------------------

START = datetime(2024, 5, 1, 23, 59, 50, tzinfo=UTC)  # crosses midnight UTC


def blackvue_file(
    path: Path,
    *,
    kinds: Sequence[str],
    talker: str = "GP",
    clock_offset_h: float = 9.0,
    count: int = 30,
    cprt_apart: bool = False,
) -> None:
    """A BlackVue-layout MP4 built from the documented format (no licensed real sample exists):
    ``free`` holding ``gps `` ([camera ms]$NMEA lines, camera clock in local time) and
    ``cprt`` — in the same ``free`` box, or with ``cprt_apart`` in a second one."""
    lines = []
    for i, (when, lat, lon, alt, _h) in enumerate(
        drive_points(count, start=START, spacing_m=12.0, seed=3)
    ):
        ms = round((when + timedelta(hours=clock_offset_h)).timestamp() * 1000) + 20 + (i * 7) % 30
        if "RMC" in kinds:
            lines.append(
                f"[{ms}]"
                + rmc_sentence(when, lat, lon, speed_knots=23.0, course=10.0, talker=talker)
            )
        if "GGA" in kinds:
            lines.append(f"[{ms}]" + gga_sentence(when, lat, lon, alt, talker=talker))
        if "GLL" in kinds:
            dm_lat = f"{int(lat):02d}{(lat - int(lat)) * 60:07.4f}"
            dm_lon = f"{int(lon):03d}{(lon - int(lon)) * 60:07.4f}"
            body = f"{talker}GLL,{dm_lat},N,{dm_lon},E,{when.strftime('%H%M%S')}.00,A,A"
            lines.append(f"[{ms}]${body}*{checksum(body)}")
        body = "GPVTG,10.0,T,,M,23.0,N,42.6,K,A"
        lines.append(f"[{ms}]${body}*{checksum(body)}")
    gps = ("\r\n".join(lines) + "\r\n").encode()
    cprt = b"Pittasoft Co., Ltd.;DR900S-1CH;1.008;English;1;D90SS1HAE00661;T69;"
    if cprt_apart:
        free = box(b"free", box(b"gps ", gps)) + box(b"free", box(b"cprt", cprt))
    else:
        free = box(b"free", box(b"gps ", gps) + box(b"cprt", cprt))
    video = TrackSpec(samples=[b"\x00" * 100] * 5, durations=[1000] * 5)
    path.write_bytes(make_mp4([video], top_extra=free))


@pytest.mark.parametrize(
    ("kinds", "talker", "cprt_apart"),
    [
        (("RMC", "GGA"), "GP", True),
        (("RMC", "GGA"), "GP", False),
        (("GGA",), "GN", True),
        (("GLL",), "GP", True),
        (("RMC",), "GN", False),
    ],
)
def test_blackvue_built_files_match(
    kinds: Sequence[str], talker: str, cprt_apart: bool, tmp_path: Path
) -> None:
    path = tmp_path / "bv.mp4"
    blackvue_file(path, kinds=kinds, talker=talker, cprt_apart=cprt_apart)
    theirs = run_mt([{"mode": "blackvue_file", "path": str(path)}])[0]
    with open(path, "rb") as f:
        ours = blackvue.blackvue_track(f, str(path))
    assert ours is not None and ours.timed is not None
    mine = [
        {"time": p.time_s, "lat": p.lat, "lon": p.lon, "epoch": p.epoch_s, "alt": p.alt}
        for p in ours.points
    ]
    assert_same_points(mine, theirs["gps"], ("epoch",))
    assert ours.model == "DR900S-1CH"
    # mapillary_tools looks for cprt from where it stopped reading gps: it finds the model
    # only when cprt sits in a later free box, and reports "" when both share one
    assert theirs["model"] == ("DR900S-1CH" if cprt_apart else "")
    assert theirs["native"]["points"] == len(ours.points) == 30
    differences = 0
    for a, b in zip(mine, theirs["gps"], strict=True):
        if b["alt"] is None and a["alt"] is not None:
            differences += 1  # our RMC point took the GGA altitude of the same stamp
        else:
            assert a["alt"] == pytest.approx(b["alt"]) if b["alt"] is not None else a["alt"] is None
    assert differences == (30 if tuple(kinds) == ("RMC", "GGA") else 0)
    assert ours.timed.start_time == START  # the local camera clock corrected by the NMEA time


# --- sample tables and truncation ----------------------------------------------------------


@pytest.mark.parametrize("path", CORPUS_FILES, ids=[p.name for p in CORPUS_FILES])
def test_sample_tables_match(path: Path) -> None:
    theirs = corpus_results()[f"samples:{path.name}"]
    with open(path, "rb") as f:
        info = mp4.probe(f, path.name)
        assert len(info.tracks) == len(theirs)
        for track, their in zip(info.tracks, theirs, strict=True):
            try:
                ours: Any = [
                    [s.offset, s.size, s.time_s, s.duration_s, s.is_sync, s.description]
                    for s in mp4.iter_samples(f, path.name, track)
                ]
            except CorruptMediaError as exc:
                # ExifTool's QuickTime.mov has no chunk offsets: mapillary_tools crashes
                # with an IndexError there, we name the problem
                assert their == "IndexError" and "place only 0" in str(exc)
                continue
            assert ours == their


@pytest.mark.parametrize(
    ("cut", "theirs"),
    [
        (1_000, "MapillaryInvalidVideoError"),
        (3_638_610, "MapillaryInvalidVideoError"),
        (3_650_000, "MapillaryVideoGPSNotFoundError"),
    ],
)
def test_truncated_copies(cut: int, theirs: str, tmp_path: Path) -> None:
    path = tmp_path / "cut.mp4"
    path.write_bytes(MAX.read_bytes()[:cut])
    with pytest.raises(CorruptMediaError) as err:
        read_video_track(path)
    assert err.value.reason == "truncated_mp4"
    outcome = run_mt([{"mode": "outcome", "path": str(path)}])[0]
    assert outcome["error"] == theirs
    print(
        f"cut at {cut}: mapillary_tools {outcome['error']} ({outcome['message']}); ours {err.value}"
    )


def test_video_start_matches_gps_clock() -> None:
    """Sanity of the anchoring: max-heromode's first GPSU is 2019-11-18 23:45:14 UTC."""
    video = read_video_track(MAX)
    assert video.start_time == datetime(2019, 11, 18, 23, 45, 14, tzinfo=UTC)
    assert video.track.start == video.start_time
    assert video.timed.movie_time(video.track.end) == pytest.approx(10.4897)
