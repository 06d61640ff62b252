"""daemon.geo.distance and daemon.geo.sequence: measuring, cutting, headings."""

from __future__ import annotations

import doctest
import math
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

import daemon.geo.distance
from daemon.geo.distance import bearing_deg, distance_m, haversine_m
from daemon.geo.sequence import (
    Plan,
    SequenceOptions,
    Shot,
    cut_sequences,
    derive_headings,
    group_and_sort,
    plan_sequences,
)
from daemon.synth import destination

# --- distance and bearing -----------------------------------------------------------------------

# (lat1, lon1, lat2, lon2, mapillary_tools gps_distance, compute_bearing), computed with
# mapillary_tools 0.14.7 geo.py.
REFERENCE = [
    (46.0569, 14.5058, 46.0570, 14.5059, 13.543675093989663, 34.758408831053146),
    (42.1, -11.1, 42.2, -11.3, 19916.285889611147, 304.0631353488957),
    (0.0, 179.9999, 0.0, -179.9999, 22.263898157598355, 90.0),
    (-33.9, 151.2, 51.5, -0.12, 12379617.72529778, 319.10610679249544),
    (89.9, 0.0, 89.9, 180.0, 22338.784341212806, 0.0),
    (10.0, 10.0, 10.0, 10.0, 0.0, 0.0),
]


@pytest.mark.parametrize("case", REFERENCE, ids=lambda c: f"{c[0]},{c[1]}->{c[2]},{c[3]}")
def test_distance_and_bearing_match_mapillary_tools(case: tuple[float, ...]) -> None:
    lat1, lon1, lat2, lon2, distance, bearing = case
    assert distance_m(lat1, lon1, lat2, lon2) == pytest.approx(distance, rel=1e-6, abs=1e-9)
    assert bearing_deg(lat1, lon1, lat2, lon2) == pytest.approx(bearing, rel=1e-6, abs=1e-9)


def test_haversine() -> None:
    assert haversine_m(0.0, 0.0, 0.0, 1.0) == pytest.approx(111_195.08, abs=0.01)
    assert haversine_m(46.0, 14.0, 46.0, 14.0) == 0.0
    # the two measures agree to within the ellipsoid's flattening
    assert haversine_m(42.1, -11.1, 42.2, -11.3) == pytest.approx(19916.29, rel=4e-3)


def test_distance_doctests() -> None:
    result = doctest.testmod(daemon.geo.distance)
    assert result.attempted >= 2 and result.failed == 0


# --- sequence cutting ---------------------------------------------------------------------------

T0 = datetime(2026, 6, 1, 9, 0, 0, tzinfo=UTC)
BASE = (46.0569, 14.5058)


def shot(
    key: str,
    t: float,
    east_m: float = 0.0,
    *,
    folder: str = "/card/DCIM/100",
    make: str | None = "ACME",
    model: str | None = "Dashcam",
    width: int | None = 1920,
    height: int | None = 1080,
    size: int = 1000,
    heading: float | None = None,
    camera_uuid: str | None = None,
) -> Shot:
    lat, lon = destination(*BASE, 90.0, east_m)
    return Shot(
        key=key,
        folder=folder,
        filename=f"IMG_{key}.JPG",
        time=T0 + timedelta(seconds=t),
        lat=lat,
        lon=lon,
        heading=heading,
        make=make,
        model=model,
        width=width,
        height=height,
        size=size,
        camera_uuid=camera_uuid,
    )


def line(n: int, *, dt: float = 1.0, dx: float = 5.0, start: int = 0, **kw: object) -> list[Shot]:
    """n shots one after another, ``dt`` seconds and ``dx`` metres apart."""
    return [
        shot(f"{start + i:03d}", (start + i) * dt, (start + i) * dx, **kw)  # type: ignore[arg-type]
        for i in range(n)
    ]


def keys(sequences: list[list[Shot]]) -> list[list[str]]:
    return [[s.key for s in seq] for seq in sequences]


