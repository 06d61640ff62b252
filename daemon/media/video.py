"""The GPS track of a video file, from whatever telemetry it carries.

:func:`read_video_track` tries, in mapillary_tools' native extractor order
(``geotag/video_extractors/native.py``): GoPro GPMF (:mod:`daemon.media.gpmf`), then CAMM
(:mod:`daemon.media.camm`), then BlackVue (:mod:`daemon.media.blackvue`); then, beyond
mapillary_tools, a single QuickTime/MP4 location tag (``udta/©xyz`` or the Apple
``com.apple.quicktime.location.ISO6709`` key) as a one-point track.

As in mapillary_tools, the first format *present* decides: a GoPro video whose telemetry has
no GPS, or whose points the quality filters all removed, is refused rather than handed to the
next reader (it has no CAMM or BlackVue data, and a single location tag cannot stand in for a
moving camera's track).

Reasons (:class:`~daemon.errors.ItemError` ``reason``):

* ``truncated_mp4`` (:class:`~daemon.errors.CorruptMediaError`): the file was cut short —
  no ``moov`` (a recorder that lost power), a box running past the end of the file;
* ``corrupt_media``: not an MP4/QuickTime file, or a malformed one;
* ``no_video_gps``: no GPS telemetry and no location tag, or telemetry without a GPS fix;
* ``gps_noise``: GoPro points exist but the fix/DOP/outlier filters removed them all
  (mapillary_tools' ``MapillaryGPSNoiseError``);
* ``null_island``: the only location is exactly (0, 0);
* ``unreadable``: the operating system could not read the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Literal

from daemon.errors import ItemError
from daemon.geo.track import Track
from daemon.media import mp4
from daemon.media.blackvue import blackvue_track
from daemon.media.camm import camm_track
from daemon.media.gpmf import DEFAULT_FILTER, GoProOptions, GpsFilter, gopro_track

__all__ = [
    "VideoOptions",
    "VideoSource",
    "VideoTrack",
    "read_video_fileobj",
    "read_video_track",
]

VideoSource = Literal["gopro", "camm", "blackvue", "quicktime_location", "gpx", "nmea"]


@dataclass(frozen=True)
class VideoOptions:
    """Reader options: GoPro stream choices and GPS filters, and whether a single location
    tag may stand in for a track (``quicktime_location``)."""

    gopro: GoProOptions = field(default_factory=GoProOptions)
    gps_filter: GpsFilter = DEFAULT_FILTER
    quicktime_location: bool = True


@dataclass(frozen=True)
class VideoTrack:
    """A video's GPS track.

    ``source`` says which telemetry it came from, ``make``/``model`` the device (empty when
    unknown), ``timed`` the points on the movie timeline and as a UTC
    :class:`~daemon.geo.track.Track`, ``info`` the container's layout (tracks, duration),
    ``notes`` what the readers skipped or filtered.
    """

    name: str
    source: VideoSource
    make: str
    model: str
    timed: mp4.TimedTrack
    info: mp4.Mp4Info = field(repr=False)
    firmware: str = ""
    notes: tuple[str, ...] = ()

    @property
    def track(self) -> Track:
        """The points as a track of UTC times (``start_time + movie time``)."""
        return self.timed.track

    @property
    def points(self) -> tuple[mp4.TimedPoint, ...]:
        """The points on the movie timeline, in time order."""
        return self.timed.points

    @property
    def start_time(self) -> datetime:
        """The UTC time of movie time 0 (see :attr:`clock` for how much to trust it)."""
        return self.timed.start_time

    @property
    def clock(self) -> mp4.Clock:
        """Where :attr:`start_time` came from: ``gps``, ``camera``, ``container`` or ``none``."""
        return self.timed.clock

    @property
    def duration_s(self) -> float | None:
        """The movie's duration in seconds, from ``mvhd`` (None when unknown)."""
        return self.info.movie.duration_s if self.info.movie else None


