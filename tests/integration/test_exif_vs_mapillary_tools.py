"""Parity with the real mapillary_tools 0.14.7 (its own virtualenv, ``.venv-mt``).

The reference side runs in a subprocess (``.venv-mt/bin/python``, ``TZ=UTC`` so that its
reading of naive EXIF times in the host zone matches our ``default_tz=UTC``) and prints JSON;
this side compares. Covered: EXIF reading on every corpus JPEG and a synthetic drive,
distances and bearings, the description JSON (also as written into EXIF), and sequence cutting.

Every difference found is printed as a table and must be on an explicit allow-list with its
justification; a difference that disappears fails too, so the list stays true.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from daemon.describe import exif_description, format_capture_time, image_description
from daemon.errors import ItemError
from daemon.geo.distance import bearing_deg, distance_m
from daemon.geo.sequence import Shot, cut_sequences, derive_headings
from daemon.media.exif import read_exif_facts, read_image_metadata, with_description
from daemon.media.jpeg import exif_tiff
from daemon.synth import destination, write_drive

REPO = Path(__file__).resolve().parents[2]
MT_PYTHON = REPO / ".venv-mt" / "bin" / "python"
CORPUS = REPO.parent / "shared" / "corpus" / "jpeg"

pytestmark = [
    pytest.mark.mapillary_tools,
    pytest.mark.skipif(not MT_PYTHON.exists(), reason=f"no mapillary_tools venv at {MT_PYTHON}"),
]

# The reference side. Commands arrive as JSON on stdin; results leave as JSON on stdout.
MT_SCRIPT = r"""
import datetime, json, os, sys
from pathlib import Path

def exif(paths):
    from mapillary_tools import exif_read
    out = {}
    for path in paths:
        with open(path, "rb") as fp:
            e = exif_read.ExifRead(fp)
            t = e.extract_capture_time()
            lonlat = e.extract_lon_lat()
            out[path] = {
                # naive times are local (TZ=UTC here), as geo.as_unix_time reads them
                "time": None if t is None else t.timestamp(),
                "lat": None if lonlat is None else lonlat[1],
                "lon": None if lonlat is None else lonlat[0],
                "alt": e.extract_altitude(),
                "heading": e.extract_direction(),
                "make": e.extract_make(),
                "model": e.extract_model(),
            }
    return out

def geo(pairs):
    from mapillary_tools import geo
    return [[geo.gps_distance((a, b), (c, d)), geo.compute_bearing((a, b), (c, d))]
            for a, b, c, d in pairs]

def image(m):
    from mapillary_tools import types
    return types.ImageMetadata(
        filename=Path(m["filename"]), md5sum=m.get("md5sum"), filesize=m["filesize"],
        time=m["time"], lat=m["lat"], lon=m["lon"], alt=m.get("alt"), angle=m.get("heading"),
        width=m.get("width"), height=m.get("height"), MAPDeviceMake=m.get("make"),
        MAPDeviceModel=m.get("model"), MAPOrientation=m.get("orientation"),
        MAPCameraUUID=m.get("camera_uuid"), MAPSequenceUUID=m.get("sequence"),
        MAPFilename=Path(m["filename"]).name,
    )

def describe(metas):
    from mapillary_tools.serializer.description import DescriptionJSONSerializer, desc_file_to_exif
    from mapillary_tools.exif_write import ExifEdit
    out = []
    for m in metas:
        desc = DescriptionJSONSerializer.as_desc(image(m))
        edit = ExifEdit(Path(m["filename"]))
        edit.add_image_description(desc_file_to_exif(desc))
        written = ExifEdit(edit.dump_image_bytes())._ef["0th"][270].decode()
        out.append({"desc": desc, "exif": desc_file_to_exif(desc), "written": written})
    return out

def sequences(metas):
    from mapillary_tools import process_sequence_properties, types
    from mapillary_tools.serializer.description import DescriptionJSONSerializer
    results = process_sequence_properties.process_sequence_properties([image(m) for m in metas])
    out = []
    for r in results:
        if isinstance(r, types.ErrorMetadata):
            out.append({"filename": str(r.filename), "error": type(r.error).__name__})
        else:
            d = DescriptionJSONSerializer.as_desc(r)
            out.append({"filename": str(r.filename), "sequence": r.MAPSequenceUUID,
                        "time": d["MAPCaptureTime"], "heading": r.angle})
    return out

