"""daemon.geo.validate: null island, duplicates, zig-zag and the per-hop speed check."""

from __future__ import annotations

import doctest
import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

import daemon.geo.validate
from daemon.geo.distance import distance_m
from daemon.geo.validate import (
    DUPLICATE,
    NULL_ISLAND,
    TOO_FAST,
    ZIGZAG,
    Rejection,
    angle_difference,
    check_duplicates,
    check_null_island,
    check_speed,
    check_zigzag,
    hop_speed_kmh,
)
from daemon.synth import destination

T0 = datetime(2026, 6, 1, 9, 0, 0, tzinfo=UTC)
BASE = (46.0569, 14.5058)


@dataclass(frozen=True)
class P:
    """A minimal :class:`daemon.geo.validate.Fix`."""

    key: str
    filename: str
    time: datetime
    lat: float
    lon: float
    heading: float | None = None


def at(
    key: str, t: float, east: float = 0.0, north: float = 0.0, heading: float | None = None
) -> P:
    """Image ``key`` at ``t`` seconds, ``east``/``north`` metres from BASE."""
    lat, lon = destination(*BASE, 90.0, east)
    lat, lon = destination(lat, lon, 0.0, north)
    return P(key, f"IMG_{key}.jpg", T0 + timedelta(seconds=t), lat, lon, heading)


def drive(n: int, *, dt: float = 1.0, dx: float = 15.0, start: int = 0) -> list[P]:
    """``n`` images ``dt`` s and ``dx`` m apart, eastwards (54 km/h by default)."""
    return [at(f"{i:02d}", i * dt, i * dx) for i in range(start, start + n)]


def moved(p: P, *, east: float = 0.0, north: float = 0.0) -> P:
    lat, lon = destination(p.lat, p.lon, 90.0, east)
    lat, lon = destination(lat, lon, 0.0, north)
    return P(p.key, p.filename, p.time, lat, lon, p.heading)


def keys(items: list[P]) -> list[str]:
    return [p.key for p in items]


def rejected(found: list[Rejection]) -> dict[str, str]:
    return {r.key: r.reason for r in found}


# --- small pieces -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [(0, 0, 0), (10, 20, 10), (20, 10, 10), (350, 10, 20), (10, 350, 20), (0, 180, 180),
     (90, 271, 179), (-10, 10, 20), (400, 40, 0), (0, 725, 5)],
)  # fmt: skip
def test_angle_difference(a: float, b: float, expected: float) -> None:
    assert angle_difference(a, b) == pytest.approx(expected)


def test_doctests() -> None:
    result = doctest.testmod(daemon.geo.validate)
    assert result.attempted >= 1 and result.failed == 0


def test_hop_speed() -> None:
    a, b = at("a", 0, 0), at("b", 2, 100)
    assert hop_speed_kmh(a, b) == pytest.approx(180.0, rel=1e-2)
    assert hop_speed_kmh(a, b, min_interval_s=4.0) == pytest.approx(90.0, rel=1e-2)
    assert hop_speed_kmh(a, at("c", 0, 1)) == float("inf")
    assert hop_speed_kmh(a, at("d", 0, 0)) == 0.0


# --- null island --------------------------------------------------------------------------------


def test_null_island() -> None:
    island = P("z", "IMG_z.jpg", T0, 0.0, 0.0)
    near = P("n", "IMG_n.jpg", T0, 0.0, 1e-7)
    kept, found = check_null_island([at("a", 0), island, near, at("b", 1)])
    assert keys(kept) == ["a", "n", "b"]
    assert rejected(found) == {"z": NULL_ISLAND}
    assert "(0, 0)" in found[0].message


# --- duplicates ---------------------------------------------------------------------------------

DUPLICATE_CASES: list[tuple[str, list[P], list[str]]] = [
    ("same spot, same heading", [at("a", 0, heading=10), at("b", 1, heading=10)], ["b"]),
    ("within the distance", [at("a", 0), at("b", 1, 0.09)], ["b"]),
    ("beyond the distance", [at("a", 0), at("b", 1, 0.11)], []),
    ("heading within the angle", [at("a", 0, heading=10), at("b", 1, heading=14.9)], ["b"]),
    ("heading beyond the angle", [at("a", 0, heading=10), at("b", 1, heading=15.1)], []),
    ("angle measured the short way round", [at("a", 0, heading=358), at("b", 1, heading=2)], ["b"]),
    ("unknown heading on the later image", [at("a", 0, heading=10), at("b", 1)], ["b"]),
    ("unknown heading on the earlier image", [at("a", 0), at("b", 1, heading=10)], ["b"]),
    (
        # c is 0.16 m from a, the previous *kept* image, although only 0.08 m from b
        "compared with the previous kept image, not the previous image",
        [at("a", 0), at("b", 1, 0.08), at("c", 2, 0.16)],
        ["b"],
    ),
    ("a run of stops keeps the first", [at(k, i) for i, k in enumerate("abcd")], ["b", "c", "d"]),
    ("a turn on the spot is kept", [at("a", 0, heading=0), at("b", 1, heading=90)], []),
    ("first image always kept", [at("a", 0)], []),
    ("empty", [], []),
]


