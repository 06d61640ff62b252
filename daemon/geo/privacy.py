"""Privacy zones: circles around places whose images must never leave the machine (pure).

mapillary_tools has no such thing (its users asked for geofencing and a home radius; see
reference §7 item 11). A :class:`Zone` is a centre and a radius; an image whose position is
within ``radius_m`` metres of the centre (great-circle distance on the mean Earth sphere,
:func:`daemon.geo.distance.haversine_m`; the border itself counts as inside) is rejected with
reason ``privacy_zone``. The message names the zone (its ``name``, or its place in the list
when it has none), never a coordinate, so logs and status pages do not give the place away.

How :func:`daemon.geo.sequence.plan_sequences` uses this: zones are checked before anything
else, so an image inside one is never looked at by any later rule (its position feeds no
heading, speed, duplicate or distance decision), and the sequence is *split* where images
were dropped: the images before and after a stretch inside a zone never share a sequence,
so no sequence line is drawn across the zone and no heading points into it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from daemon.geo.distance import haversine_m
from daemon.geo.validate import PRIVACY_ZONE, Fix, Rejection

__all__ = ["Zone", "check_privacy", "zone_containing"]

F = TypeVar("F", bound=Fix)


@dataclass(frozen=True)
class Zone:
    """A circle of ``radius_m`` metres around (``lat``, ``lon``); ``name`` is for messages.

    Raise ValueError for a centre outside WGS84 ranges or a radius that is not a positive,
    finite number of metres.
    """

    lat: float
    lon: float
    radius_m: float
    name: str = ""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lat) and -90.0 <= self.lat <= 90.0):
            raise ValueError("privacy zone latitude must be within -90..90")
        if not (math.isfinite(self.lon) and -180.0 <= self.lon <= 180.0):
            raise ValueError("privacy zone longitude must be within -180..180")
        if not (math.isfinite(self.radius_m) and self.radius_m > 0):
            raise ValueError("privacy zone radius must be a positive number of metres")

    def contains(self, lat: float, lon: float) -> bool:
        """Whether (lat, lon) is within the zone (the border included)."""
        return haversine_m(self.lat, self.lon, lat, lon) <= self.radius_m


def _label(index: int, zone: Zone) -> str:
    return f'privacy zone "{zone.name}"' if zone.name else f"privacy zone #{index + 1}"


def zone_containing(lat: float, lon: float, zones: Sequence[Zone]) -> int | None:
    """The index of the first zone that contains (lat, lon), or None."""
    return next((i for i, zone in enumerate(zones) if zone.contains(lat, lon)), None)


def check_privacy(fixes: Sequence[F], zones: Sequence[Zone]) -> tuple[list[F], list[Rejection]]:
    """Split ``fixes`` into those outside every zone and a rejection for each one inside.

    The message names the first zone that contains the image, by name (or ``#n``, its
    1-based place in ``zones``), and never its coordinates or the image's.
    """
    kept: list[F] = []
    rejected: list[Rejection] = []
    for fix in fixes:
        index = zone_containing(fix.lat, fix.lon, zones) if zones else None
        if index is None:
            kept.append(fix)
        else:
            message = f"inside {_label(index, zones[index])}: never uploaded"
            rejected.append(Rejection(fix.key, PRIVACY_ZONE, message))
    return kept, rejected
