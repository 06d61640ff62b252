"""Frame sampling: still JPEG frames from a video, each geotagged from the video's own track.

This is mapillaryd's ``sample_video`` (mapillary_tools 0.14.7 ``sample_video.py``), in two
halves kept apart:

* **Planning** (pure): :func:`plan_frames` decides which moments of the video become images and
  where the camera was at each, from the video's :class:`~daemon.media.mp4.TimedTrack` and the
  presentation times of its frames. Nothing is read or run.
* **Extraction** (I/O): :func:`probe_frames` lists the frames with ffprobe and
  :func:`extract_frames` has ffmpeg decode exactly the planned frames, in one run, into JPEGs
  whose EXIF then receives the plan's time, position, altitude, heading, make and model
  (the pixels ffmpeg wrote are never re-encoded). :func:`sample_video` chains it all.
  Every subprocess goes through one function, with a timeout.

**Distance mode** (the default, every ``distance_m`` = 3 m, as ``--video_sample_distance``).
Like mapillary_tools, the candidates are the video's frames, in presentation order, whose
time lies within the GPS track (1 ms of slack at both ends); each candidate's position is the
track interpolated at its time; the first candidate is taken, then every candidate whose
straight-line distance (:func:`~daemon.geo.distance.distance_m`, mapillary_tools'
``gps_distance``) from the *last taken frame* is **more** than ``distance_m``. A frame is
therefore taken each time the camera has moved ``distance_m`` away from the previous image,
which on a road is each time the distance travelled passes the next multiple of
``distance_m`` (give or take a frame). The rule measures displacement, not a sum of steps,
on purpose: a parked car's GPS wanders a metre or two around where it stands, and summing
that jitter along the track would invent a frame every few seconds, while the displacement
from the last image stays under the threshold. That is how stationary stretches (a parked
car, a red light) yield no frames: the "drop parked stretches" of frames mode.

**Interval mode** (``interval_s``, mapillary_tools' legacy ``--video_sample_interval``): one
frame per ``interval_s`` seconds of video, the frame nearest each multiple of it from the
start of the video. Stationary stretches are kept.

Where this differs from mapillary_tools, and why:

==========================  ======================================  ===============================
What                        mapillary_tools 0.14.7                  here
==========================  ======================================  ===============================
frame times                 composition time ``(DT + CTTS) / ts``   ffmpeg's presentation time
                            from its own MP4 sample table, edit     (ffprobe), edit list applied;
                            list ignored                            the same when the edit list
                                                                    starts at 0 (GoPro, dashcams)
interval-mode frames        ffmpeg ``fps=1/N``: the last frame      the frame nearest k·N, stamped
                            before (k + ½)·N, stamped k·N (half     with its own time
                            an interval late: 0.467 s for N = 1)
frames outside the track    dropped (distance mode); interval       dropped in both modes (they
                            mode keeps them with no position        could not be geotagged)
heading                     bearing between the two raw GPS         bearing along the track over
                            points around the frame (GPS noise;     >= 2 m each side of the frame
                            0° when they coincide)                  (10 s at most); a stationary
                                                                    frame keeps its neighbour's
UTC time                    GPS time interpolated between points    ``start_time + video time``:
                            (for GoPro GPS5, whose points share     the track's own clock, so a
                            their sample's GPSU, a staircase);      frame and the track agree;
                            else ffprobe ``creation_time -          ``start_time`` (``--video_
                            duration``; interval mode always uses   start_time``) replaces it
                            the latter (often the camera's local
                            time written as UTC)
positions in interval mode  none in EXIF (a later geotag step)      interpolated from the track
track ends                  extrapolated within the 1 ms slack      snapped to the end point
                                                                    (:func:`~daemon.geo.track.
                                                                    locate`)
output                      ``<stem>_<stream>_<n>.jpg``, n = 1..K   ``<stem>_<index:06d>.jpg``,
                            in ``.mly_ffmpeg_*`` then renamed       index = plan index, in
                                                                    ``.<dir>.partial`` then renamed
==========================  ======================================  ===============================

ffmpeg and ffprobe come from ``MAPILLARY_TOOLS_FFMPEG_PATH`` / ``MAPILLARY_TOOLS_FFPROBE_PATH``
(as mapillary_tools), else from ``PATH`` (:func:`find_ffmpeg`). When they are missing,
:func:`require_ffmpeg` raises :class:`FfmpegMissingError` (reason ``ffmpeg_missing``): the
caller holds the video (it is not the video's fault) and says how to install ffmpeg. A failed,
crashed or timed-out ffmpeg/ffprobe raises ``ItemError(reason="frame_extraction_failed")``
naming the video, with the last lines ffmpeg printed.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

import piexif

from daemon.errors import ItemError
from daemon.geo.distance import bearing_deg, distance_m
from daemon.geo.track import TrackFix, locate
from daemon.media.exif import rewrite_exif
from daemon.media.mp4 import TimedPoint, TimedTrack
from daemon.media.video import VideoTrack, read_video_track
from daemon.media.writeback import Geotags, Overwrite, edit_tags, write_atomically

__all__ = [
    "DEFAULT_DISTANCE_M",
    "ENV_FFMPEG",
    "ENV_FFPROBE",
    "EXTRACTION_FAILED",
    "FFMPEG_MISSING",
    "FfmpegMissingError",
    "FramePlan",
    "VideoFrames",
    "extract_frames",
    "find_ffmpeg",
    "frame_name",
    "plan_frames",
    "probe_frames",
    "require_ffmpeg",
    "sample_video",
    "select_expression",
]

#: mapillary_tools' default ``--video_sample_distance``.
DEFAULT_DISTANCE_M = 3.0
#: Slack at both ends of the track for a frame's time (mapillary_tools: MAPCaptureTime's 1 ms).
TRACK_SLACK_S = 0.001
#: Frame spacing assumed when :func:`plan_frames` is given no frame times (29.97 fps).
NOMINAL_FRAME_S = 1001 / 30000
#: Heading: how far (metres) the track is followed on each side of a frame ...
HEADING_REACH_M = 2.0
#: ... and for at most how long (seconds) on each side.
HEADING_WINDOW_S = 10.0
#: A planned time this far (seconds) or more from every frame of the video is refused.
MAX_SNAP_S = 0.5

ENV_FFMPEG = "MAPILLARY_TOOLS_FFMPEG_PATH"
ENV_FFPROBE = "MAPILLARY_TOOLS_FFPROBE_PATH"
FFMPEG_MISSING = "ffmpeg_missing"
EXTRACTION_FAILED = "frame_extraction_failed"

#: ffprobe runs (two per video) are bounded by this many seconds.
PROBE_TIMEOUT_S = 600.0
#: The ffmpeg run is bounded by this many seconds plus :data:`TIMEOUT_PER_VIDEO_S` per second
#: of video up to the last planned frame (decoding 4K HEVC in software on a small board runs
#: several times slower than real time).
TIMEOUT_BASE_S = 120.0
TIMEOUT_PER_VIDEO_S = 10.0
_STDERR_LINES = 8  # ffmpeg's last lines quoted in an error
_SELECT_TOLERANCE_S = 1e-4  # a selected frame's time matches its target within this
_VERSION_TIMEOUT_S = 30.0


class FfmpegMissingError(ItemError):
    """ffmpeg or ffprobe cannot be found or run. Not the video's fault: hold it until it can."""

    reason = FFMPEG_MISSING


