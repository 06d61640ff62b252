"""Command-line options of ``mapillaryd process`` / ``process-and-upload``.

Every mapillary_tools 0.14.7 ``process`` option is accepted under its own spelling
(``--desc_path``, ``--geotag_source gpx --geotag_source_path F``, ``--offset_time`` …) with its
meaning, so a contributor's script works by changing the program name; each also has a
dashed spelling (``--desc-path``). Options mapillary_tools has that do not apply here
(``--num_processes``, ``--skip_process_errors``: processing never stops at a bad file) are
accepted and ignored. Ours: ``--offset_time auto``, ``--time-zone``, ``--privacy-zone``,
``--copies-dir``, CSV geotagging.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import Any

from daemon.config import resolve_time_zone
from daemon.errors import FatalError
from daemon.geo.sequence import SequenceOptions, Zone
from daemon.geotag import GeotagOptions, GeotagSource
from daemon.media.writeback import Overwrite
from daemon.processing import ProcessOptions


class BadArguments(FatalError):
    exit_code = 2


@dataclass(frozen=True)
class CsvSpec:
    path: Path
    filename_column: int | None
    timestamp_column: int | None
    latitude_column: int | None
    longitude_column: int | None
    heading_column: int | None
    altitude_column: int | None
    time_format: str | None


@dataclass(frozen=True)
class ProcessRequest:
    paths: list[Path]
    options: ProcessOptions
    time_zone: tzinfo
    desc_path: str | None
    skip_subfolders: bool
    overwrite: Overwrite
    copies_dir: Path | None
    csv: CsvSpec | None
    verbose: bool


def _both(group: Any, name: str, **kwargs: Any) -> None:
    """Add ``--a_b`` (mapillary_tools) and ``--a-b`` spellings of one option."""
    spellings = [f"--{name}"]
    dashed = f"--{name.replace('_', '-')}"
    if dashed != spellings[0]:
        spellings.append(dashed)
    group.add_argument(*spellings, dest=kwargs.pop("dest", name), **kwargs)


def add_process_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files or folders")
    g = p.add_argument_group("output")
    _both(
        g,
        "desc_path",
        default=None,
        help="description file to write ('-' for standard output; default: "
        "PATH/mapillary_image_description.json for a single folder)",
    )
    _both(g, "verbose", action="store_true", help="list every refused file")
    g = p.add_argument_group("geotagging")
    _both(
        g,
        "geotag_source",
        action="append",
        default=None,
        help="where positions come from: native/exif (default), gpx, nmea, csv; repeat or "
        "separate with commas to try several in order",
    )
    _both(
        g,
        "geotag_source_path",
        type=Path,
        default=None,
        help="the GPX/NMEA file or folder, or the CSV file",
    )
    _both(
        g,
        "interpolation_offset_time",
        type=float,
        default=0.0,
        help="seconds added to camera times before the track lookup",
    )
    _both(
        g,
        "interpolation_use_gpx_start_time",
        action="store_true",
        help="shift the images so the first one sits on the track's first point",
    )
    g.add_argument(
        "--use_gps_start_time",
        "--use-gps-start-time",
        action="store_true",
        dest="interpolation_use_gpx_start_time",
        help=argparse.SUPPRESS,
    )
    _both(
        g,
        "offset_time",
        default="0",
        help="seconds added to final capture times (mapillary_tools), or 'auto': detect the "
        "camera clock offset against the track and apply it when unambiguous",
    )
    _both(g, "offset_angle", type=float, default=0.0, help="degrees added to every heading")
    _both(
        g,
        "time_zone",
        default="local",
        help="zone of camera times without an offset (IANA name, or 'local')",
    )
    _both(g, "device_make", default=None)
    _both(g, "device_model", default=None)
    g = p.add_argument_group("sequences")
    _both(g, "cutoff_time", type=float, default=60.0)
    _both(g, "cutoff_distance", type=float, default=100.0)
    _both(g, "duplicate_distance", type=float, default=0.1)
    _both(g, "duplicate_angle", type=float, default=5.0)
    _both(g, "interpolate_directions", action="store_true")
    _both(g, "skip_subfolders", action="store_true")
    _both(g, "skip_zigzag_check", action="store_true")
    _both(
        g,
        "privacy_zone",
        action="append",
        default=[],
        metavar="LAT,LON,RADIUS_M[,NAME]",
        help="drop images within RADIUS_M metres of LAT,LON (repeatable)",
    )
    g = p.add_argument_group("writing geotags (always into copies; originals are never touched)")
    for tag in (
        "all_EXIF_tags",
        "EXIF_time_tag",
        "EXIF_gps_tag",
        "EXIF_direction_tag",
        "EXIF_orientation_tag",
    ):
        _both(g, f"overwrite_{tag}", action="store_true")
    _both(
        g,
        "copies_dir",
        type=Path,
        default=None,
        help="where geotagged copies go (default: PATH/.mapillary/process_images)",
    )
    g = p.add_argument_group("CSV geotagging (--geotag_source csv; 1-based columns)")
    for col in ("filename", "timestamp", "latitude", "longitude", "heading", "altitude"):
        _both(g, f"{col}_column", type=int, default=None)
    _both(g, "time_format", default=None, help="strptime format of the timestamp column")
    g = p.add_argument_group("accepted for compatibility, no effect")
    for flag in ("skip_process_errors", "advanced", "rerun"):
        _both(g, flag, action="store_true", help=argparse.SUPPRESS)
    for opt in ("num_processes", "filetypes", "video_geotag_source", "user_name"):
        _both(g, opt, default=None, help=argparse.SUPPRESS)


SOURCE_NAMES: dict[str, GeotagSource] = {
    "native": "exif",
    "exif": "exif",
    "gpx": "gpx",
    "nmea": "nmea",
    "csv": "csv",
}


def _source_names(values: list[str]) -> list[GeotagSource]:
    """``--geotag_source`` values (repeated and/or comma-separated) in order, ``native`` read
    as ``exif``; each source once."""
    names: list[GeotagSource] = []
    for value in values:
        for part in value.split(","):
            key = part.strip().lower()
            if key not in SOURCE_NAMES:
                raise BadArguments(
                    f"--geotag_source {part.strip()!r}: one of {', '.join(SOURCE_NAMES)}"
                )
            if SOURCE_NAMES[key] not in names:
                names.append(SOURCE_NAMES[key])
    return names


def _zone(text: str) -> Zone:
    parts = text.split(",", 3)
    try:
        lat, lon, radius = (float(x) for x in parts[:3])
    except ValueError:
        raise BadArguments(f"--privacy-zone {text!r}: expected LAT,LON,RADIUS_M[,NAME]") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180 and radius > 0):
        raise BadArguments(f"--privacy-zone {text!r}: latitude, longitude or radius out of range")
    return Zone(lat, lon, radius, parts[3] if len(parts) > 3 else "")


def request_from(ns: argparse.Namespace) -> ProcessRequest:
    """Turn parsed arguments into a :class:`ProcessRequest`; :class:`BadArguments` names the
    option that is wrong."""
    names = _source_names(ns.geotag_source or ["exif"])
    tracked = [n for n in names if n in ("gpx", "nmea")]
    for name in names:
        if name != "exif" and ns.geotag_source_path is None:
            raise BadArguments(f"--geotag_source {name} needs --geotag_source_path")
    for p in ns.paths:
        if not p.exists():
            raise BadArguments(f"{p}: no such file or folder")
    auto = str(ns.offset_time).strip().lower() == "auto"
    try:
        offset_time = 0.0 if auto else float(ns.offset_time)
    except ValueError:
        raise BadArguments(
            f"--offset_time {ns.offset_time!r}: a number of seconds, or 'auto'"
        ) from None
    if auto and not tracked:
        raise BadArguments("--offset_time auto needs a track: --geotag_source gpx or nmea")
    if not math.isfinite(offset_time):
        raise BadArguments("--offset_time must be finite")
    try:
        tz = resolve_time_zone(ns.time_zone)
    except Exception:
        raise BadArguments(f"--time-zone {ns.time_zone!r}: unknown time zone") from None
    try:
        seq = SequenceOptions(
            cutoff_time=ns.cutoff_time,
            cutoff_distance=ns.cutoff_distance,
            # A negative threshold turns the check off, as it does in mapillary_tools.
            duplicate_distance=max(ns.duplicate_distance, 0.0),
            duplicate_angle=max(ns.duplicate_angle, 0.0),
            flag_duplicates=ns.duplicate_distance >= 0 and ns.duplicate_angle >= 0,
            interpolate_directions=ns.interpolate_directions,
            offset_angle=ns.offset_angle,
            zigzag=not ns.skip_zigzag_check,
            privacy_zones=tuple(_zone(z) for z in ns.privacy_zone),
        )
    except ValueError as exc:
        raise BadArguments(str(exc)) from None
    sources = tuple(
        GeotagOptions(
            source=name,
            source_path=ns.geotag_source_path if name != "exif" else None,
            interpolation_offset_time=ns.interpolation_offset_time,
            use_gps_start_time=ns.interpolation_use_gpx_start_time,
            auto_offset=auto and name in ("gpx", "nmea"),
        )
        for name in names
    )
    overwrite = (
        Overwrite.every()
        if ns.overwrite_all_EXIF_tags
        else Overwrite(
            time=ns.overwrite_EXIF_time_tag,
            gps=ns.overwrite_EXIF_gps_tag,
            direction=ns.overwrite_EXIF_direction_tag,
            orientation=ns.overwrite_EXIF_orientation_tag,
        )
    )
    csv = None
    if "csv" in names:
        assert ns.geotag_source_path is not None
        csv = CsvSpec(
            ns.geotag_source_path,
            ns.filename_column,
            ns.timestamp_column,
            ns.latitude_column,
            ns.longitude_column,
            ns.heading_column,
            ns.altitude_column,
            ns.time_format,
        )
    return ProcessRequest(
        paths=list(ns.paths),
        options=ProcessOptions(sources, seq, offset_time, ns.device_make, ns.device_model),
        time_zone=tz,
        desc_path=ns.desc_path,
        skip_subfolders=ns.skip_subfolders,
        overwrite=overwrite,
        copies_dir=ns.copies_dir,
        csv=csv,
        verbose=ns.verbose,
    )
