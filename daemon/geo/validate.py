"""Per-image checks on a cut sequence: null island, duplicates, zig-zag, speed (pure).

Each check takes one sequence (shots sorted by capture time, as
:func:`daemon.geo.sequence.split_by_limits` leaves them) and returns what it keeps plus one
:class:`Rejection` per image it drops. A rejection removes that image only: the rest of its
sequence always goes on. Nothing here reads files or clocks.

The checks and their mapillary_tools 0.14.7 counterparts (``process_sequence_properties``):

* :func:`check_null_island` — ``_check_null_island``: exactly (0, 0) is rejected.
* :func:`check_duplicates` — ``duplication_check``: an image at most ``max_distance`` metres
  from the previous *kept* image, whose heading differs from that image's by at most
  ``max_angle`` degrees (or either heading is unknown), is a duplicate.
* :func:`check_zigzag` — ``_check_sequences_zigzag``: GPS fixes that jump away from the track
  and come back. Same rule and defaults (``ZIGZAG_*`` constants), restated below.
* :func:`check_speed` — replaces ``_check_sequences_by_limits``. mapillary_tools divides the
  length of the whole sequence by its time span and, above 400 km/h, rejects *every* image of
  the sequence (mapillary_tools #783: one bad fix, or a short fragment at a sequence border,
  throws away a good drive). Here the speed is checked per hop between neighbours and only the
  images that make an impossible hop are rejected; see :func:`check_speed` for which ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from daemon.geo.distance import distance_m

__all__ = [
    "DUPLICATE",
    "NULL_ISLAND",
    "PRIVACY_ZONE",
    "TOO_FAST",
    "ZIGZAG",
    "Fix",
    "Rejection",
    "angle_difference",
    "check_duplicates",
    "check_null_island",
    "check_speed",
    "check_zigzag",
    "hop_speed_kmh",
]

#: Reason codes (stable: stored in the queue and shown to users).
NULL_ISLAND = "null_island"
DUPLICATE = "duplicate"
ZIGZAG = "zigzag"
TOO_FAST = "too_fast"
PRIVACY_ZONE = "privacy_zone"


class Fix(Protocol):
    """What the checks read from an image (:class:`daemon.geo.sequence.Shot` is one)."""

    @property
    def key(self) -> str: ...
    @property
    def filename(self) -> str: ...
    @property
    def time(self) -> datetime: ...
    @property
    def lat(self) -> float: ...
    @property
    def lon(self) -> float: ...
    @property
    def heading(self) -> float | None: ...


F = TypeVar("F", bound=Fix)


@dataclass(frozen=True)
class Rejection:
    """Why one image will not be uploaded.

    ``key`` is the image's :attr:`Fix.key`; ``reason`` a stable code (:data:`NULL_ISLAND`,
    :data:`DUPLICATE`, :data:`ZIGZAG`, :data:`TOO_FAST`, :data:`PRIVACY_ZONE`); ``message`` a
    sentence for a person, naming the neighbour and the numbers that decided it.
    """

    key: str
    reason: str
    message: str


def angle_difference(a: float, b: float) -> float:
    """The smaller angle between two compass headings, in [0, 180].

    >>> angle_difference(350.0, 10.0), angle_difference(90.0, 45.0)
    (20.0, 45.0)
    """
    d = abs(b - a) % 360.0
    return 360.0 - d if d > 180.0 else d


def _metres(a: Fix, b: Fix) -> float:
    return distance_m(a.lat, a.lon, b.lat, b.lon)


def _span(metres: float) -> str:
    return f"{metres / 1000:.1f} km" if metres >= 1000 else f"{metres:.1f} m"


def check_null_island(seq: Sequence[F]) -> tuple[list[F], list[Rejection]]:
    """Drop images at exactly (0, 0), where a receiver without a fix puts them."""
    kept: list[F] = []
    rejected: list[Rejection] = []
    for fix in seq:
        if fix.lat == 0 and fix.lon == 0:
            message = f"{fix.filename}: GPS at (0, 0) (null island): the receiver had no fix"
            rejected.append(Rejection(fix.key, NULL_ISLAND, message))
        else:
            kept.append(fix)
    return kept, rejected


def check_duplicates(
    seq: Sequence[F], *, max_distance: float, max_angle: float
) -> tuple[list[F], list[Rejection]]:
    """Drop images that repeat the previous kept image (a car standing at a light).

    An image is a duplicate when it is at most ``max_distance`` metres from the previous kept
    image and their headings differ by at most ``max_angle`` degrees, or either heading is
    unknown. Headings are compared as recorded (before any is derived or offset). The first
    image is always kept, and a duplicate never becomes the reference for the next image.
    """
    kept: list[F] = []
    rejected: list[Rejection] = []
    for fix in seq:
        if not kept:
            kept.append(fix)
            continue
        prev = kept[-1]
        metres = _metres(prev, fix)
        if prev.heading is None or fix.heading is None:
            turn = None
        else:
            turn = angle_difference(prev.heading, fix.heading)
        if metres <= max_distance and (turn is None or turn <= max_angle):
            how = (
                "a heading is unknown"
                if turn is None
                else f"heading {turn:.1f}° apart (≤ {max_angle:g}°)"
            )
            message = (
                f"duplicate of {prev.filename}: {metres:.3f} m from it "
                f"(≤ {max_distance:g} m), {how}"
            )
            rejected.append(Rejection(fix.key, DUPLICATE, message))
        else:
            kept.append(fix)
    return kept, rejected


def check_zigzag(
    seq: Sequence[F], *, window: int = 5, ratio: float = 0.8, min_distance: float = 30.0
) -> tuple[list[F], list[Rejection]]:
    """Drop GPS fixes that jump off the track and come back (mapillary_tools' zig-zag rule).

    For every image ``c`` at least ``window`` images into the sequence, with ``r`` the image
    ``window`` places before it: walking back from the image just before ``c`` towards ``r``
    (exclusive), each image ``j`` is a deviation while the hop from ``j`` to ``c`` is longer
    than ``min_distance`` metres *and* ``c`` is closer to ``r`` than ``ratio`` times the
    distance from ``j`` to ``r`` — the track came back towards where it was, so ``j`` was off
    it. The walk stops at the first image that is not a deviation. Sequences of ``window``
    images or fewer are not checked. Defaults: mapillary_tools' ``ZIGZAG_WINDOW_SIZE`` 5,
    ``ZIGZAG_DEVIATION_THRESHOLD`` 0.8, ``ZIGZAG_MIN_DISTANCE`` 30 m; any deviation counts
    (``ZIGZAG_MIN_DEVIATIONS`` 1).

    Deviations are found on the whole input before any is removed; the images around them
    stay in the sequence.
    """
    found: dict[int, str] = {}
    for c in range(window, len(seq)):
        curr, ref = seq[c], seq[c - window]
        back = _metres(curr, ref)
        for j in range(c - 1, c - window, -1):
            off = seq[j]
            away, hop = _metres(off, ref), _metres(off, curr)
            if not (hop > min_distance and back < away * ratio):
                break
            found.setdefault(
                j,
                f"GPS zig-zag: {off.filename} is {_span(away)} from {ref.filename}, then "
                f"{curr.filename} ({_span(hop)} from it) is back within {_span(back)} of "
                f"{ref.filename} (< {ratio:g} × {_span(away)})",
            )
    kept = [fix for i, fix in enumerate(seq) if i not in found]
    rejected = [Rejection(seq[i].key, ZIGZAG, found[i]) for i in sorted(found)]
    return kept, rejected


def hop_speed_kmh(a: Fix, b: Fix, *, min_interval_s: float = 0.0) -> float:
    """Speed in km/h implied by moving from ``a`` to ``b``, over at least ``min_interval_s``.

    Infinite for a move with no time to make it (zero interval and a positive distance), 0 for
    no move at all.
    """
    metres = _metres(a, b)
    seconds = max((b.time - a.time).total_seconds(), min_interval_s)
    if seconds <= 0:
        return math.inf if metres > 0 else 0.0
    return metres / seconds * 3.6


def check_speed(
    seq: Sequence[F],
    *,
    max_speed_kmh: float = 400.0,
    min_interval_s: float = 1.0,
    max_jump_images: int = 4,
) -> tuple[list[list[F]], list[Rejection]]:
    """Find impossible hops between neighbours; reject the images that make them.

    A *hop* from image ``a`` to the next kept image ``b`` is impossible when it implies more
    than ``max_speed_kmh`` (:func:`hop_speed_kmh`). The time of a hop counts as at least
    ``min_interval_s``: GPS receivers refresh their fix about once a second, so shots taken in
    a burst share a fix and then step to the next one; over a tenth of a second that step
    would look like 500 km/h although the car drove 14 m in the second.

    Walking the sequence with ``a`` the last image kept, at an impossible hop to ``b``:

    1. **Excursion** — if one of the next ``max_jump_images`` images (``b`` included) is
       reachable from ``a`` again, the images from ``b`` up to it are a GPS jump: rejected,
       each with the speed of its hop from ``a``. The walk goes on from the image that came
       back, so one bad fix costs one image.
    2. **Stale start** — else, if the images kept since the start (or the last split) are at
       most ``max_jump_images`` and fewer than the images that follow ``b`` consistently (each
       hop possible, counting up to one more than them), those first images are the jump (a
       receiver reporting the last position it knew before the camera was switched off):
       rejected, and the walk goes on from ``b``.
    3. **Jump away at the end** — else, if ``b`` and every image after it are at most
       ``max_jump_images`` and fewer than the images kept before, they are rejected.
    4. **Discontinuity** — else neither side can be shown to be wrong: the sequence is split
       between ``a`` and ``b`` and nothing is rejected.

    Returns the pieces (kept images, in order; split only by rule 4) and the rejections.
    """
    limit = max_speed_kmh

    def speed(a: F, b: F) -> float:
        return hop_speed_kmh(a, b, min_interval_s=min_interval_s)

    def hop(a: F, b: F) -> str:
        seconds = (b.time - a.time).total_seconds()
        return (
            f"{speed(a, b):,.0f} km/h ({_span(_metres(a, b))} in {seconds:.1f} s) "
            f"between {a.filename} and {b.filename}, over the {max_speed_kmh:g} km/h limit"
        )

    pieces: list[list[F]] = []
    rejected: list[Rejection] = []
    current: list[F] = []
    n, i = len(seq), 0
    while i < n:
        b = seq[i]
        if not current or speed(current[-1], b) <= limit:
            current.append(b)
            i += 1
            continue
        a = current[-1]
        back = next(
            (
                j
                for j in range(i + 1, min(i + max_jump_images, n - 1) + 1)
                if speed(a, seq[j]) <= limit
            ),
            None,
        )
        if back is not None:
            for k in range(i, back):
                rejected.append(
                    Rejection(
                        seq[k].key,
                        TOO_FAST,
                        f"GPS jump: {hop(a, seq[k])}; the track resumes at {seq[back].filename}",
                    )
                )
            i = back
            continue
        run = 1
        while (
            run <= len(current) and i + run < n and speed(seq[i + run - 1], seq[i + run]) <= limit
        ):
            run += 1
        if len(current) <= max_jump_images and run > len(current):
            for fix in current:
                rejected.append(
                    Rejection(
                        fix.key,
                        TOO_FAST,
                        f"GPS jump: {hop(a, b)}; the track goes on from {b.filename}, so the "
                        f"{len(current)} image(s) before the jump, {fix.filename} among them, "
                        "carry a stale or wrong fix",
                    )
                )
            current = []
            continue
        tail = n - i
        if tail <= max_jump_images and tail < len(current):
            for k in range(i, n):
                rejected.append(
                    Rejection(
                        seq[k].key,
                        TOO_FAST,
                        f"GPS jump: {hop(a, seq[k])}; the sequence ends without coming back",
                    )
                )
            break
        pieces.append(current)
        current = []
    if current:
        pieces.append(current)
    return pieces, rejected
