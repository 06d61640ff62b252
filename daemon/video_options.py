"""Where a watch folder's videos take their GPS track from: the options of
:func:`daemon.video_track.read_track`, without its readers.

Kept apart so that the daemon can build these options at start-up (``daemon.process``,
``daemon.upload``) without importing the MP4/GPMF/CAMM/BlackVue stack, which loads on the
first video instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import tzinfo
from typing import Literal

__all__ = ["DEFAULT_PATTERNS", "VideoGeotagSource", "VideoTrackOptions"]

VideoGeotagSource = Literal["native", "gpx", "nmea"]

#: Side files tried, in order, when none is configured.
DEFAULT_PATTERNS: dict[VideoGeotagSource, tuple[str, ...]] = {
    "native": ("%g.gpx", "%g.nmea", "%g.nma"),
    "gpx": ("%g.gpx",),
    "nmea": ("%g.nmea", "%g.nma"),
}


@dataclass(frozen=True)
class VideoTrackOptions:
    source: VideoGeotagSource = "native"
    #: A file name pattern (``%f``/``%g``/``%e``) or a fixed track file or folder, relative to
    #: the video's folder unless absolute; None = :data:`DEFAULT_PATTERNS`.
    pattern: str | None = None
    #: The zone the camera writes its creation time in; None = UTC, as the format says.
    creation_time_zone: tzinfo | None = None
    #: Seconds to add to the camera's clock (its error).
    offset_time: float = 0.0