# --- planning (pure) ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FramePlan:
    """One frame to extract and what its EXIF will say.

    ``index`` numbers the plans from 0 in time order (the output file is
    :func:`frame_name` of it); ``time_s`` is the frame's presentation time in seconds from the
    start of the video; ``time`` the UTC time written as the capture time; ``lat``/``lon``/
    ``alt`` the track interpolated at ``time_s``; ``heading`` degrees [0, 360) clockwise from
    north, None when the track never moves near the frame; ``frame`` the index of the frame in
    the sorted, distinct ``frame_times`` the plan was made from (None when planned on nominal
    times).
    """

    index: int
    time_s: float
    time: datetime
    lat: float
    lon: float
    alt: float | None
    heading: float | None
    frame: int | None = None


def _candidates(timed: TimedTrack, frame_times: Sequence[float] | None) -> list[float]:
    """Sorted, distinct, finite frame times; a nominal 29.97 fps grid when none are given."""
    if frame_times is not None:
        times = sorted({float(t) for t in frame_times})
        bad = [t for t in times if not math.isfinite(t)]
        if bad:
            raise ValueError(f"frame_times must be finite, got {bad[0]}")
        return times
    end = timed.points[-1].time_s + TRACK_SLACK_S
    count = math.floor(end / NOMINAL_FRAME_S) + 1 if end >= 0 else 0
    return [i * NOMINAL_FRAME_S for i in range(count)]