command = json.load(sys.stdin)
print(json.dumps(globals()[command["do"]](command["arg"])))
"""


def mapillary_tools(do: str, arg: Any, env: dict[str, str] | None = None) -> Any:
    result = subprocess.run(
        [str(MT_PYTHON), "-c", MT_SCRIPT],
        input=json.dumps({"do": do, "arg": arg}),
        capture_output=True,
        text=True,
        env={**os.environ, "TZ": "UTC", **(env or {})},
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def print_table(title: str, rows: list[tuple[str, ...]]) -> None:
    print(f"\n{title}", file=sys.stderr)
    if not rows:
        print("  (no differences)", file=sys.stderr)
    for row in rows:
        print("  " + " | ".join(row), file=sys.stderr)


# --- EXIF reading -------------------------------------------------------------------------------

#: (file, field) → why we differ from mapillary_tools on purpose.
ALLOWED_EXIF_DIFFERENCES = {
    ("mapillary__adobe_coords.jpg", "alt"): (
        "XMP exif:GPSAltitude is a rational string '136169/100' (as the XMP spec says); "
        "mapillary_tools only tries float() and loses it, we read 1361.69 m"
    ),
    ("exifsamples__no_exif.jpg", "time"): (
        "the EXIF segment comes after a 26 kB XMP segment; exifread only searches the first "
        "~4 kB of the file for it (exifread/core/jpeg.py), we walk every segment and read "
        "its DateTime"
    ),
}


@dataclass(frozen=True)
class Ours:
    time: float | None
    lat: float | None
    lon: float | None
    alt: float | None
    heading: float | None
    make: str | None
    model: str | None


def ours(path: Path) -> Ours | None:
    """Our reading, or None when we reject the file outright as not a complete JPEG."""
    try:
        f = read_exif_facts(path.read_bytes(), path.name, default_tz=UTC)
    except ItemError:
        return None
    t = None if f.capture_time is None else f.capture_time.timestamp()
    return Ours(t, f.lat, f.lon, f.alt, f.heading, f.make, f.model)


def _differs(field: str, mine: Any, theirs: Any) -> bool:
    if mine is None or theirs is None:
        return mine is not theirs and (mine, theirs) != (None, "")
    if field == "time":
        return int(mine * 1000) != int(theirs * 1000)  # same capture time to the millisecond
    if field in ("lat", "lon"):
        return bool(abs(mine - theirs) > 1e-6)
    if field in ("alt", "heading"):
        return bool(abs(mine - theirs) > 1e-3)
    return bool(mine != theirs)


@pytest.fixture(scope="module")
def drive(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("drive")
    start = datetime(2026, 6, 1, 9, 0, 0, 400_000, tzinfo=timezone(timedelta(hours=2)))
    return [f.path for f in write_drive(folder, 8, start=start, interval_s=0.7, seed=3)]


def test_exif_reading_matches(drive: list[Path]) -> None:
    paths = [*sorted(CORPUS.iterdir()), *drive] if CORPUS.is_dir() else drive
    reference = mapillary_tools("exif", [str(p) for p in paths])
    rows: list[tuple[str, ...]] = []
    found: set[tuple[str, str]] = set()
    for path in paths:
        theirs, mine = reference[str(path)], ours(path)
        if mine is None:
            # we reject the file as a broken JPEG: fine if mapillary_tools found nothing in it
            if any(theirs[k] is not None for k in ("time", "lat", "lon")):
                found.add((path.name, "rejected"))
                rows.append((path.name, "rejected as corrupt", str(theirs)))
            continue
        for field in ("time", "lat", "lon", "alt", "heading", "make", "model"):
            if _differs(field, getattr(mine, field), theirs[field]):
                found.add((path.name, field))
                why = ALLOWED_EXIF_DIFFERENCES.get((path.name, field), "NOT ALLOWED")
                rows.append(
                    (
                        path.name,
                        field,
                        f"ours={getattr(mine, field)!r}",
                        f"mapillary_tools={theirs[field]!r}",
                        why,
                    )
                )
    print_table("EXIF reading: ours vs mapillary_tools 0.14.7", rows)
    expected = set(ALLOWED_EXIF_DIFFERENCES) if CORPUS.is_dir() else set()
    assert found == expected
    compared = [p for p in paths if ours(p) is not None and reference[str(p)]["lat"] is not None]
    assert len(compared) >= len(drive)  # the positions of every readable GPS file were compared


# --- geometry -----------------------------------------------------------------------------------


def test_distance_and_bearing_match() -> None:
    rng = random.Random(7)
    pairs: list[list[float]] = []
    for _ in range(300):
        lat, lon = rng.uniform(-85, 85), rng.uniform(-180, 180)
        far = rng.random() < 0.3
        lat2, lon2 = destination(
            lat, lon, rng.uniform(0, 360), rng.uniform(0.5, 5e6 if far else 500)
        )
        pairs.append([lat, lon, lat2, lon2])
    pairs.append([0.0, 179.9999, 0.0, -179.9999])
    reference = mapillary_tools("geo", pairs)
    for (a, b, c, d), (distance, bearing) in zip(pairs, reference, strict=True):
        assert distance_m(a, b, c, d) == pytest.approx(distance, rel=1e-6)
        assert bearing_deg(a, b, c, d) == pytest.approx(bearing, rel=1e-6, abs=1e-9)


# --- the description ------------------------------------------------------------------------------


def _as_reference(meta: Any, path: Path, **extra: Any) -> dict[str, Any]:
    return {
        "filename": str(path.resolve()),
        "filesize": path.stat().st_size,
        "md5sum": "d41d8cd98f00b204e9800998ecf8427e",
        "time": meta.capture_time.timestamp(),
        "lat": meta.lat,
        "lon": meta.lon,
        "alt": meta.alt,
        "heading": meta.heading,
        "width": meta.width,
        "height": meta.height,
        "make": meta.make,
        "model": meta.model,
        "orientation": meta.orientation,
        "camera_uuid": meta.camera_uuid,
        **extra,
    }


def test_description_matches(drive: list[Path]) -> None:
    readable = []
    for path in [*(sorted(CORPUS.iterdir()) if CORPUS.is_dir() else []), *drive]:
        try:
            readable.append(
                (path, read_image_metadata(path.read_bytes(), path.name, default_tz=UTC))
            )
        except ItemError:
            continue
    assert len(readable) >= len(drive)
    metas = [
        (path, replace(meta, heading=None) if i % 3 == 0 else meta, f"seq{i % 2}")
        for i, (path, meta) in enumerate(readable)
    ]
    reference = mapillary_tools("describe", [_as_reference(m, p, sequence=s) for p, m, s in metas])
    for (path, meta, seq), theirs in zip(metas, reference, strict=True):
        desc = image_description(
            meta,
            filename=str(path.resolve()),
            md5sum="d41d8cd98f00b204e9800998ecf8427e",
            filesize=path.stat().st_size,
            sequence_id=seq,
        )
        assert desc == theirs["desc"], path.name
        assert exif_description(desc) == theirs["exif"], path.name
        written = with_description(path.read_bytes(), exif_description(desc), path.name)
        assert _image_description(written) == theirs["written"], path.name


def _image_description(jpeg: bytes) -> str:
    import piexif

    return str(piexif.load(exif_tiff(jpeg))["0th"][270].decode())


# --- sequences ------------------------------------------------------------------------------------

T0 = datetime(2026, 6, 1, 9, 0, 0, tzinfo=UTC)


def _drive(
    folder: str,
    start_s: float,
    n: int,
    *,
    step_m: float = 6.0,
    dt: float = 1.0,
    lat: float = 46.05,
    lon: float = 14.5,
    bearing: float = 60.0,
    **kw: Any,
) -> list[Shot]:
    shots = []
    for i in range(n):
        la, lo = destination(lat, lon, bearing, i * step_m)
        shots.append(
            Shot(
                key=f"{folder}/{start_s}/{i}",
                folder=f"/cards/{folder}",
                filename=f"IMG_{int(start_s)}_{i:04d}.JPG",
                time=T0 + timedelta(seconds=start_s + i * dt),
                lat=la,
                lon=lo,
                heading=kw.get("heading"),
                make=kw.get("make", "ACME"),
                model=kw.get("model", "Cam"),
                width=kw.get("width", 4000),
                height=kw.get("height", 3000),
                size=kw.get("size", 3_000_000),
            )
        )
    return shots


def _scenario() -> list[Shot]:
    shots = _drive("a", 0, 40)  # a plain drive
    shots += _drive("a", 200, 30, lat=46.06)  # after a 2.5 min stop: time split
    shots += _drive("a", 231, 30, lat=46.061, lon=14.502)  # 1 s later but 100+ m away
    shots += _drive("b", 10, 25, heading=123.0)  # another folder, overlapping in time
    shots += _drive("a", 5000, 12, make="Other")  # another camera in the same folder
    shots += _drive("a", 6000, 20, dt=0.0, step_m=2.0)  # burst: 20 shots in the same second
    shots += _drive("a", 7000, 6, dt=30.0, step_m=150.0)  # slow and sparse: distance splits
    return shots


def _reference_for(shots: list[Shot]) -> list[dict[str, Any]]:
    return [
        {
            "filename": f"{s.folder}/{s.filename}",
            "filesize": s.size,
            "time": s.time.timestamp(),
            "lat": s.lat,
            "lon": s.lon,
            "heading": s.heading,
            "width": s.width,
            "height": s.height,
            "make": s.make,
            "model": s.model,
        }
        for s in shots
    ]


def _ours(shots: list[Shot], **limits: Any) -> dict[str, tuple[int, str, float]]:
    out = {}
    for n, seq in enumerate(cut_sequences(shots, **limits)):
        for s, heading in zip(seq, derive_headings(seq), strict=True):
            out[f"{s.folder}/{s.filename}"] = (n, format_capture_time(s.time), heading)
    return out


def _partition(assignment: dict[str, Any]) -> set[frozenset[str]]:
    groups: dict[Any, set[str]] = {}
    for name, value in assignment.items():
        groups.setdefault(value[0] if isinstance(value, tuple) else value, set()).add(name)
    return {frozenset(g) for g in groups.values()}


def test_sequences_match() -> None:
    shots = _scenario()
    reference = mapillary_tools("sequences", _reference_for(shots))
    assert not [r for r in reference if "error" in r], reference
    theirs = {r["filename"]: r for r in reference}
    mine = _ours(shots)
    assert _partition(mine) == _partition({k: r["sequence"] for k, r in theirs.items()})
    assert len(_partition(mine)) >= 8
    for name, (_, time, heading) in mine.items():
        assert time == theirs[name]["time"], name  # including the spread burst
        assert heading == pytest.approx(theirs[name]["heading"], abs=1e-3), name


def test_max_images_after_a_time_split_is_the_one_allowed_difference() -> None:
    """mapillary_tools does not restart its image count when the time rule splits, so with a
    limit of 3 it cuts [2 shots | gap | 3 shots] into 2 + 1 + 2; we cut 2 + 3."""
    shots = _drive("a", 0, 2) + _drive("a", 100, 3)
    reference = mapillary_tools(
        "sequences", _reference_for(shots), env={"MAPILLARY_TOOLS_MAX_SEQUENCE_LENGTH": "3"}
    )
    theirs = _partition({r["filename"]: r["sequence"] for r in reference})
    mine = _partition(_ours(shots, max_images=3))
    names = [f"{s.folder}/{s.filename}" for s in shots]
    print_table(
        "sequences: ours vs mapillary_tools with MAX_SEQUENCE_LENGTH=3",
        [("ours", str(sorted(map(sorted, mine)))), ("theirs", str(sorted(map(sorted, theirs))))],
    )
    assert mine == {frozenset(names[:2]), frozenset(names[2:])}
    assert theirs == {frozenset(names[:2]), frozenset(names[2:3]), frozenset(names[3:])}
    # without the time split both agree
    shots = _drive("a", 0, 7)
    reference = mapillary_tools(
        "sequences", _reference_for(shots), env={"MAPILLARY_TOOLS_MAX_SEQUENCE_LENGTH": "3"}
    )
    assert _partition(_ours(shots, max_images=3)) == _partition(
        {r["filename"]: r["sequence"] for r in reference}
    )
