"""Geotagging: where and when each image was taken, from EXIF, a GPS track or a CSV file.

:func:`load_track` reads the track files a source names (the only I/O here); :func:`geotag`
is pure: photos + options + track → for each photo a :class:`Placed` or a :class:`Refused`
with a stable reason code and a sentence for a person.

Semantics follow mapillary_tools 0.14.7 where it has them (see ``--geotag_source``,
``--interpolation_offset_time``, ``--interpolation_use_gpx_start_time``): with a track, the
shifted camera time becomes the capture time, and the position is interpolated along the track
— never across the gap between two track segments (mapillary_tools #129). Beyond it:
``auto_offset`` estimates the camera's clock error (:mod:`daemon.geo.clock_offset`) and applies
it only when the fit is unambiguous.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from daemon.describe import format_capture_time
from daemon.errors import ItemError
from daemon.geo.clock_offset import Ambiguous, describe_offset, estimate_offset
from daemon.geo.track import OutsideTrack, Track, apply_offsets, format_time, locate
from daemon.media.csvtrack import CsvRow, match_csv_rows
from daemon.media.exif import ExifFacts
from daemon.media.gpx import read_gpx
from daemon.media.nmea import read_nmea

GeotagSource = Literal["exif", "gpx", "nmea", "csv"]
TRACK_SOURCES = ("gpx", "nmea")
TRACK_SUFFIXES = {"gpx": (".gpx",), "nmea": (".nmea", ".nma", ".log", ".txt")}


@dataclass(frozen=True)
class GeotagOptions:
    """Where positions come from, and how camera times are aligned with a track.

    ``source_path``: for gpx/nmea a track file or a folder of them (all merged); for csv the
    CSV file. ``interpolation_offset_time`` seconds are added to camera times before the track
    lookup (mapillary_tools' ``--interpolation_offset_time``); ``auto_offset`` adds the
    estimated clock offset on top.
    """

    source: GeotagSource = "exif"
    source_path: Path | None = None
    interpolation_offset_time: float = 0.0
    use_gps_start_time: bool = False
    auto_offset: bool = False


@dataclass(frozen=True)
class SourceData:
    """What a source's files said: the loaded track, or CSV rows (or the error reading them)."""

    track: Track | ItemError | None = None
    csv_rows: Sequence[CsvRow] | ItemError | None = None


#: Refusals that let an image fall through to the next source of a chain (mapillary_tools
#: passes on exactly its MapillaryGeoTaggingError: no position or no time in the file).
FALL_THROUGH = frozenset({"no_gps", "no_time"})


@dataclass(frozen=True)
class Photo:
    """One image as read: its EXIF facts, or why they could not be read at all."""

    key: str
    name: str
    facts: ExifFacts | None
    problem: ItemError | None = None


@dataclass(frozen=True)
class Placed:
    time: datetime
    lat: float
    lon: float
    alt: float | None
    heading: float | None


@dataclass(frozen=True)
class Refused:
    reason: str
    message: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Geotagged:
    """Per photo key, a placement or a refusal; ``notes`` for the log (offset applied, …)."""

    results: dict[str, Placed | Refused]
    notes: list[str]


def track_files(source: GeotagSource, path: Path) -> list[Path]:
    """The track files ``path`` names: itself, or the matching files in it (not recursive)."""
    if path.is_dir():
        suffixes = TRACK_SUFFIXES.get(source, ())
        return sorted(
            p
            for p in path.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes
        )
    return [path]


def load_track(source: GeotagSource, path: Path) -> Track:
    """Read and merge every track file ``path`` names. Raise :class:`ItemError` (``no_track``,
    ``bad_gpx``, ``bad_nmea``) naming the file when there is nothing usable."""
    if not path.exists():
        raise ItemError(f"{path}: no such track file or folder (yet)", reason="no_track")
    files = track_files(source, path)
    if not files:
        raise ItemError(
            f"{path}: no {source.upper()} track files in this folder", reason="no_track"
        )
    reader = read_gpx if source == "gpx" else read_nmea
    tracks, problems = [], []
    for f in files:
        try:
            tracks.append(reader(f))
        except ItemError as exc:
            problems.append(exc)
    if not tracks:
        if len(problems) == 1:
            raise problems[0]
        raise ItemError(
            f"{path}: none of the {len(files)} track files is usable: "
            + "; ".join(str(p) for p in problems[:3]),
            reason=problems[0].reason,
        )
    if len(tracks) == 1:
        return tracks[0]
    notes = [n for t in tracks for n in t.notes] + [f"{p}" for p in problems]
    return Track.from_segments(
        (s for t in tracks for s in t.segments), source=str(path), notes=notes
    )


def load_source(
    opts: GeotagOptions, *, read_csv: Callable[[Path], Sequence[CsvRow]] | None = None
) -> SourceData:
    """Read the files ``opts`` names (a track, or a CSV through ``read_csv``); a file problem is
    kept as the error, so every image can be refused with it."""
    try:
        if opts.source in TRACK_SOURCES and opts.source_path is not None:
            return SourceData(track=load_track(opts.source, opts.source_path))
        if opts.source == "csv" and opts.source_path is not None and read_csv is not None:
            return SourceData(csv_rows=read_csv(opts.source_path))
    except ItemError as exc:
        return SourceData(track=exc) if opts.source in TRACK_SOURCES else SourceData(csv_rows=exc)
    return SourceData()


def geotag(
    photos: Sequence[Photo],
    opts: GeotagOptions,
    *,
    track: Track | ItemError | None = None,
    csv_rows: Sequence[CsvRow] | ItemError | None = None,
) -> Geotagged:
    """Place every photo, or say why not. ``track``/``csv_rows`` are what :func:`load_track` /
    :func:`~daemon.media.csvtrack.read_csv_geotags` returned (or the error they raised)."""
    results: dict[str, Placed | Refused] = {}
    readable = []
    for p in photos:
        if p.facts is None:
            err = p.problem or ItemError(f"{p.name}: unreadable")
            results[p.key] = Refused(err.reason, str(err))
        else:
            readable.append(p)
    notes: list[str] = []
    if opts.source == "exif":
        results.update(_from_exif(readable))
    elif opts.source == "csv":
        results.update(_from_csv(readable, csv_rows))
    elif isinstance(track, ItemError) or track is None:
        err = track or ItemError("no track file given", reason="no_track")
        results.update({p.key: Refused(err.reason, f"{p.name}: {err}") for p in readable})
    else:
        placed, notes = _from_track(readable, opts, track)
        results.update(placed)
    return Geotagged(results, notes)


def geotag_chain(
    photos: Sequence[Photo], chain: Sequence[tuple[GeotagOptions, SourceData]]
) -> Geotagged:
    """Try each source in turn (``--geotag_source native --geotag_source gpx``): an image the
    source refused for want of a position or time (:data:`FALL_THROUGH`) goes on to the next;
    any other verdict is final. The last source's verdicts are all final."""
    if not chain:
        raise ValueError("no geotag source")
    results: dict[str, Placed | Refused] = {}
    notes: list[str] = []
    remaining = list(photos)
    for index, (opts, data) in enumerate(chain):
        tagged = geotag(remaining, opts, track=data.track, csv_rows=data.csv_rows)
        notes += tagged.notes
        last = index == len(chain) - 1
        passed_on = []
        for p in remaining:
            r = tagged.results[p.key]
            if not last and isinstance(r, Refused) and r.reason in FALL_THROUGH:
                passed_on.append(p)
            else:
                results[p.key] = r
        remaining = passed_on
        if not remaining:
            break
    return Geotagged(results, notes)


def _from_exif(photos: Iterable[Photo]) -> dict[str, Placed | Refused]:
    out: dict[str, Placed | Refused] = {}
    for p in photos:
        f = p.facts
        assert f is not None
        if f.capture_time is None:
            out[p.key] = Refused("no_time", f"{p.name}: no capture time in EXIF")
        elif f.lat is None or f.lon is None:
            out[p.key] = Refused("no_gps", f"{p.name}: no GPS position in EXIF")
        elif not (_valid(f.lat, 90) and _valid(f.lon, 180)):
            out[p.key] = Refused("no_gps", f"{p.name}: invalid GPS position ({f.lat}, {f.lon})")
        else:
            out[p.key] = Placed(f.capture_time, f.lat, f.lon, f.alt, f.heading)
    return out


def _valid(value: float, limit: float) -> bool:
    return math.isfinite(value) and -limit <= value <= limit


def _from_csv(
    photos: Sequence[Photo], rows: Sequence[CsvRow] | ItemError | None
) -> dict[str, Placed | Refused]:
    if rows is None or isinstance(rows, ItemError):
        err = rows or ItemError("no CSV file given", reason="bad_csv")
        return {p.key: Refused(err.reason, f"{p.name}: {err}") for p in photos}
    try:
        match = match_csv_rows(rows, [p.name for p in photos])
    except ItemError as exc:
        return {p.key: Refused(exc.reason, f"{p.name}: {exc}") for p in photos}
    out: dict[str, Placed | Refused] = {}
    for p in photos:
        row = match.matched.get(p.name)
        f = p.facts
        assert f is not None
        if row is None:
            out[p.key] = Refused("no_csv_row", f"{p.name}: no row for this image in the CSV file")
            continue
        time = row.time or f.capture_time
        lat = row.lat if row.lat is not None else f.lat
        lon = row.lon if row.lon is not None else f.lon
        if time is None:
            out[p.key] = Refused("no_time", f"{p.name}: no time in CSV line {row.line} or EXIF")
        elif lat is None or lon is None:
            out[p.key] = Refused("no_gps", f"{p.name}: no position in CSV line {row.line} or EXIF")
        else:
            alt = row.altitude if row.altitude is not None else f.alt
            heading = row.heading if row.heading is not None else f.heading
            out[p.key] = Placed(time, lat, lon, alt, heading)
    return out


def _from_track(
    photos: Sequence[Photo], opts: GeotagOptions, track: Track
) -> tuple[dict[str, Placed | Refused], list[str]]:
    out: dict[str, Placed | Refused] = {}
    timed = [p for p in photos if p.facts is not None and p.facts.capture_time is not None]
    timed_keys = {p.key for p in timed}
    for p in photos:
        if p.key not in timed_keys:
            out[p.key] = Refused("no_time", f"{p.name}: no capture time in EXIF to match the track")
    if not timed:
        return out, []
    camera = [p.facts.capture_time for p in timed if p.facts and p.facts.capture_time]
    notes: list[str] = []
    extra = 0.0
    if opts.auto_offset:
        positions = [
            (p.facts.lat, p.facts.lon)
            if p.facts and p.facts.lat is not None and p.facts.lon is not None
            else None
            for p in timed
        ]
        shifted_base = [t + timedelta(seconds=opts.interpolation_offset_time) for t in camera]
        estimate = estimate_offset(shifted_base, track, image_positions=positions)
        if isinstance(estimate, Ambiguous):
            message = f"the camera clock offset cannot be determined: {estimate.reason}"
            for p in timed:
                out[p.key] = Refused("offset_ambiguous", f"{p.name}: {message}")
            return out, [message]
        extra = estimate.offset_s
        notes.append(
            f"{describe_offset(extra)}, detected from {estimate.images_used} "
            f"images ({estimate.method}) and applied"
        )
    times = apply_offsets(
        camera,
        offset_seconds=opts.interpolation_offset_time + extra,
        use_gps_start_time=opts.use_gps_start_time,
        track=track,
    )
    for p, t in zip(timed, times, strict=True):
        fix = locate(track, t)
        if isinstance(fix, OutsideTrack):
            out[p.key] = Refused(
                "outside_track",
                f"{p.name}: {_outside(fix)}",
                {
                    # mapillary_tools' MapillaryOutsideGPXTrackError vars, in its time format
                    "image_time": format_capture_time(fix.image_time),
                    "gpx_start_time": format_capture_time(fix.track_start),
                    "gpx_end_time": format_capture_time(fix.track_end),
                },
            )
        else:
            out[p.key] = Placed(fix.time, fix.lat, fix.lon, fix.alt, fix.heading)
    return out, notes


def _outside(fix: OutsideTrack) -> str:
    span = (
        f"the track {os.path.basename(fix.source) or ''} runs from {format_time(fix.track_start)}"
    )
    span += f" to {format_time(fix.track_end)}"
    when = format_time(fix.image_time)
    if fix.kind == "gap" and fix.gap_start and fix.gap_end:
        return (
            f"taken at {when}, in a gap between track segments ({format_time(fix.gap_start)} … "
            f"{format_time(fix.gap_end)}); not interpolated across it ({span})"
        )
    side = "before" if fix.kind == "before" else "after"
    return f"taken at {when}, {fix.delta_s:.3f} s {side} the track ({span})"