CASES: list[tuple[str, list[Shot], dict[str, float], list[list[str]]]] = [
    ("empty", [], {}, []),
    ("one shot", [shot("a", 0)], {}, [["a"]]),
    ("one drive", line(4), {}, [["000", "001", "002", "003"]]),
    (
        "time gap of exactly the cutoff does not split",
        [shot("a", 0), shot("b", 60), shot("c", 120.001)],
        {},
        [["a", "b"], ["c"]],
    ),
    (
        "custom cutoff time",
        [shot("a", 0), shot("b", 5), shot("c", 10.5)],
        {"cutoff_time": 5.0},
        [["a", "b"], ["c"]],
    ),
    (
        "distance gap under the cutoff does not split, over it does",
        [shot("a", 0, 0), shot("b", 1, 99.5), shot("c", 2, 200.0)],
        {},
        [["a", "b"], ["c"]],
    ),
    (
        "custom cutoff distance",
        [shot("a", 0, 0), shot("b", 1, 10), shot("c", 2, 30)],
        {"cutoff_distance": 15.0},
        [["a", "b"], ["c"]],
    ),
    (
        "max images",
        line(7),
        {"max_images": 3},
        [["000", "001", "002"], ["003", "004", "005"], ["006"]],
    ),
    (
        "max bytes: reaching the limit is fine, passing it splits",
        [shot("a", 0, size=40), shot("b", 1, size=60), shot("c", 2, size=1)],
        {"max_bytes": 100},
        [["a", "b"], ["c"]],
    ),
    (
        "a file bigger than max bytes stands alone",
        [shot("a", 0, size=10), shot("b", 1, size=500), shot("c", 2, size=10)],
        {"max_bytes": 100},
        [["a"], ["b"], ["c"]],
    ),
    (
        "max pixels",
        [shot("a", 0, width=100, height=100), shot("b", 1, width=100, height=100)],
        {"max_pixels": 15_000},
        [["a"], ["b"]],
    ),
    (
        "unknown size counts as 1024x1024",
        [shot(k, i, width=None, height=None) for i, k in enumerate("abc")],
        {"max_pixels": 2 * 1024 * 1024},
        [["a", "b"], ["c"]],
    ),
    (
        "every count restarts after a time split",
        [*line(2), *line(3, start=100)],
        {"max_images": 3},
        [["000", "001"], ["100", "101", "102"]],
    ),
    (
        "distance is checked after the limits",
        [shot("a", 0, 0), shot("b", 1, 500), shot("c", 2, 505), shot("d", 3, 510)],
        {"max_images": 2},
        [["a"], ["b"], ["c", "d"]],
    ),
    (
        "folders are separate sequences",
        [shot("a", 0, folder="/x"), shot("b", 1, folder="/y"), shot("c", 2, folder="/x")],
        {},
        [["a", "c"], ["b"]],
    ),
    (
        "cameras are separate sequences",
        [
            shot("a", 0),
            shot("b", 1, make="Other"),
            shot("c", 2, model="Other"),
            shot("d", 3, width=640),
            shot("e", 4, height=480),
            shot("f", 5, camera_uuid="SN1"),
            shot("g", 6),
        ],
        {},
        [["a", "g"], ["b"], ["c"], ["d"], ["e"], ["f"]],
    ),
    (
        "sorted by time, then file name",
        [shot("c", 2), shot("b", 0.5), shot("a", 0.5), shot("z", 0)],
        {},
        [["z", "a", "b", "c"]],
    ),
]


@pytest.mark.parametrize(("name", "shots", "options", "expected"), CASES, ids=[c[0] for c in CASES])
def test_cut_sequences(
    name: str, shots: list[Shot], options: dict[str, float], expected: list[list[str]]
) -> None:
    if name.startswith("distance gap"):  # the case is about the line, make sure it is drawn
        a, b, c = shots
        assert distance_m(a.lat, a.lon, b.lat, b.lon) < 100 < distance_m(b.lat, b.lon, c.lat, c.lon)
    result = cut_sequences(shots, **options)  # type: ignore[arg-type]
    assert keys(result) == expected
    assert sorted(s.key for seq in result for s in seq) == sorted(s.key for s in shots)


@pytest.mark.parametrize("seed", range(5))
def test_output_does_not_depend_on_input_order(seed: int) -> None:
    shots = [*line(30, folder="/a"), *line(30, folder="/b", dx=40), *line(5, start=200)]
    shots += [shot("same-1", 7.0, folder="/a"), shot("same-2", 7.0, folder="/a")]
    expected = cut_sequences(shots)
    shuffled = shots[:]
    random.Random(seed).shuffle(shuffled)
    assert cut_sequences(shuffled) == expected
    firsts = [(seq[0].time, seq[0].filename) for seq in expected]
    assert firsts == sorted(firsts)


