"""An image's API metadata as plain typed values (pure).

The Graph API omits a field with no value rather than sending null, and has sent raw altitudes
below sea level as unsigned 32-bit integers (4294967281 for −15 m). :func:`parse_image` accepts
any subset of fields and never raises for a missing or odd optional one.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

#: The fields a backup asks for (besides the thumbnail URL); everything goes into the sidecar.
LIST_FIELDS = (
    "id",
    "captured_at",
    "geometry",
    "computed_geometry",
    "altitude",
    "computed_altitude",
    "compass_angle",
    "computed_compass_angle",
    "computed_rotation",
    "sequence",
    "camera_type",
    "camera_parameters",
    "make",
    "model",
    "creator",
    "exif_orientation",
    "width",
    "height",
    "is_pano",
    "atomic_scale",
    "quality_score",
)
QUALITIES = ("256", "1024", "2048", "original")
MAX_ALTITUDE_M = 100_000.0
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class ImageMeta:
    """What a backup uses of one image. ``raw`` keeps every field as the API sent it."""

    id: str
    captured_at_ms: int | None
    lat: float | None
    lon: float | None
    altitude: float | None
    direction: float | None
    sequence: str | None
    camera_type: str | None
    make: str | None
    model: str | None
    creator_username: str | None
    is_pano: bool
    width: int | None
    height: int | None
    raw: dict[str, Any]


def thumb_field(quality: str) -> str:
    """``thumb_<quality>_url``; ValueError for a quality not in :data:`QUALITIES`."""
    if quality not in QUALITIES:
        raise ValueError(f"quality must be one of {', '.join(QUALITIES)}, got {quality!r}")
    return f"thumb_{quality}_url"


def safe_id(value: object) -> str | None:
    """``value`` if it is usable as a file or folder name (ids are digits or base62), else None."""
    return value if isinstance(value, str) and _SAFE_ID.fullmatch(value) else None


def unwrap_altitude(value: object) -> float | None:
    """Metres above sea level, undoing the unsigned 32-bit wrap; None if absent or absurd."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    alt = float(value)
    if alt >= 2**31:
        alt -= 2**32
    return alt if abs(alt) <= MAX_ALTITUDE_M else None


def _point(value: object) -> tuple[float, float] | None:
    if not isinstance(value, dict):
        return None
    coords = value.get("coordinates")
    if not isinstance(coords, list) or len(coords) < 2:
        return None
    lon, lat = coords[0], coords[1]
    if not all(isinstance(c, int | float) and not isinstance(c, bool) for c in (lon, lat)):
        return None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180) or (lat == 0 and lon == 0):
        return None
    return float(lat), float(lon)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _text(value: object) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_image(raw: dict[str, Any]) -> ImageMeta:
    """The typed view of one API image. Raise ValueError if it has no usable ``id``.

    Position: the raw ``geometry`` (what the camera recorded), else ``computed_geometry``.
    Altitude: the raw one (the computed one is known to be wrong), else computed. Direction:
    raw ``compass_angle``, else computed, normalised to [0, 360).
    """
    image_id = safe_id(raw.get("id"))
    if image_id is None:
        raise ValueError(f"image without a usable id: {str(raw.get('id'))[:40]!r}")
    point = _point(raw.get("geometry")) or _point(raw.get("computed_geometry"))
    altitude = unwrap_altitude(raw.get("altitude"))
    if altitude is None:
        altitude = unwrap_altitude(raw.get("computed_altitude"))
    direction = _number(raw.get("compass_angle"))
    if direction is None:
        direction = _number(raw.get("computed_compass_angle"))
    creator = raw.get("creator")
    camera_type = _text(raw.get("camera_type"))
    captured = _int(raw.get("captured_at"))
    return ImageMeta(
        id=image_id,
        captured_at_ms=captured if captured is not None and captured > 0 else None,
        lat=point[0] if point else None,
        lon=point[1] if point else None,
        altitude=altitude,
        direction=direction % 360.0 if direction is not None else None,
        sequence=safe_id(raw.get("sequence")),
        camera_type=camera_type,
        make=_text(raw.get("make")),
        model=_text(raw.get("model")),
        creator_username=_text(creator.get("username")) if isinstance(creator, dict) else None,
        is_pano=raw.get("is_pano") is True or camera_type in ("spherical", "equirectangular"),
        width=_int(raw.get("width")),
        height=_int(raw.get("height")),
        raw={k: v for k, v in raw.items() if not k.startswith("thumb_")},
    )
