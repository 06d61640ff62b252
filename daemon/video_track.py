"""The GPS track a video is placed by: its own telemetry, or a GPX/NMEA side file.

mapillary_tools' ``--video_geotag_source`` with a filename pattern (``%f`` the file name,
``%g`` its stem, ``%e`` its extension, relative to the video's folder), as a watch folder's
``video_geotag_source`` / ``video_geotag_source_path``:

* ``native`` (default): the video's own telemetry (GoPro, CAMM, BlackVue, a location tag);
  a video without any falls back to a side file named after it (``%g.gpx``, ``%g.nmea``,
  ``%g.nma``, any letter case) when one is there — dashcams without a GPS of their own, a
  phone logging beside the camera;
* ``gpx`` / ``nmea``: the side file is the track (a logger better than the camera's GPS); the
  video's own GPS time, when it has one, synchronises the two.

How a side track is put on the movie's timeline is :mod:`daemon.geo.video_align`. The
container's creation time is UTC by the MP4 specification, but many dashcams write their
local wall-clock time there: ``creation_time_zone`` reads it in that zone instead, and
``offset_time`` corrects a camera clock that is off.

Reasons: those of :func:`daemon.media.video.read_video_fileobj`; ``no_track`` (the side file
is not there yet: the video waits for it), ``bad_gpx`` / ``bad_nmea``, ``outside_track``,
``no_video_time``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO, Literal

from daemon.errors import ItemError
from daemon.geo.video_align import align_side_track
from daemon.geotag import load_track
from daemon.media import mp4
from daemon.media.video import VideoTrack, read_video_fileobj
from daemon.video_options import DEFAULT_PATTERNS, VideoGeotagSource, VideoTrackOptions

# The options live in daemon.video_options (light, for start-up) and are still importable here.
__all__ = [
    "DEFAULT_PATTERNS",
    "VideoGeotagSource",
    "VideoTrackOptions",
    "expand",
    "find_side_file",
    "read_track",
    "side_files",
    "video_track_at",
]


def expand(pattern: str, video_name: str) -> str:
    """``pattern`` with ``%f``, ``%g`` and ``%e`` replaced for the file ``video_name``
    (``%%`` is a literal percent sign)."""
    stem, ext = os.path.splitext(video_name)
    values = {"f": video_name, "g": stem, "e": ext.lstrip("."), "%": "%"}
    out, i = [], 0
    while i < len(pattern):
        if pattern[i] == "%" and i + 1 < len(pattern) and pattern[i + 1] in values:
            out.append(values[pattern[i + 1]])
            i += 2
        else:
            out.append(pattern[i])
            i += 1
    return "".join(out)


def _existing(path: Path) -> Path | None:
    """``path`` if it exists, else the one entry of its folder whose name matches it in any
    letter case (cards are FAT: ``CLIP0001.NMEA`` beside ``CLIP0001.MP4``)."""
    if path.exists():
        return path
    try:
        names = os.listdir(path.parent)
    except OSError:
        return None
    wanted = path.name.lower()
    matches = sorted(n for n in names if n.lower() == wanted)
    return path.parent / matches[0] if matches else None


def side_files(video: Path, patterns: Sequence[str]) -> list[Path]:
    """The side files the patterns name for ``video`` (where they would be)."""
    return [video.parent / expand(p, video.name) for p in patterns]


def find_side_file(video: Path, patterns: Sequence[str]) -> Path | None:
    """The first side file of ``patterns`` that exists for ``video``, or None."""
    for candidate in side_files(video, patterns):
        found = _existing(candidate)
        if found is not None:
            return found
    return None


def _kind(path: Path, source: VideoGeotagSource) -> Literal["gpx", "nmea"]:
    if source in ("gpx", "nmea"):
        return "gpx" if source == "gpx" else "nmea"
    return "gpx" if path.suffix.lower() == ".gpx" else "nmea"


def _creation(info: mp4.Mp4Info, options: VideoTrackOptions) -> datetime | None:
    created = info.movie.creation_time if info.movie else None
    if created is None:
        return None
    if options.creation_time_zone is not None:
        created = created.replace(tzinfo=None).replace(tzinfo=options.creation_time_zone)
    return created.astimezone(UTC) + timedelta(seconds=options.offset_time)


def _from_side_file(
    fileobj: BinaryIO,
    name: str,
    side: Path,
    per_video: bool,
    own: VideoTrack | None,
    options: VideoTrackOptions,
) -> VideoTrack:
    kind = _kind(side, options.source)
    track = load_track(kind, side)
    info = own.info if own is not None else mp4.probe(fileobj, name)
    movie = info.movie
    aligned = align_side_track(
        track,
        name,
        duration_s=movie.duration_s if movie else None,
        video_gps_start=own.start_time if own is not None and own.clock == "gps" else None,
        creation=_creation(info, options),
        per_video=per_video,
    )
    points = [mp4.TimedPoint(p.time_s, p.lat, p.lon, p.alt, p.epoch_s) for p in aligned.points]
    notes = (*track.notes, f"{side.name}: {aligned.note}")
    timed = mp4.timed_track(
        points, name, movie_creation=aligned.start, epoch_clock="gps", notes=notes
    )
    make = own.make if own is not None else info.tags.get("make", "")
    model = own.model if own is not None else info.tags.get("model", "")
    return VideoTrack(name, kind, make, model, timed, info, notes=notes)


def read_track(fileobj: BinaryIO, name: str, options: VideoTrackOptions) -> VideoTrack:
    """The track the video ``name`` (open as ``fileobj``, at its place on the card) is placed
    by, following ``options`` (see the module docstring). Raises only :class:`ItemError`."""
    video = Path(name)
    patterns = (options.pattern,) if options.pattern else DEFAULT_PATTERNS[options.source]
    per_video = any("%g" in p or "%f" in p for p in patterns)
    if options.source == "native":
        try:
            return read_video_fileobj(fileobj, name)
        except ItemError as exc:
            if exc.reason != "no_video_gps":
                raise
            side = find_side_file(video, patterns)
            if side is None:
                looked = ", ".join(p.name for p in side_files(video, patterns))
                raise ItemError(
                    f"{exc} (and no side track beside it: {looked})", reason="no_video_gps"
                ) from None
        return _from_side_file(fileobj, name, side, per_video, None, options)
    side = find_side_file(video, patterns)
    if side is None:
        looked = ", ".join(str(p) for p in side_files(video, patterns))
        raise ItemError(
            f"{name}: its {options.source.upper()} track is not there (yet): {looked}",
            reason="no_track",
        )
    try:
        own: VideoTrack | None = read_video_fileobj(fileobj, name)
    except ItemError as exc:
        if exc.reason not in ("no_video_gps", "gps_noise", "null_island"):
            raise
        own = None
    return _from_side_file(fileobj, name, side, per_video, own, options)


def video_track_at(path: Path | str, options: VideoTrackOptions) -> VideoTrack:
    """:func:`read_track` of the file at ``path``; ``unreadable`` when it may not be opened.

    Any other :class:`OSError` (the file gone, an I/O error) propagates: a video read in place
    vanishes with its card, and the caller waits for the card rather than refusing the video.
    """
    try:
        with open(path, "rb") as fileobj:
            return read_track(fileobj, str(path), options)
    except PermissionError as exc:
        raise ItemError(f"{path}: cannot read: {exc.strerror or exc}", reason="unreadable") from exc