@pytest.mark.parametrize(
    ("name", "seq", "dups"), DUPLICATE_CASES, ids=[c[0] for c in DUPLICATE_CASES]
)
def test_duplicates(name: str, seq: list[P], dups: list[str]) -> None:
    kept, found = check_duplicates(seq, max_distance=0.1, max_angle=5.0)
    assert [r.key for r in found] == dups
    assert keys(kept) == [p.key for p in seq if p.key not in dups]
    assert all(r.reason == DUPLICATE for r in found)


def test_duplicate_thresholds_are_parameters() -> None:
    seq = [at("a", 0, heading=0), at("b", 1, 1.0, heading=8)]
    assert check_duplicates(seq, max_distance=0.1, max_angle=5)[1] == []
    assert check_duplicates(seq, max_distance=1.5, max_angle=5)[1] == []
    assert keys(check_duplicates(seq, max_distance=1.5, max_angle=10)[0]) == ["a"]


def test_duplicate_message_names_the_neighbour_and_values() -> None:
    _, (r,) = check_duplicates(
        [at("a", 0, heading=10), at("b", 1, 0.05, heading=12)], max_distance=0.1, max_angle=5
    )
    assert "IMG_a.jpg" in r.message and "0.050 m" in r.message and "2.0°" in r.message
    _, (r,) = check_duplicates([at("a", 0), at("b", 1)], max_distance=0.1, max_angle=5)
    assert "heading is unknown" in r.message


# --- zig-zag ------------------------------------------------------------------------------------


def zig(n: int, off: dict[int, float], *, dx: float = 10.0) -> list[P]:
    """A drive eastwards, ``dx`` m per second, image i pushed ``off[i]`` metres north."""
    return [at(f"{i:02d}", i, i * dx, off.get(i, 0.0)) for i in range(n)]


ZIGZAG_CASES: list[tuple[str, list[P], list[str]]] = [
    ("a straight drive", zig(20, {}), []),
    ("one fix off the road and back", zig(20, {10: 80}), ["10"]),
    (
        "two fixes off the road: the backwards walk finds both",
        zig(20, {10: 80, 11: 85}),
        ["10", "11"],
    ),
    ("back and forth twice", zig(20, {8: 90, 14: -90}), ["08", "14"]),
    # the hop back must be longer than 30 m (this wobble passes the ratio: see parameters)
    ("a small wobble is not a zig-zag", zig(20, {10: 25}, dx=5), []),
    # the first `window` images are never "prev": a deviation at index 2 is not seen
    ("too early in the sequence to see", zig(20, {2: 200}), []),
    ("index 4 is the first that can be seen", zig(20, {4: 200}), ["04"]),
    # a sequence of `window` images or fewer is not checked
    ("short sequence not checked", zig(5, {3: 200}), []),
    ("six images are checked", zig(6, {4: 200}), ["04"]),
    # the last image jumps: there is no later image coming back, so it is not seen
    ("a jump at the very end is not a zig-zag", zig(20, {19: 200}), []),
]


@pytest.mark.parametrize(("name", "seq", "bad"), ZIGZAG_CASES, ids=[c[0] for c in ZIGZAG_CASES])
def test_zigzag(name: str, seq: list[P], bad: list[str]) -> None:
    kept, found = check_zigzag(seq)
    assert [r.key for r in found] == bad
    assert all(r.reason == ZIGZAG for r in found)
    assert keys(kept) == [p.key for p in seq if p.key not in bad]  # the rest stays, in order


def test_zigzag_ratio_boundary() -> None:
    # one image 100 m north of the line; the next is back on it. ref = 5 images (50 m) before
    # the next image; deviation when back-distance < 0.8 × the off image's distance to ref.
    seq = zig(12, {6: 100})
    (off, ref, nxt) = (seq[6], seq[2], seq[7])
    away, back = (
        distance_m(off.lat, off.lon, ref.lat, ref.lon),
        distance_m(nxt.lat, nxt.lon, ref.lat, ref.lon),
    )
    assert back < 0.8 * away
    assert keys(check_zigzag(seq)[0]) == [p.key for p in seq if p.key != "06"]
    just_over = back / away + 1e-3  # a stricter threshold than the ratio of the two
    assert check_zigzag(seq, ratio=back / away - 1e-3)[1] == []
    assert [r.key for r in check_zigzag(seq, ratio=just_over)[1]] == ["06"]


def test_zigzag_parameters() -> None:
    seq = zig(20, {10: 25}, dx=5)  # a 25.5 m hop back
    assert check_zigzag(seq, min_distance=26.0)[1] == []
    assert [r.key for r in check_zigzag(seq, min_distance=25.0)[1]] == ["10"]
    seq = zig(20, {2: 200})
    assert [r.key for r in check_zigzag(seq, window=2)[1]] == ["02"]


def test_zigzag_message_names_neighbours() -> None:
    _, (r,) = check_zigzag(zig(20, {10: 80}))
    assert "IMG_10.jpg" in r.message and "IMG_11.jpg" in r.message and "m" in r.message


# --- speed per hop ------------------------------------------------------------------------------


