"""daemon.geo.privacy, alone and as the first step of plan_sequences."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from daemon.geo.distance import haversine_m
from daemon.geo.privacy import Zone, check_privacy, zone_containing
from daemon.geo.sequence import SequenceOptions, Shot, plan_sequences
from daemon.geo.validate import PRIVACY_ZONE
from daemon.synth import destination

T0 = datetime(2026, 6, 1, 9, 0, 0, tzinfo=UTC)
BASE = (46.0569, 14.5058)


def shot(key: str, t: float, east: float, north: float = 0.0, **kw: object) -> Shot:
    lat, lon = destination(*BASE, 90.0, east)
    lat, lon = destination(lat, lon, 0.0, north)
    return Shot(
        key=key,
        folder=str(kw.get("folder", "/card/DCIM")),
        filename=f"IMG_{key}.jpg",
        time=T0 + timedelta(seconds=t),
        lat=lat,
        lon=lon,
        heading=kw.get("heading"),  # type: ignore[arg-type]
        make="ACME",
        model="Cam",
        width=1920,
        height=1080,
        size=1000,
    )


def drive(n: int, *, dx: float = 15.0) -> list[Shot]:
    return [shot(f"{i:02d}", i, i * dx) for i in range(n)]


def zone_at(east: float, radius: float, name: str = "home") -> Zone:
    return Zone(*destination(*BASE, 90.0, east), radius, name)


def keys(sequences: list[list[Shot]]) -> list[list[str]]:
    return [[s.key for s in seq] for seq in sequences]


# --- the zone -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lat": 91.0, "lon": 0.0, "radius_m": 10.0}, "latitude"),
        ({"lat": math.nan, "lon": 0.0, "radius_m": 10.0}, "latitude"),
        ({"lat": 0.0, "lon": -180.5, "radius_m": 10.0}, "longitude"),
        ({"lat": 0.0, "lon": 0.0, "radius_m": 0.0}, "radius"),
        ({"lat": 0.0, "lon": 0.0, "radius_m": -5.0}, "radius"),
        ({"lat": 0.0, "lon": 0.0, "radius_m": math.inf}, "radius"),
    ],
)
def test_zone_rejects_nonsense(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Zone(**kwargs)  # type: ignore[arg-type]


def test_zone_border_is_inside() -> None:
    zone = Zone(*BASE, 100.0)
    for bearing in (0.0, 77.0, 180.0, 300.0):
        inside = destination(*BASE, bearing, 99.9)
        outside = destination(*BASE, bearing, 100.1)
        assert zone.contains(*inside) and not zone.contains(*outside)
    # the border itself, measured the way the zone measures
    edge = destination(*BASE, 45.0, 100.0)
    border = Zone(*BASE, haversine_m(*BASE, *edge))
    assert border.contains(*edge)


def test_zone_across_the_antimeridian() -> None:
    zone = Zone(0.0, 179.9999, 50.0)
    assert zone.contains(0.0, -179.9999)  # 22 m away, on the other side of ±180°
    assert not zone.contains(0.0, 179.99)


def test_zone_containing_returns_the_first() -> None:
    zones = [zone_at(1000, 10), zone_at(0, 50, "a"), zone_at(0, 500, "b")]
    assert zone_containing(*BASE, zones) == 1
    assert zone_containing(*destination(*BASE, 90.0, 200), zones) == 2
    assert zone_containing(*destination(*BASE, 0.0, 5000), zones) is None
    assert zone_containing(*BASE, []) is None


def test_check_privacy_message_names_the_zone_never_a_place() -> None:
    home = shot("h", 0, 0)
    kept, found = check_privacy(
        [home, shot("far", 1, 5000), shot("w", 2, 1000)],
        [zone_at(0, 30, "home"), zone_at(1000, 30, "")],
    )
    assert [s.key for s in kept] == ["far"]
    assert [(r.key, r.reason) for r in found] == [("h", PRIVACY_ZONE), ("w", PRIVACY_ZONE)]
    assert '"home"' in found[0].message
    assert "#2" in found[1].message  # an unnamed zone is named by its place in the list
    for r in found:
        # neither the zone's nor the image's coordinates, in any usual spelling
        for value in (home.lat, home.lon):
            for text in (str(value), f"{value:.4f}", f"{value:.3f}", f"{value:.2f}"):
                assert text not in r.message
        assert "46." not in r.message and "14." not in r.message


# --- inside plan_sequences ----------------------------------------------------------------------


def test_images_in_a_zone_are_rejected_and_the_sequence_split_there() -> None:
    shots = drive(20)  # 0..285 m east; the zone covers 115..185 m: images 08..12
    plan = plan_sequences(shots, SequenceOptions(privacy_zones=(zone_at(150, 35),)))
    assert keys(plan.sequences) == [
        [f"{i:02d}" for i in range(8)],
        [f"{i:02d}" for i in range(13, 20)],
    ]
    assert [(r.key, r.reason) for r in plan.rejected] == [
        (f"{i:02d}", PRIVACY_ZONE) for i in range(8, 13)
    ]
    # without the zone, one sequence of 20 (so the split above is the zone's doing)
    assert keys(plan_sequences(shots).sequences) == [[f"{i:02d}" for i in range(20)]]


def test_privacy_comes_before_every_other_rule() -> None:
    # in the zone: a duplicate pair and a null island; all three get the privacy reason
    island = Shot(**{**shot("z", 1.5, 0).__dict__, "lat": 0.0, "lon": 0.0})
    zones = (zone_at(0, 30), Zone(0.0, 0.0, 10.0, "island"))
    shots = [shot("a", 0, 0), shot("b", 1, 0), island, shot("c", 2, 100)]
    plan = plan_sequences(shots, SequenceOptions(privacy_zones=zones))
    assert {r.key: r.reason for r in plan.rejected} == dict.fromkeys("abz", PRIVACY_ZONE)
    assert keys(plan.sequences) == [["c"]]


def test_no_heading_points_into_the_zone() -> None:
    # 05 has no heading and is the last image before the zone: it must not face the next
    # image (inside the zone) nor the first one after it, but copy 04's
    shots = [shot(f"{i:02d}", i, i * 15.0, heading=None) for i in range(12)]
    shots[4] = shot("04", 4, 60.0, heading=123.0)
    plan = plan_sequences(shots, SequenceOptions(privacy_zones=(zone_at(105, 20),)))
    first, second = plan.sequences
    assert [s.key for s in first] == ["00", "01", "02", "03", "04", "05"]
    assert first[-1].heading == pytest.approx(123.0)
    assert second[0].key == "09"


def test_rejected_images_do_not_shape_the_kept_ones() -> None:
    """A shot in a zone that shares a millisecond with a kept one does not move its time."""
    # "IMG_0.jpg" sorts before "IMG_a.jpg": without the zone, a is the second of the run and
    # its time is spread half-way to b; with the zone, a is alone and keeps its own time
    inside, a, b = shot("0", 0.0, 3.0), shot("a", 0.0, 0.0), shot("b", 0.5, 5.0)
    zone = zone_at(3.0, 1.0)
    plan = plan_sequences([inside, a, b], SequenceOptions(privacy_zones=(zone,)))
    times = {s.key: s.time for seq in plan.sequences for s in seq}
    assert times == {"a": a.time, "b": b.time}
    plan = plan_sequences([inside, a, b])
    times = {s.key: s.time for seq in plan.sequences for s in seq}
    assert times["a"] == a.time + timedelta(seconds=0.25)


def test_a_zone_away_from_the_track_changes_nothing() -> None:
    shots = drive(15)
    with_zone = plan_sequences(shots, SequenceOptions(privacy_zones=(zone_at(5000, 500),)))
    assert with_zone == plan_sequences(shots)