def _fix(timed: TimedTrack, t: float) -> TrackFix | None:
    """The track at video time ``t`` (None outside it, beyond the 1 ms slack)."""
    first, last = timed.points[0].time_s, timed.points[-1].time_s
    if not first - TRACK_SLACK_S <= t <= last + TRACK_SLACK_S:
        return None
    found = locate(
        timed.track, timed.start_time + timedelta(seconds=t), tolerance_s=2 * TRACK_SLACK_S
    )
    return found if isinstance(found, TrackFix) else None


def _reach(
    points: Sequence[TimedPoint], start: int, step: int, t: float, lat: float, lon: float
) -> TimedPoint | None:
    """Walk the points from ``start`` by ``step`` until one is HEADING_REACH_M from (lat, lon)."""
    i = start
    while 0 <= i < len(points) and abs(points[i].time_s - t) <= HEADING_WINDOW_S:
        p = points[i]
        if distance_m(lat, lon, p.lat, p.lon) >= HEADING_REACH_M:
            return p
        i += step
    return None


def _track_heading(
    points: Sequence[TimedPoint], times: Sequence[float], t: float, lat: float, lon: float
) -> float | None:
    """Direction of travel through (lat, lon) at ``t``: the bearing from the first track point
    at least HEADING_REACH_M behind to the first as far ahead (or from/to the frame itself when
    the track ends on one side); None when the track stays within HEADING_REACH_M of the frame
    for HEADING_WINDOW_S on both sides. ``times`` are the points' times."""
    back = _reach(points, bisect.bisect_left(times, t) - 1, -1, t, lat, lon)
    ahead = _reach(points, bisect.bisect_right(times, t), 1, t, lat, lon)
    if back is not None and ahead is not None:
        return bearing_deg(back.lat, back.lon, ahead.lat, ahead.lon)
    if ahead is not None:
        return bearing_deg(lat, lon, ahead.lat, ahead.lon)
    if back is not None:
        return bearing_deg(back.lat, back.lon, lat, lon)
    return None


def _fill_headings(headings: list[float | None]) -> list[float | None]:
    """A frame without a heading (stationary) takes the previous frame's, else the next's."""
    out = list(headings)
    last: float | None = None
    for i, h in enumerate(out):
        if h is None:
            out[i] = last
        else:
            last = h
    nxt: float | None = None
    for i in range(len(out) - 1, -1, -1):
        if out[i] is None:
            out[i] = nxt
        else:
            nxt = out[i]
    return out