def jump(seq: list[P], index: int, metres: float) -> list[P]:
    """``seq`` with image ``index`` teleported ``metres`` north."""
    return [moved(p, north=metres) if i == index else p for i, p in enumerate(seq)]


SPEED_CASES: list[tuple[str, list[P], dict[str, float], list[list[str]], list[str]]] = [
    ("a steady drive", drive(10), {}, [keys(drive(10))], []),
    (
        "one bad fix in the middle costs one image",
        jump(drive(10), 5, 2000),
        {},
        [[k for k in keys(drive(10)) if k != "05"]],
        ["05"],
    ),
    (
        "an excursion of several fixes",
        jump(jump(jump(drive(12), 4, 900), 5, 950), 6, 1000),
        {},
        [[k for k in keys(drive(12)) if k not in ("04", "05", "06")]],
        ["04", "05", "06"],
    ),
    (
        "a stale first fix (the camera's last position before it was switched off)",
        [at("00", 0, -20_000), *drive(9, start=1)],
        {},
        [keys(drive(9, start=1))],
        ["00"],
    ),
    (
        "two stale fixes at the start",
        [at("00", 0, -20_000), at("01", 1, -20_000 + 5), *drive(8, start=2)],
        {},
        [keys(drive(8, start=2))],
        ["00", "01"],
    ),
    (
        "a jump away at the very end",
        jump(drive(10), 9, 3000),
        {},
        [keys(drive(9))],
        ["09"],
    ),
    (
        # the track goes on somewhere else and stays: neither side is shown wrong; split
        "a discontinuity splits and rejects nothing",
        [*drive(6), *(moved(p, north=5000) for p in drive(6, start=6))],
        {},
        [keys(drive(6)), keys(drive(6, start=6))],
        [],
    ),
    ("two images, impossible hop: split", [at("a", 0), at("b", 1, 500)], {}, [["a"], ["b"]], []),
    (
        # 10 fps burst with a 1 Hz GPS: the fix steps 25 m between two frames 0.1 s apart
        "a burst across a GPS update is not a jump (1 s floor)",
        [at("a", 0.0, 0), at("b", 0.1, 25), at("c", 0.2, 25.5)],
        {},
        [["a", "b", "c"]],
        [],
    ),
    (
        # …and b→c agrees with each other, so the single image before the jump is the odd one
        "without the floor the same burst is a jump",
        [at("a", 0.0, 0), at("b", 0.1, 25), at("c", 0.2, 25.5)],
        {"min_interval_s": 0.0},
        [["b", "c"]],
        ["a"],
    ),
    (
        "the limit is a parameter",
        drive(5, dx=30),  # 108 km/h
        {"max_speed_kmh": 100.0},
        [["00"], ["01"], ["02"], ["03"], ["04"]],
        [],
    ),
    (
        "an excursion longer than max_jump_images is believed (split, nothing rejected)",
        [*drive(10), *(moved(p, north=3000) for p in drive(3, start=10)), *drive(10, start=13)],
        {"max_jump_images": 2},
        [keys(drive(10)), ["10", "11", "12"], keys(drive(10, start=13))],
        [],
    ),
    (
        "the same excursion within max_jump_images is rejected",
        [*drive(10), *(moved(p, north=3000) for p in drive(3, start=10)), *drive(10, start=13)],
        {"max_jump_images": 3},
        [keys(drive(10)) + keys(drive(10, start=13))],
        ["10", "11", "12"],
    ),
    ("empty", [], {}, [], []),
]


@pytest.mark.parametrize(
    ("name", "seq", "options", "pieces", "bad"), SPEED_CASES, ids=[c[0] for c in SPEED_CASES]
)
def test_speed(
    name: str, seq: list[P], options: dict[str, float], pieces: list[list[str]], bad: list[str]
) -> None:
    parts, found = check_speed(seq, **options)  # type: ignore[arg-type]
    assert [keys(part) for part in parts] == pieces
    assert [r.key for r in found] == bad
    assert all(r.reason == TOO_FAST for r in found)


def test_speed_message_names_speed_and_neighbour() -> None:
    _, (r,) = check_speed(jump(drive(10), 5, 2000))
    assert "IMG_04.jpg" in r.message  # the last good image before the jump
    assert "IMG_06.jpg" in r.message  # where the track resumes
    assert "km/h" in r.message and "400 km/h" in r.message
    assert "7," in r.message  # ≈ 7,200 km/h: 2 km in a second


def test_whole_sequence_average_would_reject_but_per_hop_does_not() -> None:
    """mapillary_tools #783: its average (total length ÷ time span) rejects the lot."""
    seq = [at("00", 0, -20_000), *drive(19, start=1)]
    length = sum(distance_m(a.lat, a.lon, b.lat, b.lon) for a, b in itertools.pairwise(seq))
    average_kmh = length / (seq[-1].time - seq[0].time).total_seconds() * 3.6
    assert average_kmh > 400  # mapillary_tools would reject all 20 images
    parts, found = check_speed(seq)
    assert [keys(p) for p in parts] == [keys(seq[1:])]
    assert [r.key for r in found] == ["00"]
