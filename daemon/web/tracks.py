"""The recent tracks the status page draws: each recent sequence's positions, in order."""

from __future__ import annotations

from dataclasses import dataclass

from daemon.store.queue import Queue

MAX_SEQUENCES = 12
MAX_POINTS = 300


@dataclass(frozen=True)
class Track:
    """One sequence's path: ``points`` are (lat, lon) in sequence order, thinned out evenly."""

    sequence_id: str
    state: str
    images: int
    points: tuple[tuple[float, float], ...]


def recent_tracks(
    queue: Queue, limit: int = MAX_SEQUENCES, max_points: int = MAX_POINTS
) -> list[Track]:
    """The ``limit`` most recent sequences with positions, oldest first."""
    seqs = queue.conn.execute(
        "SELECT id, state, image_count FROM sequences ORDER BY created_at DESC, id DESC LIMIT ?",
        (limit,),
    ).fetchall()
    tracks = []
    for s in reversed(seqs):
        rows = queue.conn.execute(
            "SELECT lat, lon FROM items WHERE sequence_id = ? AND lat IS NOT NULL"
            " AND lon IS NOT NULL ORDER BY seq_index",
            (s["id"],),
        ).fetchall()
        points = thin([(float(r["lat"]), float(r["lon"])) for r in rows], max_points)
        if points:
            tracks.append(Track(s["id"], s["state"], int(s["image_count"]), tuple(points)))
    return tracks


def thin(points: list[tuple[float, float]], max_points: int) -> list[tuple[float, float]]:
    """At most ``max_points`` of ``points``, evenly spaced, always keeping the first and last."""
    if len(points) <= max_points or max_points < 2:
        return points[: max(max_points, 0)] if max_points < 2 else points
    step = (len(points) - 1) / (max_points - 1)
    return [points[round(i * step)] for i in range(max_points)]
