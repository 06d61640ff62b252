"""``python -m bench process``: the processing stage, mapillaryd against mapillary_tools.

Both contenders process the same synthetic drive of phone-sized JPEGs into a description file,
each as a subprocess timed from spawn to exit (wall) and charged with its whole process tree's
CPU from ``wait4`` (process-pool workers included):

* ``mapillaryd process DIR --desc_path F --time-zone UTC [--geotag_source gpx …]``
* ``mapillary_tools process DIR --desc_path F --geotag_source native|gpx …
  --skip_process_errors`` (``TZ=UTC``; ``HOME`` and the ``MAPILLARY_*`` folders in the run's
  temporary folder; ``MAPILLARY_TOOLS_PROMPT_DISABLED=YES``).

Two scenarios: ``exif`` (every frame carries its GPS position in EXIF) and ``gpx`` (frames
without GPS, geotagged from a GPX track written from the true positions). Neither command
hashes or uploads anything: that is the processing stage alone (see ``bench/README.md``).

After every run the description file is read back: both contenders must accept the same
number of images, or the bench fails loudly.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import piexif
from PIL import Image

from bench.args import add_run_options, run_in_workdir
from bench.cli import _version
from bench.contenders import (
    MAPILLARY_TOOLS,
    MAPILLARYD,
    base_env,
    mapillaryd_command,
)
from bench.proc import Child
from daemon import synth
from daemon.media import jpeg

#: A 12-megapixel phone frame (4:3), the most common camera a contributor walks with.
DEFAULT_PIXELS = (4032, 3024)
#: Distinct pixel payloads cycled through the drive (every frame still differs by its EXIF).
BASE_IMAGES = 4
JPEG_QUALITY = 80
THUMBNAIL_SIZE = (160, 120)
MAKER_NOTE_BYTES = 24 * 1024
SCENARIOS = ("exif", "gpx")
NOT_MEASURED = (
    "processing stage only: neither command hashes a file (mapillaryd process computes no"
    " SHA-256, mapillary_tools process no MD5: both are done at upload) and neither uploads"
)


class BenchError(Exception):
    """A contender failed, or the two disagree on what they accepted."""


# --- the drive ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drive:
    """One folder of frames and, for the gpx scenario, the track that geotags them."""

    scenario: str
    folder: Path
    gpx: Path | None
    frames: int
    bytes: int


def _base_scan(seed: int, pixels: tuple[int, int]) -> tuple[bytes, bytes]:
    """A phone-sized JPEG without metadata (at 4032×3024, ~2.9 MB of scan data, as much as a
    12 MP phone photo's) and a 160×120 JPEG thumbnail of it."""
    w, h = pixels
    coarse = Image.effect_noise((max(w // 8, 1), max(h // 8, 1)), 60 + 5 * seed)
    coarse = coarse.convert("RGB").resize((w, h), Image.Resampling.BICUBIC)
    fine = Image.effect_noise((w, h), 30).convert("RGB")
    rng = random.Random(seed)
    tint = Image.new("RGB", (w, h), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    image = Image.blend(Image.blend(coarse, fine, 0.35), tint, 0.2)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY)
    thumb = io.BytesIO()
    image.resize(THUMBNAIL_SIZE, Image.Resampling.BILINEAR).save(thumb, "JPEG", quality=75)
    return out.getvalue(), thumb.getvalue()


def phone_exif(
    frame: int,
    t: datetime,
    lat: float | None,
    lon: float | None,
    alt: float,
    heading: float,
    *,
    pixels: tuple[int, int],
    thumbnail: bytes,
) -> bytes:
    """EXIF as a phone writes it: the synthetic drive's tags (:func:`daemon.synth.exif_bytes`)
    plus the camera settings, image size, a maker note and an IFD1 thumbnail."""
    base = synth.exif_bytes(time=t, lat=lat, lon=lon, alt=alt, heading=heading)
    exif = piexif.load(base)
    rng = random.Random(frame)
    exif["0th"].update(
        {
            piexif.ImageIFD.Make: "mapillaryd",
            piexif.ImageIFD.Model: "synthetic phone",
            piexif.ImageIFD.Orientation: 1,
            piexif.ImageIFD.XResolution: (72, 1),
            piexif.ImageIFD.YResolution: (72, 1),
            piexif.ImageIFD.ResolutionUnit: 2,
            piexif.ImageIFD.Software: "17.5.1",
            piexif.ImageIFD.DateTime: t.strftime("%Y:%m:%d %H:%M:%S"),
        }
    )
    exif["Exif"].update(
        {
            piexif.ExifIFD.ExposureTime: (1, 120 + frame % 50),
            piexif.ExifIFD.FNumber: (178, 100),
            piexif.ExifIFD.ISOSpeedRatings: 50 + frame % 200,
            piexif.ExifIFD.DateTimeDigitized: t.strftime("%Y:%m:%d %H:%M:%S"),
            piexif.ExifIFD.ShutterSpeedValue: (6906, 1000),
            piexif.ExifIFD.ApertureValue: (1695, 1000),
            piexif.ExifIFD.BrightnessValue: (rng.randrange(1000, 9000), 1000),
            piexif.ExifIFD.MeteringMode: 5,
            piexif.ExifIFD.Flash: 16,
            piexif.ExifIFD.FocalLength: (686, 100),
            piexif.ExifIFD.ColorSpace: 65535,
            piexif.ExifIFD.PixelXDimension: pixels[0],
            piexif.ExifIFD.PixelYDimension: pixels[1],
            piexif.ExifIFD.FocalLengthIn35mmFilm: 24,
            piexif.ExifIFD.LensMake: "mapillaryd",
            piexif.ExifIFD.LensModel: "synthetic back camera 6.86mm f/1.78",
            piexif.ExifIFD.MakerNote: rng.randbytes(MAKER_NOTE_BYTES),
        }
    )
    exif["1st"] = {
        piexif.ImageIFD.Compression: 6,
        piexif.ImageIFD.XResolution: (72, 1),
        piexif.ImageIFD.YResolution: (72, 1),
        piexif.ImageIFD.ResolutionUnit: 2,
    }
    exif["thumbnail"] = thumbnail
    return bytes(piexif.dump(exif))


def write_drive(
    folder: Path,
    count: int,
    scenario: str,
    pixels: tuple[int, int],
    scans: list[tuple[bytes, bytes]],
) -> Drive:
    """``count`` phone frames along :func:`daemon.synth.drive_points`, with GPS in EXIF
    (``exif``) or without it plus a GPX track of the true positions (``gpx``)."""
    folder.mkdir(parents=True)
    start = datetime(2026, 6, 1, 9, 0, 0, tzinfo=UTC)
    points = list(synth.drive_points(count, start=start))
    total = 0
    for i, (t, lat, lon, alt, heading) in enumerate(points):
        scan, thumb = scans[i % len(scans)]
        gps = scenario == "exif"
        payload = phone_exif(
            i,
            t,
            lat if gps else None,
            lon if gps else None,
            alt,
            heading,
            pixels=pixels,
            thumbnail=thumb,
        )
        data = jpeg.replace_exif_segment(scan, payload)
        (folder / f"IMG_{i:05d}.jpg").write_bytes(data)
        total += len(data)
    gpx = None
    if scenario == "gpx":
        gpx = folder.parent / f"{folder.name}.gpx"
        gpx.write_text(gpx_text(points), encoding="utf-8")
    return Drive(scenario, folder, gpx, count, total)


def gpx_text(points: Sequence[tuple[datetime, float, float, float, float]]) -> str:
    """A one-segment GPX 1.1 track through ``points`` (time, lat, lon, ele, heading)."""
    rows = [
        f'<trkpt lat="{lat:.8f}" lon="{lon:.8f}"><ele>{alt:.2f}</ele>'
        f"<time>{t.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}</time></trkpt>"
        for t, lat, lon, alt, _ in points
    ]
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<gpx version="1.1" creator="mapillaryd bench" xmlns="http://www.topografix.com/GPX/1/1">'
        "\n<trk><name>bench</name><trkseg>\n" + "\n".join(rows) + "\n</trkseg></trk></gpx>\n"
    )


# --- one run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    contender: str
    scenario: str
    frames: int
    wall_s: float
    cpu_user_s: float
    cpu_sys_s: float
    accepted: int
    sequences: int
    refused: dict[str, int]

    @property
    def cpu_s(self) -> float:
        return self.cpu_user_s + self.cpu_sys_s

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "cpu_s": self.cpu_s, "images_per_s": self.frames / self.wall_s}


def _command(
    contender: str, drive: Drive, desc: Path, mt: Path, mapillaryd: Path | None
) -> list[str]:
    if contender == MAPILLARYD:
        argv = [str(mapillaryd)] if mapillaryd is not None else mapillaryd_command()
        argv += ["process", str(drive.folder), "--desc_path", str(desc)]
        argv += ["--time-zone", "UTC"]
    else:
        argv = [str(mt), "process", str(drive.folder), "--desc_path", str(desc)]
        argv += ["--skip_process_errors"]
        if drive.gpx is None:
            argv += ["--geotag_source", "native"]
    if drive.gpx is not None:
        argv += ["--geotag_source", "gpx", "--geotag_source_path", str(drive.gpx)]
    return argv


def run_one(
    contender: str, drive: Drive, work: Path, mt: Path, timeout: float, mapillaryd: Path | None
) -> Run:
    """Process ``drive`` with ``contender`` in a subprocess; read its description file."""
    work.mkdir(parents=True)
    desc = work / "descriptions.json"
    env = base_env(work / "home")
    if contender == MAPILLARY_TOOLS:
        env.update(
            MAPILLARY_TOOLS_PROMPT_DISABLED="YES",
            MAPILLARY_CONFIG_PATH=str(work / "mapillary.ini"),
            MAPILLARY_UPLOAD_HISTORY_PATH=str(work / "history"),
            MAPILLARY_TOOLS_UPLOAD_CACHE_DIR=str(work / "cache"),
        )
    argv = _command(contender, drive, desc, mt, mapillaryd)
    child = Child(argv, env=env, log=work / f"{contender}.log")
    try:
        ended = child.wait(timeout)
    finally:
        if child.exit is None:
            child.stop(timeout=5.0)
    if ended is None:
        raise BenchError(f"{contender} did not finish in {timeout:g} s")
    if ended.code != 0:
        raise BenchError(f"{contender} exited with {ended.code}:\n{child.tail()}")
    accepted, sequences, refused = read_descriptions(contender, desc)
    return Run(
        contender=contender,
        scenario=drive.scenario,
        frames=drive.frames,
        wall_s=ended.ended - child.started,
        cpu_user_s=ended.user_s,
        cpu_sys_s=ended.sys_s,
        accepted=accepted,
        sequences=sequences,
        refused=refused,
    )


def read_descriptions(contender: str, desc: Path) -> tuple[int, int, dict[str, int]]:
    """(accepted images, sequences, refusals per error type) of a description file."""
    try:
        entries = json.loads(desc.read_bytes())
    except (OSError, ValueError) as exc:
        raise BenchError(f"{contender} wrote no readable description file {desc}: {exc}") from exc
    accepted = [e for e in entries if "error" not in e]
    refused: dict[str, int] = {}
    for e in entries:
        if "error" in e:
            kind = str(e["error"].get("type", "?"))
            refused[kind] = refused.get(kind, 0) + 1
    sequences = len({e.get("MAPSequenceUUID") for e in accepted})
    return len(accepted), sequences, dict(sorted(refused.items()))


# --- the table ------------------------------------------------------------------------------


def _median(runs: Sequence[Run], name: str) -> float:
    return float(statistics.median(float(getattr(r, name)) for r in runs))


def summary(runs: Sequence[Run]) -> dict[str, Any]:
    wall = _median(runs, "wall_s")
    return {
        "wall_s": wall,
        "cpu_s": _median(runs, "cpu_s"),
        "cpu_user_s": _median(runs, "cpu_user_s"),
        "cpu_sys_s": _median(runs, "cpu_sys_s"),
        "images_per_s": runs[0].frames / wall,
        "accepted": runs[-1].accepted,
        "sequences": runs[-1].sequences,
        "refused": runs[-1].refused,
    }


def throughput_ratio(d: dict[str, Any], m: dict[str, Any]) -> float:
    """mapillaryd images/s ÷ mapillary_tools images/s: above 1 = mapillaryd faster."""
    return float(d["images_per_s"] / m["images_per_s"])


def render(meta: dict[str, Any], results: dict[str, dict[str, dict[str, Any]]]) -> str:
    repeat = meta["repeat"]
    lines = [
        f"processing stage: mapillaryd process vs mapillary_tools "
        f"{meta['mapillary_tools_version']} process, {meta['frames']} frames, "
        f"median of {repeat} run{'s' if repeat != 1 else ''} each, alternating",
        f"machine: {meta['nproc']} CPUs (nproc), {meta['platform']}; Python {meta['python']}"
        f" (mapillaryd), {meta['mapillary_tools_python']} (mapillary_tools)",
        f"frames: {meta['pixels']} JPEG q{JPEG_QUALITY}, EXIF with a"
        f" {MAKER_NOTE_BYTES // 1024} KiB maker note and a {THUMBNAIL_SIZE[0]}×"
        f"{THUMBNAIL_SIZE[1]} thumbnail; page cache warm, nothing dirty",
        NOT_MEASURED,
    ]
    load = meta.get("loadavg_1min", {})
    if load:
        lines.append(
            f"load average (1 min) at start {load['start']:.2f}, at end {load['end']:.2f}"
            f" (anything above 0 is other processes sharing the {meta['nproc']} CPUs)"
        )
    for scenario, by in results.items():
        drive = meta["drives"][scenario]
        lines += [
            "",
            f"scenario {scenario}: {drive['what']}"
            f" ({drive['bytes'] / 1e6:,.0f} MB, {drive['bytes'] / drive['frames'] / 1e6:.2f} MB"
            " per frame)",
            f"  {'contender':<16} {'wall s':>8} {'CPU s':>8} {'images/s':>9} {'accepted':>9}"
            f" {'sequences':>10}",
        ]
        for name, s in by.items():
            lines.append(
                f"  {name:<16} {s['wall_s']:>8.2f} {s['cpu_s']:>8.2f} {s['images_per_s']:>9.1f}"
                f" {s['accepted']:>9} {s['sequences']:>10}"
            )
        if MAPILLARYD in by and MAPILLARY_TOOLS in by:
            d, m = by[MAPILLARYD], by[MAPILLARY_TOOLS]
            lines.append(
                f"  throughput mapillaryd ÷ mapillary_tools: {throughput_ratio(d, m):.2f}×"
                f"  (goal ≥ 2×; CPU mapillaryd ÷ mapillary_tools {d['cpu_s'] / m['cpu_s']:.2f}×,"
                " below 1 = less CPU)"
            )
    lines += [
        "",
        "wall = spawn to exit; CPU = user+sys of the process tree (wait4: pool workers in);",
        "images/s = frames ÷ median wall, start-up included.",
    ]
    return "\n".join(lines)


# --- the command ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench process",
        description="The processing stage: mapillaryd process against mapillary_tools process.",
    )
    parser.add_argument("--frames", type=int, default=1000, help="frames per drive (1000)")
    parser.add_argument(
        "--scenario",
        choices=SCENARIOS,
        action="append",
        default=None,
        help="exif and/or gpx (default: both)",
    )
    parser.add_argument(
        "--pixels",
        default=f"{DEFAULT_PIXELS[0]}x{DEFAULT_PIXELS[1]}",
        help="frame size WxH (4032x3024)",
    )
    parser.add_argument(
        "--mapillaryd",
        type=Path,
        default=None,
        metavar="PATH",
        help="the mapillaryd executable (default: this virtualenv's), e.g. another build's",
    )
    add_run_options(parser)
    return parser


def _pixels(text: str) -> tuple[int, int] | None:
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit() or int(w) < 16 or int(h) < 16:
        return None
    return int(w), int(h)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    pixels = _pixels(args.pixels)
    if args.frames < 1 or args.repeat < 1 or pixels is None:
        print("bench: --frames and --repeat must be at least 1, --pixels WxH", file=sys.stderr)
        return 2
    return run_in_workdir(
        args,
        "bench",
        "mapillaryd-process-bench-",
        lambda mt, root: _bench(args, pixels, mt, root),
        (BenchError,),
    )


def _bench(args: argparse.Namespace, pixels: tuple[int, int], mt: Path, root: Path) -> int:
    scenarios = tuple(dict.fromkeys(args.scenario or SCENARIOS))
    frames: int = args.frames
    print(f"writing {len(scenarios)} drive(s) of {frames} {pixels[0]}×{pixels[1]} frames …")
    t0 = time.monotonic()
    scans = [_base_scan(seed, pixels) for seed in range(BASE_IMAGES)]
    drives = {s: write_drive(root / f"drive-{s}", frames, s, pixels, scans) for s in scenarios}
    os.sync()  # nothing left to write back while the clock runs
    print(f"  written in {time.monotonic() - t0:.1f} s", flush=True)
    meta = _meta(mt, args, pixels, drives)
    load_start = os.getloadavg()[0]
    results: dict[str, dict[str, dict[str, Any]]] = {}
    runs_json: list[dict[str, Any]] = []
    for scenario, drive in drives.items():
        runs: list[Run] = []
        for i in range(args.repeat):
            order = [MAPILLARYD, MAPILLARY_TOOLS]
            if i % 2:
                order.reverse()
            for name in order:
                _warm(drive)
                work = root / f"{scenario}-run{i + 1}-{name}"
                r = run_one(name, drive, work, mt, args.timeout, args.mapillaryd)
                runs.append(r)
                runs_json.append(r.as_json())
                print(
                    f"run {i + 1}/{args.repeat} {scenario:<4} {name:<15} wall {r.wall_s:7.2f} s"
                    f"  CPU {r.cpu_s:7.2f} s  accepted {r.accepted}/{frames}"
                    f" in {r.sequences} sequence(s)",
                    flush=True,
                )
                if args.keep is None:
                    shutil.rmtree(work, ignore_errors=True)
        _agree(scenario, runs)
        results[scenario] = {
            name: summary([r for r in runs if r.contender == name])
            for name in (MAPILLARYD, MAPILLARY_TOOLS)
        }
    meta["loadavg_1min"] = {"start": load_start, "end": os.getloadavg()[0]}
    print()
    print(render(meta, results))
    if args.json is not None:
        doc = {**meta, "scenarios": results, "runs": runs_json}
        doc["throughput_ratio_mapillaryd_over_mapillary_tools"] = {
            s: throughput_ratio(by[MAPILLARYD], by[MAPILLARY_TOOLS]) for s, by in results.items()
        }
        doc["ratio_note"] = "images/s mapillaryd ÷ mapillary_tools: above 1 = mapillaryd faster"
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(f"\nfigures written to {args.json}")
    return 0


def _agree(scenario: str, runs: Sequence[Run]) -> None:
    """Every run of both contenders accepted the same number of images (and some)."""
    counts = {(r.contender, r.accepted) for r in runs}
    accepted = {n for _, n in counts}
    if len(accepted) != 1 or 0 in accepted:
        detail = ", ".join(f"{c} accepted {n}" for c, n in sorted(counts))
        raise BenchError(f"scenario {scenario}: the contenders disagree: {detail}")


def _warm(drive: Drive) -> None:
    """Read every file once so both contenders start from the same warm page cache."""
    for path in drive.folder.iterdir():
        with path.open("rb") as f:
            while f.read(1 << 20):
                pass


def _meta(
    mt: Path, args: argparse.Namespace, pixels: tuple[int, int], drives: dict[str, Drive]
) -> dict[str, Any]:
    what = {
        "exif": "GPS position in every frame's EXIF (--geotag_source native)",
        "gpx": "no GPS in EXIF, geotagged from a GPX track of the true positions",
    }
    return {
        "frames": args.frames,
        "repeat": args.repeat,
        "pixels": f"{pixels[0]}×{pixels[1]}",
        "nproc": len(os.sched_getaffinity(0)),
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "mapillary_tools_version": _version([str(mt), "--version"], "mapillary_tools version "),
        "mapillary_tools_python": _version([str(mt.parent / "python"), "--version"], "Python "),
        "not_measured": NOT_MEASURED,
        "drives": {
            s: {"what": what[s], "bytes": d.bytes, "frames": d.frames} for s, d in drives.items()
        },
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