def plan_frames(
    timed: TimedTrack,
    *,
    distance_m: float | None = DEFAULT_DISTANCE_M,
    interval_s: float | None = None,
    start_time: datetime | None = None,
    frame_times: Sequence[float] | None = None,
) -> list[FramePlan]:
    """Which frames of a video to extract, and the time, position and heading of each (pure).

    ``timed`` is the video's track on its own timeline (:attr:`VideoTrack.timed
    <daemon.media.video.VideoTrack.timed>`). ``frame_times`` are the presentation times in
    seconds of the video's frames (:attr:`VideoFrames.times` from :func:`probe_frames`); every
    plan's ``time_s`` is then one of them and ``frame`` its index. Without them a nominal
    29.97 fps grid from 0 s stands in (the extraction then takes the nearest real frame).

    * ``interval_s`` given (> 0): interval mode, ``distance_m`` is ignored. For k = 0, 1, …
      the frame nearest ``k * interval_s`` (the earlier on a tie), once each.
    * otherwise ``distance_m`` (>= 0): distance mode, see the module docstring.

    In both modes only frames within the track's time span (1 ms of slack) are planned. Each
    plan's UTC ``time`` is ``start_time + time_s``; ``start_time`` (timezone-aware) defaults to
    the track's own ``timed.start_time``. Plans are in time order, indexed from 0. The list is
    empty when no frame lies within the track.

    Raises ValueError for a negative or non-finite ``distance_m``, a non-positive
    ``interval_s``, both None, a naive ``start_time`` or non-finite frame times.
    """
    if interval_s is not None:
        if not (math.isfinite(interval_s) and interval_s > 0):
            raise ValueError(f"interval_s must be a positive number of seconds, got {interval_s}")
    elif distance_m is None:
        raise ValueError("give distance_m (distance mode) or interval_s (interval mode)")
    elif not (math.isfinite(distance_m) and distance_m >= 0):
        raise ValueError(f"distance_m must be a number of metres >= 0, got {distance_m}")
    if start_time is not None and (start_time.tzinfo is None or start_time.utcoffset() is None):
        raise ValueError(f"start_time must be timezone-aware, got {start_time.isoformat()}")
    base = (start_time or timed.start_time).astimezone(UTC)
    times = _candidates(timed, frame_times)

    chosen: list[tuple[int, float, TrackFix]] = []  # (candidate index, time, fix)
    if interval_s is not None:
        seen: set[int] = set()
        if times:
            k_max = math.floor(times[-1] / interval_s + 0.5) if times[-1] > 0 else 0
            for k in range(k_max + 1):
                i = _nearest(times, k * interval_s)
                if i in seen:
                    continue
                seen.add(i)
                fix = _fix(timed, times[i])
                if fix is not None:
                    chosen.append((i, times[i], fix))
    else:
        assert distance_m is not None
        last: TrackFix | None = None
        for i, t in enumerate(times):
            fix = _fix(timed, t)
            if fix is None:
                continue
            if last is None or distance_m < _distance(last, fix):
                chosen.append((i, t, fix))
                last = fix

    point_times = [p.time_s for p in timed.points]
    headings = _fill_headings(
        [_track_heading(timed.points, point_times, t, f.lat, f.lon) for _, t, f in chosen]
    )
    return [
        FramePlan(
            index=n,
            time_s=t,
            time=base + timedelta(seconds=t),
            lat=fix.lat,
            lon=fix.lon,
            alt=fix.alt,
            heading=heading,
            frame=i if frame_times is not None else None,
        )
        for n, ((i, t, fix), heading) in enumerate(zip(chosen, headings, strict=True))
    ]


def _distance(a: TrackFix, b: TrackFix) -> float:
    return distance_m(a.lat, a.lon, b.lat, b.lon)


def _nearest(times: Sequence[float], t: float) -> int:
    """Index of the time in sorted ``times`` nearest ``t`` (the earlier one on a tie)."""
    i = bisect.bisect_left(times, t)
    if i == 0:
        return 0
    if i == len(times):
        return len(times) - 1
    return i - 1 if t - times[i - 1] <= times[i] - t else i


def frame_name(video: Path, index: int) -> str:
    """The file name of frame ``index`` of ``video``: ``<stem>_<index:06d>.jpg``."""
    return f"{video.stem}_{index:06d}.jpg"


def select_expression(targets: Sequence[float], tolerance_s: float = _SELECT_TOLERANCE_S) -> str:
    """An ffmpeg ``select`` expression true exactly for frames whose time ``t`` is within
    ``tolerance_s`` of one of the sorted ``targets``: a balanced binary search on ``t``, so
    each frame costs O(log n) comparisons; commas escaped for a filtergraph."""
    if not targets:
        return "0"
    if len(targets) == 1:
        return f"lt(abs(t-{targets[0]:.9f})\\,{tolerance_s:g})"
    mid = len(targets) // 2
    left = select_expression(targets[:mid], tolerance_s)
    right = select_expression(targets[mid:], tolerance_s)
    split = (targets[mid - 1] + targets[mid]) / 2
    return f"if(lt(t\\,{split:.9f})\\,{left}\\,{right})"


# --- ffmpeg and ffprobe: finding them, running them --------------------------------------------


def _executable(candidate: str) -> str | None:
    """``candidate`` (a path or a bare name looked up on PATH) if it is an executable file."""
    found = shutil.which(candidate)
    return str(Path(found).absolute()) if found else None


