"""Per-sequence GeoJSON sidecars: every API field of every archived image, raw and computed.

One FeatureCollection per sequence folder (``<sequence>.geojson``): a Point feature per image at
its raw ``geometry`` (else ``computed_geometry``), with all fields the API sent as properties
(``computed_geometry`` included, ``thumb_*`` URLs left out: they expire) plus ``file``, the
image's name in the folder. Sorted by capture time; written atomically.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any


def feature_collection(rows: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """(archived relative path, API metadata) pairs → a GeoJSON FeatureCollection (pure)."""
    features = []
    for path, meta in sorted(rows, key=lambda r: (r[1].get("captured_at") or 0, r[1].get("id"))):
        geometry = meta.get("geometry") or meta.get("computed_geometry")
        props = {k: v for k, v in meta.items() if not k.startswith("thumb_")}
        props["file"] = PurePosixPath(path).name
        features.append({"type": "Feature", "geometry": geometry, "properties": props})
    return {"type": "FeatureCollection", "features": features}


def render(rows: list[tuple[str, dict[str, Any]]]) -> bytes:
    return json.dumps(feature_collection(rows), indent=1, sort_keys=True).encode() + b"\n"