@pytest.mark.parametrize(
    ("times", "expected_us"),
    [
        # three shots in one second, next shot a whole second later: thirds of a second
        ([0.0, 0.0, 0.0, 1.0], [0, 333_333, 666_666, 1_000_000]),
        # the next shot comes sooner: spread over the time up to it
        ([0.0, 0.0, 0.5], [0, 250_000, 500_000]),
        # the last run spreads up to the next whole second
        ([0.2, 0.2], [200_000, 600_000]),
        # shots in the same millisecond count as equal
        ([0.0, 0.0004, 1.0], [0, 500_000, 1_000_000]),
        # distinct milliseconds are left alone
        ([0.0, 0.001, 0.002], [0, 1000, 2000]),
    ],
)
def test_equal_times_are_spread(times: list[float], expected_us: list[int]) -> None:
    shots = [shot(f"{i}", t) for i, t in enumerate(times)]
    (seq,) = group_and_sort(shots)
    assert [(s.time - T0) // timedelta(microseconds=1) for s in seq] == expected_us
    assert [s.key for s in seq] == [s.key for s in shots]
    assert seq[0] is shots[0]  # the first of a run keeps its time (and identity)


def test_spread_times_feed_the_time_gap() -> None:
    # a and b share a timestamp; b is moved on by half a second, so its gap to d is 59.5 s
    shots = [shot("a", 0), shot("b", 0), shot("d", 60)]
    assert keys(cut_sequences(shots)) == [["a", "b", "d"]]
    shots = [shot("a", 0), shot("b", 0), shot("d", 60.6)]
    assert keys(cut_sequences(shots)) == [["a", "b"], ["d"]]


def test_shot_time_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        replace(shot("a", 0), time=datetime(2026, 6, 1))  # noqa: DTZ001 - the case under test


# --- headings -----------------------------------------------------------------------------------


def test_derive_headings() -> None:
    east = [shot("a", 0, 0), shot("b", 1, 10), shot("c", 2, 20)]
    assert derive_headings(east) == pytest.approx([90.0, 90.0, 90.0], abs=1e-3)
    given = [replace(east[0], heading=12.5), east[1], replace(east[2], heading=400.0)]
    assert derive_headings(given) == pytest.approx([12.5, 90.0, 400.0], abs=1e-3)
    last_missing = [replace(east[0], heading=12.5), replace(east[1], heading=33.0), east[2]]
    assert derive_headings(last_missing) == [12.5, 33.0, 33.0]
    assert derive_headings([east[0]]) == [0.0]
    assert derive_headings([replace(east[0], heading=7.0)]) == [7.0]
    assert derive_headings([]) == []


def test_derived_heading_is_the_bearing_to_the_next_shot() -> None:
    a, b = shot("a", 0, 0), shot("b", 1, 10)
    b = replace(b, lat=a.lat + 0.0001, lon=a.lon)  # due north
    assert derive_headings([a, b]) == pytest.approx([0.0, 0.0], abs=1e-9)
    assert derive_headings([b, a]) == pytest.approx([180.0, 180.0], abs=1e-9)


def test_cut_sequences_fills_headings_before_the_distance_split() -> None:
    a, b = shot("a", 0, 0), shot("b", 1, 10)
    c = replace(shot("c", 2, 10), lat=b.lat + 0.003)  # 330 m due north of b
    d = replace(c, key="d", filename="IMG_d.JPG", time=c.time + timedelta(seconds=1), heading=5.0)
    result = cut_sequences([a, b, c, d])
    assert keys(result) == [["a", "b"], ["c", "d"]]
    headings = [s.heading for seq in result for s in seq]
    # b faces c, the next shot before the distance split (not a copy of a's 90°); c faces d,
    # which stands on the same spot (bearing 0)
    assert headings == pytest.approx([90.0, 0.0, 0.0, 5.0], abs=1e-2)
    assert derive_headings(result[0]) == [s.heading for s in result[0]]


# --- plan_sequences: every rule, in order -----------------------------------------------------


def north_of(s: Shot, metres: float, **changes: object) -> Shot:
    lat, lon = destination(s.lat, s.lon, 0.0, metres)
    return replace(s, lat=lat, lon=lon, **changes)  # type: ignore[arg-type]


def verdicts(plan: Plan) -> dict[str, str]:
    return {r.key: r.reason for r in plan.rejected}


def headings_of(plan: Plan) -> dict[str, float | None]:
    return {s.key: s.heading for seq in plan.sequences for s in seq}


@pytest.mark.parametrize(("name", "shots", "options", "expected"), CASES, ids=[c[0] for c in CASES])
def test_plan_without_rejections_is_the_cut(
    name: str, shots: list[Shot], options: dict[str, float], expected: list[list[str]]
) -> None:
    """With the checks that reject turned off, the plan cuts exactly as cut_sequences."""
    off = {"flag_duplicates": False, "zigzag": False, "max_speed_kmh": math.inf}
    plan = plan_sequences(shots, SequenceOptions(**options, **off))  # type: ignore[arg-type]
    assert plan.rejected == []
    assert keys(plan.sequences) == expected
    assert plan.sequences == cut_sequences(shots, **options)  # type: ignore[arg-type]


ORDER_CASES: list[tuple[str, list[Shot], dict[str, object], list[list[str]], dict[str, str]]] = [
    (
        # null island first: b is then a duplicate of a (the previous *kept* image); were
        # duplicates checked first, z would sit between them and b would survive
        "null island before duplicates",
        [shot("a", 0), replace(shot("z", 1), lat=0.0, lon=0.0), shot("b", 2)],
        {},
        [["a"]],
        {"z": "null_island", "b": "duplicate"},
    ),
    (
        # the time cut comes first: b, 70 s after a on the same spot, starts a new sequence
        # and so is nobody's duplicate
        "time cut before duplicates",
        [shot("a", 0), shot("b", 70)],
        {},
        [["a"], ["b"]],
        {},
    ),
    (
        "duplicates can be turned off",
        [shot("a", 0), shot("b", 1), shot("c", 2, 10)],
        {"flag_duplicates": False},
        [["a", "b", "c"]],
        {},
    ),
    (
        "duplicate thresholds",
        [shot("a", 0, 0, heading=0), shot("b", 1, 1.0, heading=8), shot("c", 2, 20, heading=9)],
        {"duplicate_distance": 1.5, "duplicate_angle": 10},
        [["a", "c"]],
        {"b": "duplicate"},
    ),
    (
        # 80 m off the road and back: 288 km/h, under the speed limit — a zig-zag
        "zig-zag",
        [north_of(s, 80) if s.key == "010" else s for s in line(20, dx=10)],
        {},
        [[f"{i:03d}" for i in range(20) if i != 10]],
        {"010": "zigzag"},
    ),
    (
        "zig-zag can be turned off",
        [north_of(s, 80) if s.key == "010" else s for s in line(20, dx=10)],
        {"zigzag": False},
        [[f"{i:03d}" for i in range(20)]],
        {},
    ),
    (
        # a spike seen by both checks is reported as the zig-zag it is (zig-zag runs first,
        # as the only rule mapillary_tools would have caught it with)
        "zig-zag before speed",
        [north_of(s, 3000) if s.key == "010" else s for s in line(20, dx=10)],
        {},
        [[f"{i:03d}" for i in range(20) if i != 10]],
        {"010": "zigzag"},
    ),
    (
        "speed catches what zig-zag cannot see (too early in the sequence)",
        [north_of(s, 3000) if s.key == "002" else s for s in line(20, dx=10)],
        {},
        [[f"{i:03d}" for i in range(20) if i != 2]],
        {"002": "too_fast"},
    ),
    (
        # mapillary_tools would keep the teleport and cut it into a sequence of its own
        "speed before the distance cut",
        [north_of(s, 3000) if s.key == "002" else s for s in line(20, dx=10)],
        {"zigzag": False, "max_speed_kmh": 1e9},
        [["000", "001"], ["002"], [f"{i:03d}" for i in range(3, 20)]],
        {},
    ),
]


@pytest.mark.parametrize(
    ("name", "shots", "options", "expected", "rejected"),
    ORDER_CASES,
    ids=[c[0] for c in ORDER_CASES],
)
def test_plan_rules_and_order(
    name: str,
    shots: list[Shot],
    options: dict[str, object],
    expected: list[list[str]],
    rejected: dict[str, str],
) -> None:
    plan = plan_sequences(shots, SequenceOptions(**options))  # type: ignore[arg-type]
    assert keys(plan.sequences) == expected
    assert verdicts(plan) == rejected
    placed = [s.key for seq in plan.sequences for s in seq]
    assert sorted(placed + list(rejected)) == sorted(s.key for s in shots)  # each exactly once


def test_headings_are_derived_after_rejections() -> None:
    # a (no heading) is followed by a duplicate a2 on its spot, then b 10 m east: a faces b
    # (90°), not a2 (bearing 0 to the same spot)
    plan = plan_sequences([shot("a", 0, 0), shot("a2", 1, 0), shot("b", 2, 10)])
    assert verdicts(plan) == {"a2": "duplicate"}
    assert headings_of(plan)["a"] == pytest.approx(90.0, abs=1e-3)
    # 009 (no heading) is followed by a zig-zag 80 m north: it faces 011 (east), not 010
    shots = [north_of(s, 80) if s.key == "010" else s for s in line(20, dx=10)]
    plan = plan_sequences(shots)
    assert verdicts(plan) == {"010": "zigzag"}
    assert headings_of(plan)["009"] == pytest.approx(90.0, abs=1e-3)


def test_duplicates_compare_recorded_headings_even_when_interpolating() -> None:
    # b turned 90° on a's spot: not a duplicate, though both headings are then replaced
    shots = [shot("a", 0, 0, heading=0.0), shot("b", 1, 0, heading=90.0), shot("c", 2, 10)]
    plan = plan_sequences(shots, SequenceOptions(interpolate_directions=True))
    assert plan.rejected == []
    # a faces b (same spot: bearing 0), b faces c (east), c copies b
    assert headings_of(plan) == pytest.approx({"a": 0.0, "b": 90.0, "c": 90.0}, abs=1e-3)


@pytest.mark.parametrize(
    ("recorded", "interpolate", "offset", "expected"),
    [
        ([None, None, None], False, 0.0, [90.0, 90.0, 90.0]),
        ([10.0, None, None], False, 0.0, [10.0, 90.0, 90.0]),
        ([10.0, None, 200.0], True, 0.0, [90.0, 90.0, 90.0]),
        ([10.0, None, 200.0], False, 180.0, [190.0, 270.0, 20.0]),  # derived ones too
        ([350.0, None, None], False, 20.0, [10.0, 110.0, 110.0]),  # modulo 360
        ([400.0, None, None], False, 0.0, [40.0, 90.0, 90.0]),  # recorded out of range
        ([10.0, None, None], True, -100.0, [350.0, 350.0, 350.0]),
    ],
)
def test_heading_offset_and_interpolation(
    recorded: list[float | None], interpolate: bool, offset: float, expected: list[float]
) -> None:
    shots = [
        shot(k, i, i * 10.0, heading=h)
        for i, (k, h) in enumerate(zip("abc", recorded, strict=True))
    ]
    plan = plan_sequences(
        shots, SequenceOptions(interpolate_directions=interpolate, offset_angle=offset)
    )
    assert [s.heading for s in plan.sequences[0]] == pytest.approx(expected, abs=1e-3)
    assert all(0.0 <= s.heading < 360.0 for s in plan.sequences[0] if s.heading is not None)


def test_one_bad_fix_never_costs_the_sequence() -> None:
    """mapillary_tools #783: its average speed over the cut rejects every image of it."""
    stale = shot("000", 0, -20_000)  # where the camera was switched off, 20 km back
    shots = [stale, *line(29, dx=15.0, start=1)]
    plan = plan_sequences(shots)
    assert keys(plan.sequences) == [[f"{i:03d}" for i in range(1, 30)]]
    assert verdicts(plan) == {"000": "too_fast"}
    (r,) = plan.rejected
    assert "km/h" in r.message and "IMG_001.JPG" in r.message


def test_plan_does_not_depend_on_input_order() -> None:
    shots = [north_of(s, 80) if s.key == "010" else s for s in line(20, dx=10)]
    shots += [shot("dup", 3.5, 35.0), replace(shot("nul", 4.5), lat=0.0, lon=0.0)]
    shots += [replace(s, key=f"o{s.key}") for s in line(10, folder="/other", dx=15)]
    shots += [replace(s, key=f"x{s.key}", time=s.time + timedelta(hours=1)) for s in line(5)]
    expected = plan_sequences(shots)
    assert expected.rejected and len(expected.sequences) >= 3
    for seed in range(5):
        shuffled = shots[:]
        random.Random(seed).shuffle(shuffled)
        assert plan_sequences(shuffled) == expected


def test_plan_keeps_the_spread_times() -> None:
    plan = plan_sequences([shot("a", 0, 0), shot("b", 0, 5), shot("c", 1, 10)])
    assert [(s.time - T0).total_seconds() for s in plan.sequences[0]] == [0.0, 0.5, 1.0]


def test_plan_contract_errors() -> None:
    with pytest.raises(ValueError, match="distinct keys"):
        plan_sequences([shot("a", 0), shot("a", 1, 10)])
    for bad in (
        {"cutoff_time": -1.0},
        {"duplicate_distance": float("nan")},
        {"max_images": 0},
        {"max_speed_kmh": 0.0},
        {"zigzag_window": 1},
        {"zigzag_ratio": 1.5},
        {"offset_angle": float("inf")},
        {"max_jump_images": 0},
    ):
        with pytest.raises(ValueError):
            SequenceOptions(**bad)
    assert plan_sequences([]) == Plan([], [])