def _locate_tools() -> tuple[str | None, str | None, list[str]]:
    """(ffmpeg, ffprobe, problems): each absolute path, or None with a problem saying why."""
    problems: list[str] = []
    env_ffmpeg = os.environ.get(ENV_FFMPEG, "").strip()
    if env_ffmpeg:
        ffmpeg = _executable(env_ffmpeg)
        if ffmpeg is None:
            problems.append(f"{ENV_FFMPEG}={env_ffmpeg} is not an executable file")
    else:
        ffmpeg = _executable("ffmpeg")
        if ffmpeg is None:
            problems.append("ffmpeg is not on PATH")
    env_ffprobe = os.environ.get(ENV_FFPROBE, "").strip()
    if env_ffprobe:
        ffprobe = _executable(env_ffprobe)
        if ffprobe is None:
            problems.append(f"{ENV_FFPROBE}={env_ffprobe} is not an executable file")
    else:
        ffprobe = None
        if env_ffmpeg and ffmpeg is not None:  # an ffmpeg given by path: its sibling ffprobe
            sibling = Path(ffmpeg).with_name("ffprobe" + Path(ffmpeg).suffix)
            ffprobe = _executable(str(sibling))
        ffprobe = ffprobe or _executable("ffprobe")
        if ffprobe is None:
            problems.append("ffprobe is not on PATH")
    return ffmpeg, ffprobe, problems


def find_ffmpeg() -> tuple[str, str] | None:
    """(ffmpeg, ffprobe) as absolute paths, or None when either is missing.

    ``MAPILLARY_TOOLS_FFMPEG_PATH`` / ``MAPILLARY_TOOLS_FFPROBE_PATH``, when set, name the
    programs (a path or a name looked up on PATH); a variable that is set but names no
    executable file means *missing* (there is no silent fallback to another ffmpeg). Unset,
    the program is looked up on PATH; an unset ffprobe next to an ffmpeg given by path is
    looked for beside it first.
    """
    ffmpeg, ffprobe, _ = _locate_tools()
    return (ffmpeg, ffprobe) if ffmpeg and ffprobe else None


def require_ffmpeg() -> tuple[str, str]:
    """:func:`find_ffmpeg`, or :class:`FfmpegMissingError` (reason ``ffmpeg_missing``) saying
    what is missing and how to provide it."""
    ffmpeg, ffprobe, problems = _locate_tools()
    if ffmpeg and ffprobe:
        return ffmpeg, ffprobe
    raise FfmpegMissingError(
        "sampling video frames needs ffmpeg and ffprobe, and "
        + "; ".join(problems)
        + f": install ffmpeg (e.g. 'apt install ffmpeg') or set {ENV_FFMPEG} and {ENV_FFPROBE}; "
        "videos to sample are held until then"
    )


def _last_lines(stderr: bytes, count: int = _STDERR_LINES) -> str:
    """ffmpeg's last ``count`` meaningful stderr lines (progress and showinfo left out)."""
    text = stderr.decode("utf-8", errors="replace").replace("\r", "\n")
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and "Parsed_showinfo" not in line and not line.startswith("frame=")
    ]
    return " | ".join(line[:300] for line in lines[-count:]) or "(nothing on stderr)"


