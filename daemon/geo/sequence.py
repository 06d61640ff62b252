"""Cutting a batch of geotagged images into Mapillary sequences, and validating them (pure).

Two entry points:

* :func:`plan_sequences` — the whole of mapillary_tools 0.14.7 ``process_sequence_properties``
  for images (and the heading offset of its ``process_finalize``): cutting, rejecting images
  with a reason per image, headings. This is what the daemon and ``mapillaryd process`` call.
* :func:`cut_sequences` — cutting only (steps 1–4, 9 and 10 below), every shot kept.

The steps of :func:`plan_sequences`, in order (mapillary_tools' order, except where marked ★):

0. ★ privacy zones (:mod:`daemon.geo.privacy`): images inside a zone are rejected before any
   other rule sees them, and their group is split where they were (step 2½);
1. group by (folder, camera serial, make, model, width, height);
2. sort each group by (capture time, file name); 2½. ★ split where privacy rejects were;
3. spread shots sharing a capture millisecond evenly over the time to the next shot (at most
   up to the next whole second), so that capture times in a sequence are unique and keep the
   file-name order (``_interpolate_subsecs_for_sorting``);
4. split where the sequence would exceed ``max_images`` images, ``max_bytes`` bytes or
   ``max_pixels`` pixels (1024×1024 assumed for a shot of unknown size), or where the time to
   the previous shot exceeds ``cutoff_time`` seconds;
5. null island: reject images at exactly (0, 0);
6. duplicates: reject an image within ``duplicate_distance`` of the previous kept one whose
   heading is within ``duplicate_angle`` or unknown (recorded headings);
7. ★ zig-zag (mapillary_tools: step 9, after the speed check; same rule);
8. ★ speed per hop between neighbours, rejecting only the images that make an impossible
   hop (mapillary_tools: whole sequence by average speed, #783) —
   :func:`daemon.geo.validate.check_speed`; an impossible hop it cannot blame on either side
   splits the sequence instead;
9. headings, within each piece left by steps 2½ and 8: a missing one (every one with
   ``interpolate_directions``) becomes the bearing to the next kept image, the last copies
   the one before it; then ``offset_angle`` is added to
   every heading modulo 360 (mapillary_tools does this in ``process_finalize``, to derived
   headings too). ★ Derived after steps 7–8, so no heading points at a rejected image
   (mapillary_tools derives them between steps 6 and 8);
10. split where the distance to the previous shot exceeds ``cutoff_distance`` metres
    (measured as mapillary_tools does, :func:`daemon.geo.distance.distance_m`) — after the
    headings, so the last shot before a distance gap faces the next shot, as in
    mapillary_tools;
11. order the sequences by their first shot: its index is mapillary_tools'
    ``MAPSequenceUUID``.

★ One more deliberate difference: when any rule splits, every running total starts again from
the shot that starts the new sequence. mapillary_tools forgets to restart the image count when
the *time* rule splits (its image counter runs before the time rule and only resets itself),
so a sequence that follows a time gap can be cut short of ``max_images``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from daemon.geo.distance import bearing_deg, distance_m
from daemon.geo.privacy import Zone, check_privacy
from daemon.geo.validate import (
    Rejection,
    check_duplicates,
    check_null_island,
    check_speed,
    check_zigzag,
)

__all__ = [
    "Plan",
    "Rejection",
    "SequenceOptions",
    "Shot",
    "Zone",
    "cut_sequences",
    "derive_headings",
    "group_and_sort",
    "plan_sequences",
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
    return [_spread_same_millisecond(group) for group in _grouped_and_sorted(shots)]


def _grouped_and_sorted(shots: Iterable[Shot]) -> list[list[Shot]]:
    """Steps 1–2: group, sort each group by (time, filename); times untouched."""
    groups: dict[tuple[object, ...], list[Shot]] = {}
    for shot in shots:
        group_key = (shot.folder, shot.camera_uuid, shot.make, shot.model, shot.width, shot.height)
        groups.setdefault(group_key, []).append(shot)
    return [sorted(group, key=lambda s: (s.time, s.filename)) for group in groups.values()]


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
    """Step 10: split each sequence where consecutive shots are more than ``cutoff_distance``
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
    """Cut ``shots`` into sequences by steps 1–4, 9 and 10 of the module docstring.

    Nothing is rejected and no heading is offset: every shot appears in exactly one sequence.
    Shots come back with every ``heading`` filled in (step 9; a recorded one is kept as it is),
    and shots that shared a capture millisecond with another come back with spread times:
    persist both if the upload must carry the ``MAPCompassHeading`` and ``MAPCaptureTime``
    mapillary_tools would. Sequences are in capture order within, and
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


# --- the whole plan: cutting and validation -----------------------------------------------------


@dataclass(frozen=True)
class SequenceOptions:
    """How :func:`plan_sequences` cuts and validates; defaults are mapillary_tools 0.14.7's.

    mapillary_tools spellings: ``cutoff_time``/``cutoff_distance``/``duplicate_distance``/
    ``duplicate_angle``/``interpolate_directions``/``offset_angle`` are its ``process`` flags;
    ``max_images``/``max_bytes``/``max_pixels`` its ``MAPILLARY_TOOLS_MAX_SEQUENCE_LENGTH``/
    ``…_FILESIZE``/``…_PIXELS``; ``max_speed_kmh`` its ``MAX_CAPTURE_SPEED_KMH``; ``zigzag`` is
    the inverse of ``--skip_zigzag_check`` and ``zigzag_window``/``zigzag_ratio``/
    ``zigzag_min_distance`` its ``ZIGZAG_WINDOW_SIZE``/``…_DEVIATION_THRESHOLD``/
    ``…_MIN_DISTANCE``. Ours only: ``flag_duplicates`` (mapillary_tools always flags them),
    ``speed_min_interval`` and ``max_jump_images`` (see
    :func:`daemon.geo.validate.check_speed`; ``max_speed_kmh=math.inf`` turns the speed check
    off), and ``privacy_zones``.

    Raise ValueError for a value out of range (a negative distance, time or angle, a count
    below 1, a zig-zag window below 2 or ratio outside (0, 1]).
    """

    cutoff_time: float = 60.0
    cutoff_distance: float = 100.0
    max_images: int = 1000
    max_bytes: int = 110 * 2**30
    max_pixels: int = 6 * 10**9
    duplicate_distance: float = 0.1
    duplicate_angle: float = 5.0
    flag_duplicates: bool = True
    interpolate_directions: bool = False
    offset_angle: float = 0.0
    max_speed_kmh: float = 400.0
    speed_min_interval: float = 1.0
    max_jump_images: int = 4
    zigzag: bool = True
    zigzag_window: int = 5
    zigzag_ratio: float = 0.8
    zigzag_min_distance: float = 30.0
    privacy_zones: tuple[Zone, ...] = ()

    def __post_init__(self) -> None:
        for name in (
            "cutoff_time",
            "cutoff_distance",
            "duplicate_distance",
            "duplicate_angle",
            "speed_min_interval",
            "zigzag_min_distance",
        ):
            value = getattr(self, name)
            if math.isnan(value) or value < 0:
                raise ValueError(f"{name} must be a number ≥ 0, not {value!r}")
        for name in ("max_images", "max_bytes", "max_pixels", "max_jump_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)!r}")
        if not self.max_speed_kmh > 0:
            raise ValueError(f"max_speed_kmh must be > 0, not {self.max_speed_kmh!r}")
        if not math.isfinite(self.offset_angle):
            raise ValueError(f"offset_angle must be finite, not {self.offset_angle!r}")
        if self.zigzag_window < 2:
            raise ValueError(f"zigzag_window must be at least 2, not {self.zigzag_window!r}")
        if not 0 < self.zigzag_ratio <= 1:
            raise ValueError(f"zigzag_ratio must be in (0, 1], not {self.zigzag_ratio!r}")


@dataclass(frozen=True)
class Plan:
    """What to upload and what not.

    ``sequences``: the final shots, each exactly as it should be described — spread capture
    time, heading filled in and offset into [0, 360) — grouped and ordered as in
    :func:`cut_sequences` (a sequence's index is mapillary_tools' ``MAPSequenceUUID``).
    ``rejected``: one :class:`Rejection` per image left out, ordered by (capture time, file
    name, folder, key). Every input shot is in exactly one of the two.
    """

    sequences: list[list[Shot]] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def _offset_heading(heading: float, offset: float) -> float:
    turned = (heading + offset) % 360.0
    return 0.0 if turned >= 360.0 else turned  # (-1e-20) % 360 == 360.0 in floating point


def _final(part: list[Shot], opts: SequenceOptions) -> list[Shot]:
    """Step 9 on one piece: headings derived (all of them when interpolating), then offset."""
    if opts.interpolate_directions:
        part = [s if s.heading is None else replace(s, heading=None) for s in part]
    return [
        replace(shot, heading=_offset_heading(heading, opts.offset_angle))
        for shot, heading in zip(part, derive_headings(part), strict=True)
    ]


def plan_sequences(shots: Iterable[Shot], opts: SequenceOptions | None = None) -> Plan:
    """Cut ``shots`` into sequences and reject the images that must not be uploaded.

    The steps and their order are in the module docstring. Rejection reasons:
    ``privacy_zone``, ``null_island``, ``duplicate``, ``zigzag``, ``too_fast``
    (:mod:`daemon.geo.validate`). A rejection removes one image; the rest of its sequence goes
    on — a privacy zone and an impossible hop that cannot be blamed on either side
    (:func:`daemon.geo.validate.check_speed`, rule 4) split it, no other rule but the cuts
    does. The result does not depend on the order of ``shots``.

    Raise ValueError if two shots share a ``key``.
    """
    opts = opts or SequenceOptions()
    shots = list(shots)
    order = {s.key: (s.time, s.filename, s.folder, s.key) for s in shots}
    if len(order) != len(shots):
        raise ValueError("shots must have distinct keys")

    _, rejected = check_privacy(shots, opts.privacy_zones)
    private = {r.key for r in rejected}
    runs: list[list[Shot]] = []
    for group in _grouped_and_sorted(shots):
        run: list[Shot] = []
        for shot in group:
            if shot.key not in private:
                run.append(shot)
            elif run:
                runs.append(run)
                run = []
        if run:
            runs.append(run)

    limited = split_by_limits(
        (_spread_same_millisecond(run) for run in runs),
        cutoff_time=opts.cutoff_time,
        max_images=opts.max_images,
        max_bytes=opts.max_bytes,
        max_pixels=opts.max_pixels,
    )
    sequences: list[list[Shot]] = []
    for seq in limited:
        seq, found = check_null_island(seq)
        rejected += found
        if opts.flag_duplicates:
            seq, found = check_duplicates(
                seq, max_distance=opts.duplicate_distance, max_angle=opts.duplicate_angle
            )
            rejected += found
        if opts.zigzag:
            seq, found = check_zigzag(
                seq,
                window=opts.zigzag_window,
                ratio=opts.zigzag_ratio,
                min_distance=opts.zigzag_min_distance,
            )
            rejected += found
        parts, found = check_speed(
            seq,
            max_speed_kmh=opts.max_speed_kmh,
            min_interval_s=opts.speed_min_interval,
            max_jump_images=opts.max_jump_images,
        )
        rejected += found
        for part in parts:
            sequences += split_by_distance(
                [_final(part, opts)], cutoff_distance=opts.cutoff_distance
            )

    sequences.sort(key=lambda s: (s[0].time, s[0].filename, s[0].folder, s[0].key))
    rejected.sort(key=lambda r: order[r.key])
    return Plan(sequences, rejected)
