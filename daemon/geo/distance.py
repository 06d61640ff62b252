"""Distances and bearings between WGS84 positions (pure).

:func:`distance_m` and :func:`bearing_deg` reproduce mapillary_tools 0.14.7 ``geo.gps_distance``
and ``geo.compute_bearing``, so that sequence cut-offs fall where mapillary_tools puts them.
Note that ``gps_distance`` is not a haversine: it is the straight-line (chord) distance between
the two points on the WGS84 ellipsoid, in Earth-centred coordinates. Over the distances that
matter for sequences (metres to kilometres) it agrees with the great-circle distance to about
0.3 % (the ellipsoid is not a sphere); :func:`haversine_m` is the spherical great-circle
distance for callers that want that.
"""

from __future__ import annotations

import math

__all__ = ["EARTH_RADIUS_M", "bearing_deg", "distance_m", "haversine_m"]

#: Mean Earth radius (IUGG), for :func:`haversine_m`.
EARTH_RADIUS_M = 6_371_008.8
_WGS84_A = 6_378_137.0
_WGS84_B = 6_356_752.314245


def _ecef(lat: float, lon: float) -> tuple[float, float, float]:
    """Earth-centred, Earth-fixed XYZ (metres) of a point on the WGS84 ellipsoid surface."""
    phi, lam = math.radians(lat), math.radians(lon)
    cos_phi, sin_phi = math.cos(phi), math.sin(phi)
    a2, b2 = _WGS84_A**2, _WGS84_B**2
    inv = 1.0 / math.sqrt(a2 * cos_phi**2 + b2 * sin_phi**2)
    k = a2 * inv * cos_phi
    return k * math.cos(lam), k * math.sin(lam), b2 * inv * sin_phi


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Metres between two positions, as mapillary_tools measures them (WGS84 chord).

    >>> round(distance_m(42.1, -11.1, 42.2, -11.3))
    19916
    """
    x1, y1, z1 = _ecef(lat1, lon1)
    x2, y2, z2 = _ecef(lat2, lon2)
    return math.sqrt((x1 - x2) ** 2 + (y1 - y2) ** 2 + (z1 - z2) ** 2)


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle metres between two positions on a sphere of radius EARTH_RADIUS_M."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi, dlam = phi2 - phi1, math.radians(lon2 - lon1)
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlam / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Initial compass bearing from the first position to the second, in [0, 360).

    >>> bearing_deg(0.0, 0.0, 1.0, 0.0), bearing_deg(0.0, 0.0, 0.0, 1.0)
    (0.0, 90.0)
    """
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dlam = math.radians(lon2) - math.radians(lon1)
    if abs(dlam) > math.pi:  # go the short way round across the antimeridian
        dlam = dlam - 2 * math.pi if dlam > 0 else dlam + 2 * math.pi
    y = math.sin(dlam) * math.cos(phi2)
    x = math.cos(phi1) * math.sin(phi2) - math.sin(phi1) * math.cos(phi2) * math.cos(dlam)
    return (math.degrees(math.atan2(y, x)) + 360.0) % 360.0
