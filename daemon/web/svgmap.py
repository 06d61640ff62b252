"""A small map of tracks as inline SVG, without tiles or any external asset. Pure.

Positions are projected equirectangularly around the tracks' middle latitude (metres east and
north, so shapes are true at the scales of a drive), fitted into the view with a margin, and
drawn as one polyline per sequence coloured by its state, a dot at each start and a scale bar.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape

from daemon.web.tracks import Track

WIDTH, HEIGHT, MARGIN = 600, 360, 24
METRES_PER_DEGREE = 111_320.0
STATE_COLOURS = {
    "done": "#2a9d8f",
    "uploading": "#e9a23b",
    "finishing": "#3a86ff",
    "failed": "#d62828",
}
_NICE = (1, 2, 5)


def render_svg(tracks: Sequence[Track]) -> str:
    """The SVG element for ``tracks`` (a placeholder text when there is nothing to draw)."""
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        'role="img" aria-label="map of recent tracks" class="map">'
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#f4f6f8"/>'
    )
    points = [p for t in tracks for p in t.points]
    if not points:
        return (
            head + f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" '
            'fill="#667">no tracks yet</text></svg>'
        )
    project, metres_per_px = _projection(points)
    parts = [head]
    for t in tracks:
        colour = STATE_COLOURS.get(t.state, "#555")
        xy = [project(lat, lon) for lat, lon in t.points]
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
        label = escape(f"sequence {t.sequence_id[:12]}: {t.images} images, {t.state}")
        parts.append(
            f'<g class="track" data-state="{escape(t.state)}"><title>{label}</title>'
            f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="3" '
            'stroke-linejoin="round" stroke-linecap="round"/>'
            f'<circle cx="{xy[0][0]:.1f}" cy="{xy[0][1]:.1f}" r="4" fill="{colour}"/></g>'
        )
    parts.append(_scale_bar(metres_per_px))
    parts.append("</svg>")
    return "".join(parts)


Projector = Callable[[float, float], tuple[float, float]]


def _projection(points: Sequence[tuple[float, float]]) -> tuple[Projector, float]:
    """(lat, lon) → (x, y) in the view for ``points``, and the metres one view unit stands for."""
    lats = [p[0] for p in points]
    lons = [p[1] for p in points]
    mid_lat = (min(lats) + max(lats)) / 2
    kx = METRES_PER_DEGREE * math.cos(math.radians(mid_lat))
    ky = METRES_PER_DEGREE
    west, east = min(lons) * kx, max(lons) * kx
    south, north = min(lats) * ky, max(lats) * ky
    span = max(east - west, (north - south) * (WIDTH / HEIGHT), 50.0)  # at least 50 m across
    metres_per_px = span / (WIDTH - 2 * MARGIN)
    cx, cy = (west + east) / 2, (south + north) / 2

    def project(lat: float, lon: float) -> tuple[float, float]:
        return (
            WIDTH / 2 + (lon * kx - cx) / metres_per_px,
            HEIGHT / 2 - (lat * ky - cy) / metres_per_px,
        )

    return project, metres_per_px


def _scale_bar(metres_per_px: float) -> str:
    """A bar of a round length (1, 2 or 5 × 10^n m) about a fifth of the view wide."""
    target = metres_per_px * WIDTH / 5
    exponent = math.floor(math.log10(target))
    length = max(n * 10**exponent for n in _NICE if n * 10**exponent <= target)
    px = length / metres_per_px
    text = f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m"
    # Bottom right, out of the way of the tracks' starts (drawn from the left).
    x2, y = WIDTH - MARGIN / 2, HEIGHT - MARGIN / 2
    x1 = x2 - px
    return (
        f'<g class="scale"><line x1="{x1:.1f}" y1="{y}" x2="{x2}" y2="{y}" stroke="#333" '
        f'stroke-width="2"/><text x="{x2}" y="{y - 5}" font-size="12" fill="#333" '
        f'text-anchor="end">{text}</text></g>'
    )