def _creation_date(text: str) -> datetime | None:
    """Apple's ``creationdate`` key, ``2019-07-24T11:25:40+0300``, as an aware datetime."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        try:
            value = datetime.strptime(text.strip(), "%Y-%m-%dT%H:%M:%S%z")
        except ValueError:
            return None
    return value.astimezone(UTC) if value.tzinfo is not None else None


def _location_track(name: str, info: mp4.Mp4Info) -> VideoTrack | None:
    location = info.location
    if location is None:
        return None
    if location.lat == 0 and location.lon == 0:
        raise ItemError(
            f"{name}: the only location in the video ({location.tag} {location.text!r}) is "
            "(0, 0), null island: the device had no fix",
            reason="null_island",
        )
    creation = _creation_date(info.tags.get("creationdate", ""))
    movie_creation = info.movie.creation_time if info.movie else None
    point = mp4.TimedPoint(
        0.0, location.lat, location.lon, location.alt, creation.timestamp() if creation else None
    )
    note = f"a single location from {location.tag}, not a track"
    timed = mp4.timed_track(
        [point], name, movie_creation=movie_creation, epoch_clock="camera", notes=[note]
    )
    return VideoTrack(
        name,
        "quicktime_location",
        info.tags.get("make", ""),
        info.tags.get("model", ""),
        timed,
        info,
        notes=(note,),
    )


def read_video_fileobj(
    fileobj: BinaryIO, name: str, options: VideoOptions | None = None
) -> VideoTrack:
    """The GPS track of the video in ``fileobj`` (see the module docstring for the order and
    the reasons). Raises only :class:`~daemon.errors.ItemError` subclasses."""
    options = options or VideoOptions()
    info = mp4.probe(fileobj, name)

    gopro = gopro_track(
        fileobj, name, info=info, options=options.gopro, gps_filter=options.gps_filter
    )
    if gopro is not None:
        if gopro.timed is None:
            why = "; ".join(gopro.notes)
            if gopro.raw_points:
                raise ItemError(
                    f"{name}: GoPro GPS too noisy: all {len(gopro.raw_points)} point(s) were "
                    f"filtered out ({why})",
                    reason="gps_noise",
                )
            raise ItemError(f"{name}: GoPro video without GPS: {why}", reason="no_video_gps")
        return VideoTrack(
            name, "gopro", gopro.make, gopro.model, gopro.timed, info, gopro.firmware, gopro.notes
        )

    camm = camm_track(fileobj, name, info=info)
    if camm is not None:
        if camm.timed is None:
            why = "; ".join(camm.notes)
            raise ItemError(f"{name}: CAMM track without GPS: {why}", reason="no_video_gps")
        return VideoTrack(name, "camm", camm.make, camm.model, camm.timed, info, notes=camm.notes)

    blackvue = blackvue_track(fileobj, name, info=info)
    if blackvue is not None:
        if blackvue.timed is None:
            why = "; ".join(blackvue.notes)
            raise ItemError(f"{name}: BlackVue video without GPS: {why}", reason="no_video_gps")
        return VideoTrack(
            name,
            "blackvue",
            blackvue.make,
            blackvue.model,
            blackvue.timed,
            info,
            notes=blackvue.notes,
        )

    if options.quicktime_location:
        located = _location_track(name, info)
        if located is not None:
            return located
    raise ItemError(
        f"{name}: no GPS in the video: no GoPro (gpmd) or CAMM track, no BlackVue gps box"
        + (", no location tag" if options.quicktime_location else "")
        + (
            " (a fragmented MP4: samples in 'moof' fragments are not read)"
            if info.fragmented
            else ""
        ),
        reason="no_video_gps",
    )


def read_video_track(path: Path | str, options: VideoOptions | None = None) -> VideoTrack:
    """The GPS track of the video at ``path`` (opened read-only, streamed, never loaded whole).

    ``ItemError(reason="unreadable")`` when it cannot be opened; otherwise as
    :func:`read_video_fileobj`.
    """
    name = str(path)
    try:
        with open(path, "rb") as fileobj:
            return read_video_fileobj(fileobj, name, options)
    except OSError as exc:
        raise ItemError(f"{name}: cannot read: {exc.strerror or exc}", reason="unreadable") from exc
