"""Cutting a batch of geotagged images into Mapillary sequences (pure).

The rules and their order are those of mapillary_tools 0.14.7
``process_sequence_properties.process_sequence_properties`` for images:

1. group by (folder, camera serial, make, model, width, height);
2. sort each group by (capture time, file name);
3. spread shots sharing a capture millisecond evenly over the time to the next shot (at most
   up to the next whole second), so that capture times in a sequence are unique and keep the
   file-name order (``_interpolate_subsecs_for_sorting``);
4. split where the sequence would exceed ``max_images`` images, ``max_bytes`` bytes or
   ``max_pixels`` pixels (1024×1024 assumed for a shot of unknown size), or where the time to
   the previous shot exceeds ``cutoff_time`` seconds;
5. fill in missing headings (:func:`derive_headings`) — before the distance split, so the
   last shot before a distance gap faces the next shot, as in mapillary_tools;
6. split where the distance to the previous shot exceeds ``cutoff_distance`` metres
   (measured as mapillary_tools does, :func:`daemon.geo.distance.distance_m`).

mapillary_tools runs its null-island and duplicate filters before step 5 and its speed and
zig-zag checks before step 6; those are separate concerns here (null island is rejected when
EXIF is read). A caller that filters shots can compose :func:`group_and_sort`,
:func:`split_by_limits`, :func:`with_headings` and :func:`split_by_distance` itself.

One deliberate difference: when any rule splits, every running total starts again from the
shot that starts the new sequence. mapillary_tools forgets to restart the image count when the
*time* rule splits (its image counter runs before the time rule and only resets itself), so a
sequence that follows a time gap can be cut short of ``max_images``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from daemon.geo.distance import bearing_deg, distance_m

__all__ = [
    "Shot",
    "cut_sequences",
    "derive_headings",
    "group_and_sort",
    "split_by_distance",
    "split_by_limits",
    "with_headings",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
#: Pixels counted for a shot whose size is unknown (mapillary_tools' default).
UNKNOWN_SIZE_PIXELS = 1024 * 1024


@dataclass(frozen=True)
class Shot:
    """One image as sequence cutting sees it.

    ``key`` is an opaque identity (a queue id or content hash) handed back untouched; ``time``
    must be timezone-aware; ``size`` is the file size in bytes; ``camera_uuid`` the camera's
    serial (mapillary_tools' ``MAPCameraUUID``), when known.
    """

    key: str
    folder: str
    filename: str
    time: datetime
    lat: float
    lon: float
    heading: float | None
    make: str | None
    model: str | None
    width: int | None
    height: int | None
    size: int
    camera_uuid: str | None = None

    def __post_init__(self) -> None:
        if self.time.utcoffset() is None:
            raise ValueError(f"{self.filename}: shot time must be timezone-aware")


def _micros(dt: datetime) -> int:
    return (dt - _EPOCH) // _US


def _spread_same_millisecond(seq: list[Shot]) -> list[Shot]:
    """Give shots that share a capture millisecond distinct, evenly spaced times.

    A run of n shots starting at t is spread over [t, end) where end is the next shot's time
    or the next whole second, whichever is earlier (mapillary_tools'
    ``_interpolate_subsecs_for_sorting``, computed here in whole microseconds).
    """
    out: list[Shot] = []
    i = 0
    while i < len(seq):
        t0 = _micros(seq[i].time)
        j = i + 1
        while j < len(seq) and _micros(seq[j].time) // 1000 == t0 // 1000:
            j += 1
        n = j - i
        if n == 1:
            out.append(seq[i])
        else:
            end = (t0 // 1_000_000 + 1) * 1_000_000
            if j < len(seq):
                end = min(end, _micros(seq[j].time))
            out.append(seq[i])
            for k in range(1, n):
                spread = _EPOCH + timedelta(microseconds=t0 + k * (end - t0) // n)
                out.append(replace(seq[i + k], time=spread))
        i = j
    return out


def group_and_sort(shots: Iterable[Shot]) -> list[list[Shot]]:
    """Steps 1–3: group, sort each group by (time, filename), spread equal milliseconds.

    Groups come out in order of their first appearance in ``shots``. Shots whose time was
    spread are new :class:`Shot` objects (same ``key``) with a UTC time.
    """
    groups: dict[tuple[object, ...], list[Shot]] = {}
    for shot in shots:
        group_key = (shot.folder, shot.camera_uuid, shot.make, shot.model, shot.width, shot.height)
        groups.setdefault(group_key, []).append(shot)
    return [
        _spread_same_millisecond(sorted(group, key=lambda s: (s.time, s.filename)))
        for group in groups.values()
    ]


def split_by_limits(
    sequences: Iterable[list[Shot]],
    *,
    cutoff_time: float = 60.0,
    max_images: int = 1000,
    max_bytes: int = 110 * 2**30,
    max_pixels: int = 6 * 10**9,
) -> list[list[Shot]]:
    """Step 4: split each (sorted) sequence so that no part has more than ``max_images``
    images, ``max_bytes`` bytes or ``max_pixels`` pixels, and no gap longer than
    ``cutoff_time`` seconds. A shot that alone exceeds a limit gets a sequence of its own."""
    out: list[list[Shot]] = []
    for seq in sequences:
        previous: Shot | None = None
        images = size = pixels = 0
        for shot in seq:
            shot_pixels = (shot.width or 1024) * (shot.height or 1024)
            gap = (shot.time - previous.time).total_seconds() if previous else 0.0
            split = previous is None or (
                images + 1 > max_images
                or gap > cutoff_time
                or size + shot.size > max_bytes
                or pixels + shot_pixels > max_pixels
            )
            if split:
                out.append([])
                images = size = pixels = 0
            out[-1].append(shot)
            images, size, pixels = images + 1, size + shot.size, pixels + shot_pixels
            previous = shot
    return out


def split_by_distance(
    sequences: Iterable[list[Shot]], *, cutoff_distance: float = 100.0
) -> list[list[Shot]]:
    """Step 5: split each sequence where consecutive shots are more than ``cutoff_distance``
    metres apart."""
    out: list[list[Shot]] = []
    for seq in sequences:
        previous: Shot | None = None
        for shot in seq:
            if previous is None or (
                distance_m(previous.lat, previous.lon, shot.lat, shot.lon) > cutoff_distance
            ):
                out.append([])
            out[-1].append(shot)
            previous = shot
    return out


def cut_sequences(
    shots: Iterable[Shot],
    *,
    cutoff_time: float = 60.0,
    cutoff_distance: float = 100.0,
    max_images: int = 1000,
    max_bytes: int = 110 * 2**30,
    max_pixels: int = 6 * 10**9,
) -> list[list[Shot]]:
    """Cut ``shots`` into sequences by the rules in the module docstring (steps 1–6).

    Every shot appears in exactly one sequence. Shots come back with every ``heading`` filled
    in (step 5), and shots that shared a capture millisecond with another come back with
    spread times: persist both if the upload must carry the ``MAPCompassHeading`` and
    ``MAPCaptureTime`` mapillary_tools would. Sequences are in capture order within, and
    sorted by (first shot's time, first shot's filename, folder) — the same output whatever
    the order of ``shots``. The defaults are mapillary_tools': 60 s, 100 m, 1000 images,
    110 GiB, 6 gigapixels.
    """
    limited = split_by_limits(
        group_and_sort(shots),
        cutoff_time=cutoff_time,
        max_images=max_images,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
    )
    sequences = split_by_distance(
        (with_headings(seq) for seq in limited), cutoff_distance=cutoff_distance
    )
    return sorted(sequences, key=lambda s: (s[0].time, s[0].filename, s[0].folder, s[0].key))


def derive_headings(seq: list[Shot]) -> list[float]:
    """The heading of each shot of a sequence, filling the missing ones.

    A shot with a heading keeps it; one without gets the bearing to the next shot; a last
    shot without one copies the (possibly derived) heading before it; a lone shot without one
    gets 0 (mapillary_tools ``geo.interpolate_directions_if_none``).
    """
    headings: list[float] = []
    for i, shot in enumerate(seq):
        if shot.heading is not None:
            headings.append(shot.heading)
        elif i + 1 < len(seq):
            nxt = seq[i + 1]
            headings.append(bearing_deg(shot.lat, shot.lon, nxt.lat, nxt.lon))
        else:
            headings.append(headings[-1] if headings else 0.0)
    return headings


def with_headings(seq: list[Shot]) -> list[Shot]:
    """``seq`` with every missing heading filled in by :func:`derive_headings`."""
    return [
        shot if shot.heading is not None else replace(shot, heading=heading)
        for shot, heading in zip(seq, derive_headings(seq), strict=True)
    ]