def _run(argv: list[str], *, video: Path, what: str, timeout_s: float) -> tuple[bytes, bytes]:
    """Run ffmpeg or ffprobe (the only place a subprocess is started); (stdout, stderr).

    stdin is closed, output captured, the process killed after ``timeout_s``. Raises
    :class:`FfmpegMissingError` when the program cannot be started, ``ItemError(reason=
    "frame_extraction_failed")`` naming ``video`` with the last stderr lines when it fails or
    times out.
    """
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s, check=False
        )
    except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
        raise FfmpegMissingError(
            f"{video}: cannot run {argv[0]} ({exc.strerror or exc}): install ffmpeg or set "
            f"{ENV_FFMPEG} / {ENV_FFPROBE}; the video is held until then"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise ItemError(
            f"{video}: {what} timed out after {timeout_s:g} s and was stopped; its last output: "
            f"{_last_lines(exc.stderr or b'')}",
            reason=EXTRACTION_FAILED,
        ) from exc
    except OSError as exc:
        raise ItemError(
            f"{video}: cannot run {argv[0]}: {exc.strerror or exc}", reason=EXTRACTION_FAILED
        ) from exc
    if done.returncode != 0:
        raise ItemError(
            f"{video}: {what} failed (exit status {done.returncode}): {_last_lines(done.stderr)}",
            reason=EXTRACTION_FAILED,
        )
    return done.stdout, done.stderr


@lru_cache(maxsize=8)
def _ffmpeg_version(ffmpeg: str) -> tuple[int, int] | None:
    """(major, minor) from ``ffmpeg -version``; None for builds that do not say (git builds)."""
    out, _ = _run(
        [ffmpeg, "-hide_banner", "-version"],
        video=Path(ffmpeg),
        what="ffmpeg -version",
        timeout_s=_VERSION_TIMEOUT_S,
    )
    match = re.search(rb"version n?(\d+)\.(\d+)", out)
    return (int(match[1]), int(match[2])) if match else None


def _version_options(ffmpeg: str, script: Path) -> list[str]:
    """The filter-script and passthrough options this ffmpeg understands.

    ``-/filter:v FILE`` replaced ``-filter_script:v FILE`` in ffmpeg 7.0, and ``-fps_mode``
    replaced ``-vsync`` in 5.1 (both old forms are deprecated). Passthrough keeps image2 from
    duplicating selected frames to fill the gaps between them.
    """
    version = _ffmpeg_version(ffmpeg)
    modern = version is None or version >= (7, 0)
    script_opt = ["-/filter:v", str(script)] if modern else ["-filter_script:v", str(script)]
    fps_opt = (
        ["-fps_mode", "passthrough"]
        if version is None or version >= (5, 1)
        else ["-vsync", "passthrough"]
    )
    return [*script_opt, *fps_opt]


# --- probing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoFrames:
    """The video stream frames are taken from and its frames' presentation times.

    ``stream`` is the ffmpeg stream index (the largest picture, as mapillary_tools chooses;
    the first on a tie; cover images left out), ``times`` the presentation times in seconds,
    sorted, as ffmpeg's decoder will stamp the frames (packets marked to discard left out).
    """

    stream: int
    width: int
    height: int
    times: tuple[float, ...]


def probe_frames(video: Path, *, ffprobe: str = "ffprobe") -> VideoFrames:
    """List the frames of ``video``'s main video stream with ffprobe (demuxing only).

    Raises ``ItemError(reason="frame_extraction_failed")`` when ffprobe fails or finds no
    video stream or no timed frame, :class:`FfmpegMissingError` when it cannot be run.
    """
    out, _ = _run(
        [
            ffprobe,
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "stream=index,width,height,time_base:stream_disposition=attached_pic",
            "-of",
            "json",
            str(video),
        ],
        video=video,
        what="ffprobe (streams)",
        timeout_s=PROBE_TIMEOUT_S,
    )
    try:
        streams: list[dict[str, Any]] = json.loads(out or b"{}").get("streams", [])
    except ValueError as exc:
        raise ItemError(
            f"{video}: ffprobe printed no readable stream list", reason=EXTRACTION_FAILED
        ) from exc
    usable = [
        s
        for s in streams
        if not (s.get("disposition") or {}).get("attached_pic")
        and int(s.get("width") or 0) > 0
        and int(s.get("height") or 0) > 0
    ]
    if not usable:
        raise ItemError(f"{video}: ffprobe finds no video stream", reason=EXTRACTION_FAILED)
    best = max(usable, key=lambda s: (int(s["width"]) * int(s["height"]), -int(s["index"])))
    try:
        num, den = (int(x) for x in str(best.get("time_base", "")).split("/"))
        time_base = Fraction(num, den)
    except (ValueError, ZeroDivisionError) as exc:
        raise ItemError(
            f"{video}: ffprobe gives stream {best['index']} no time base", reason=EXTRACTION_FAILED
        ) from exc
    out, _ = _run(
        [
            ffprobe,
            "-v",
            "error",
            "-select_streams",
            str(best["index"]),
            "-show_entries",
            "packet=pts,flags",
            "-of",
            "compact=p=0",
            str(video),
        ],
        video=video,
        what="ffprobe (frames)",
        timeout_s=PROBE_TIMEOUT_S,
    )
    times: set[float] = set()
    for line in out.decode("ascii", errors="replace").splitlines():
        fields = dict(item.partition("=")[::2] for item in line.split("|"))
        pts, flags = fields.get("pts", ""), fields.get("flags", "")
        if "D" in flags or not pts.lstrip("-").isdigit():
            continue
        times.add(float(int(pts) * time_base))
    if not times:
        raise ItemError(
            f"{video}: ffprobe lists no timed frame in stream {best['index']}",
            reason=EXTRACTION_FAILED,
        )
    return VideoFrames(
        int(best["index"]), int(best["width"]), int(best["height"]), tuple(sorted(times))
    )


# --- extraction --------------------------------------------------------------------------------

_SHOWINFO = re.compile(r"Parsed_showinfo.*\bn:\s*(\d+)\s+pts:\s*(\S+)\s+pts_time:\s*(\S+)")


def _targets(video: Path, plans: Sequence[FramePlan], frames: VideoFrames) -> list[float]:
    """The frame time each plan is extracted from: the video frame nearest its ``time_s``."""
    out = []
    for plan in plans:
        t = frames.times[_nearest(frames.times, plan.time_s)]
        if abs(t - plan.time_s) >= MAX_SNAP_S:
            raise ItemError(
                f"{video}: no frame of the video near planned frame {plan.index} at "
                f"{plan.time_s:.3f} s (the nearest is at {t:.3f} s)",
                reason=EXTRACTION_FAILED,
            )
        out.append(t)
    return out


def _run_ffmpeg(
    video: Path,
    targets: list[float],
    raw_dir: Path,
    frames: VideoFrames,
    ffmpeg: str,
    timeout_s: float,
) -> list[Path]:
    """Decode the frames at the sorted distinct ``targets`` times into ``raw_dir`` in one
    ffmpeg run and check that exactly those came out, in order. Returns their paths."""
    raw_dir.mkdir()
    script = raw_dir / "select.txt"
    script.write_text(f"select={select_expression(targets)},showinfo\n", encoding="ascii")
    argv = [
        ffmpeg,
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-loglevel",
        "info",
        "-copyts",  # the filter sees the same timestamps as ffprobe listed
        "-i",
        str(video),
        "-map",
        f"0:{frames.stream}",
        *_version_options(ffmpeg, script),
        "-frames:v",
        str(len(targets)),
        "-q:v",
        "2",  # as mapillary_tools: JPEG quality 2 of 31
        "-f",
        "image2",
        str(raw_dir / "%06d.jpg"),
    ]
    _, stderr = _run(argv, video=video, what="ffmpeg", timeout_s=timeout_s)
    written = sorted(raw_dir.glob("[0-9]*.jpg"))
    if len(written) != len(targets):
        raise ItemError(
            f"{video}: ffmpeg wrote {len(written)} frame(s), {len(targets)} were planned: "
            f"{_last_lines(stderr)}",
            reason=EXTRACTION_FAILED,
        )
    shown = [float(m[3]) for m in _SHOWINFO.finditer(stderr.decode("utf-8", "replace"))]
    if len(shown) == len(targets):  # ffmpeg's own account of which frames it passed
        for got, want in zip(shown, targets, strict=True):
            if abs(got - want) > 1e-3:
                raise ItemError(
                    f"{video}: ffmpeg passed the frame at {got:.6f} s where {want:.6f} s was "
                    "planned",
                    reason=EXTRACTION_FAILED,
                )
    return written


def _with_exif(
    data: bytes, name: str, plan: FramePlan, make: str | None, model: str | None
) -> bytes:
    """The JPEG ffmpeg wrote with the plan's EXIF; only the EXIF segment changes."""
    tags = Geotags(time=plan.time, lat=plan.lat, lon=plan.lon, alt=plan.alt, heading=plan.heading)
    which = Overwrite(time=True, gps=True, direction=True)

    def edit(exif: dict[str, Any]) -> None:
        edit_tags(exif, tags, which)
        zeroth = exif.setdefault("0th", {})
        if make:
            zeroth[piexif.ImageIFD.Make] = make
        if model:
            zeroth[piexif.ImageIFD.Model] = model

    return rewrite_exif(data, name, edit)


def _fsync_dir(path: Path) -> None:
    """Make a directory's entries (creations, renames) durable; a no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _publish(work: Path, out_dir: Path) -> None:
    """Rename the finished ``work`` directory to ``out_dir``, replacing an older one."""
    _fsync_dir(work)
    old = out_dir.with_name(f".{out_dir.name}.old")
    if out_dir.exists():
        shutil.rmtree(old, ignore_errors=True)
        out_dir.rename(old)
    work.rename(out_dir)
    _fsync_dir(out_dir.parent)
    shutil.rmtree(old, ignore_errors=True)


def extract_frames(
    video: Path,
    plans: list[FramePlan],
    out_dir: Path,
    *,
    make: str | None,
    model: str | None,
    ffmpeg: str = "ffmpeg",
    ffprobe: str = "ffprobe",
    frames: VideoFrames | None = None,
    timeout_s: float | None = None,
) -> list[Path]:
    """Extract the planned frames of ``video`` as geotagged JPEGs into ``out_dir``.

    Each plan gives the video frame nearest its ``time_s`` (exactly that frame when the plans
    were made from ``frames.times``); a plan :data:`MAX_SNAP_S` or more from every frame is
    refused. ``frames`` is what :func:`probe_frames` returned for this video; without it
    ``ffprobe`` is run to list them. One ffmpeg run decodes the stream up to the last planned
    frame and writes the selected frames as JPEG (quality 2, as mapillary_tools); each then
    gets, in EXIF only (the pixels are not re-encoded): DateTimeOriginal, SubSecTimeOriginal
    and OffsetTimeOriginal ``+00:00`` (the plan's UTC time), GPS latitude/longitude, altitude
    (when known), image direction (when known), GPS date and time stamps, and Make/Model when
    given.

    The frames are written to ``.<out_dir name>.partial`` beside ``out_dir`` (emptied first),
    synced, and the directory is renamed to ``out_dir`` only when every frame is there,
    replacing an older ``out_dir``: a reader sees all the frames or none. A failure leaves no
    work directory behind. Names are :func:`frame_name` of each plan's index. Returns the
    paths in the order of ``plans``. ffmpeg is stopped after ``timeout_s`` (default
    :data:`TIMEOUT_BASE_S` + :data:`TIMEOUT_PER_VIDEO_S` per second up to the last frame).

    Raises :class:`FfmpegMissingError` when ffmpeg/ffprobe cannot be run;
    ``ItemError(reason="frame_extraction_failed")`` naming the video, with ffmpeg's last
    stderr lines, when it fails, times out or does not deliver exactly the planned frames;
    CorruptMediaError if a frame's EXIF cannot be written; ValueError for repeated plan
    indices.
    """
    indices = [plan.index for plan in plans]
    if len(set(indices)) != len(indices):
        raise ValueError("plan indices must be distinct (they name the files)")
    if plans and frames is None:
        frames = probe_frames(video, ffprobe=ffprobe)
    targets = _targets(video, plans, frames) if frames is not None else []
    distinct = sorted(set(targets))
    if timeout_s is None:
        timeout_s = TIMEOUT_BASE_S + TIMEOUT_PER_VIDEO_S * max(distinct, default=0.0)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        raw: dict[float, Path] = {}
        if distinct:
            assert frames is not None
            written = _run_ffmpeg(video, distinct, work / ".ffmpeg", frames, ffmpeg, timeout_s)
            raw = dict(zip(distinct, written, strict=True))
        names = []
        for plan, target in zip(plans, targets, strict=True):
            name = frame_name(video, plan.index)
            data = raw[target].read_bytes()
            write_atomically(work / name, _with_exif(data, f"{video}#{name}", plan, make, model))
            names.append(name)
        shutil.rmtree(work / ".ffmpeg", ignore_errors=True)
        _publish(work, out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return [out_dir / name for name in names]


def sample_video(
    video: Path,
    out_dir: Path,
    *,
    distance_m: float | None = DEFAULT_DISTANCE_M,
    interval_s: float | None = None,
    start_time: datetime | None = None,
    track: VideoTrack | None = None,
) -> list[Path]:
    """Sample ``video`` into ``out_dir``: find ffmpeg, read the track (unless ``track`` is
    given), list the frames, :func:`plan_frames`, :func:`extract_frames`. Returns the frame
    paths in time order.

    Raises :class:`FfmpegMissingError` (hold the video) before anything else is done when
    ffmpeg or ffprobe is missing; the video's own ``ItemError`` reasons
    (:func:`~daemon.media.video.read_video_track`); ``frame_extraction_failed``.
    """
    ffmpeg, ffprobe = require_ffmpeg()
    if track is None:
        track = read_video_track(video)
    frames = probe_frames(video, ffprobe=ffprobe)
    plans = plan_frames(
        track.timed,
        distance_m=distance_m,
        interval_s=interval_s,
        start_time=start_time,
        frame_times=frames.times,
    )
    return extract_frames(
        video,
        plans,
        out_dir,
        make=track.make or None,
        model=track.model or None,
        ffmpeg=ffmpeg,
        ffprobe=ffprobe,
        frames=frames,
    )
