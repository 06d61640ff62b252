"""Geotagging, clock offsets and privacy zones through the running daemon.

One in-process :class:`~daemon.service.Service` (real watchdog observers, SQLite queue, the
sandbox on 127.0.0.1) watches four card folders, each written before it starts (found by the
start-up scan) and each configured differently:

* ``gpx``: images without GPS and ``GPS/track.gpx`` on the card; ``geotag_source = "gpx"``,
  ``geotag_source_path = "GPS"`` (relative to the card);
* ``auto``: the same, the camera clock 1 h 0 min 37 s behind, ``offset_time = "auto"``;
* ``ambiguous``: ``offset_time = "auto"``, images at a fixed interval on a steady-speed track:
  no offset can be trusted, so nothing is placed;
* ``zone``: a drive with EXIF GPS passing through a ``[[privacy_zone]]``.

The tests then look at what reached the sandbox and at ``mapillaryd status --json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from daemon import synth
from daemon.config import Config, load_config
from daemon.geo.distance import distance_m
from daemon.sandbox import Sandbox
from tests.e2e.harness import wait_until
from tests.integration.test_process_command import (
    CLOCK_ERROR_S,
    Truth,
    drive,
    gpx_of,
    logger_and_camera_switched_together,
    steady_speed_fixed_interval,
    write_images,
)
from tests.integration.test_service import counts, running

TOKEN = "daemon-geotagging-token-41b"
ZONE_CENTRE = 15  # the frame the privacy zone is centred on
ZONE_RADIUS_M = 28.0  # frames are 8 m apart: frames 12–18 inside, the nearest outside at 32 m


@dataclass(frozen=True)
class Cards:
    """What was put on each card: name → the images' truths (by file name)."""

    gpx: dict[str, Truth]
    auto: dict[str, Truth]
    ambiguous: dict[str, Truth]
    zone: dict[str, synth.Frame]
    in_zone: set[str]


def renamed(prefix: str, truths: list[Truth]) -> list[Truth]:
    return [Truth(f"{prefix}{i:04d}.jpg", t.time, t.lat, t.lon) for i, t in enumerate(truths)]


def write_cards(root: Path) -> Cards:
    # gpx: 20 images on the track's points, 1 s apart, camera clock right
    track = drive(20, seed=21)
    (root / "gpx" / "GPS").mkdir(parents=True)
    gpx_of(root / "gpx" / "GPS" / "track.gpx", track)
    gpx = renamed("GPX_", track)
    write_images(root / "gpx" / "DCIM" / "100CAM", gpx)
    # auto: logger and camera switched on and off together, the camera 1 h 0 min 37 s behind
    s = logger_and_camera_switched_together()
    (root / "auto" / "GPS").mkdir(parents=True)
    gpx_of(root / "auto" / "GPS" / "track.gpx", s.track)
    auto = renamed("AUTO_", s.images)
    write_images(root / "auto" / "DCIM" / "100CAM", auto, clock_error_s=-CLOCK_ERROR_S)
    # ambiguous: a fixed interval at a steady speed, in the middle of the track
    s = steady_speed_fixed_interval()
    (root / "ambiguous" / "GPS").mkdir(parents=True)
    gpx_of(root / "ambiguous" / "GPS" / "track.gpx", s.track)
    ambiguous = renamed("AMB_", s.images)
    write_images(root / "ambiguous" / "DCIM", ambiguous, clock_error_s=-CLOCK_ERROR_S)
    # zone: 30 frames with EXIF GPS, 8 m apart, far from the other cards
    frames = synth.write_drive(
        root / "zone" / "DCIM", 30, prefix="ZONE_", lat=46.2, lon=14.3, spacing_m=8.0, seed=22
    )
    centre = frames[ZONE_CENTRE]
    in_zone = {
        f.path.name
        for f in frames
        if distance_m(f.lat, f.lon, centre.lat, centre.lon) <= ZONE_RADIUS_M
    }
    return Cards(
        {t.name: t for t in gpx},
        {t.name: t for t in auto},
        {t.name: t for t in ambiguous},
        {f.path.name: f for f in frames},
        in_zone,
    )


def write_config(tmp: Path, sandbox: Sandbox, cards: Path, zone: synth.Frame) -> Path:
    watches = {
        "gpx": 'geotag_source = "gpx"\ngeotag_source_path = "GPS"\n',
        "auto": 'geotag_source = "gpx"\ngeotag_source_path = "GPS"\noffset_time = "auto"\n',
        "ambiguous": 'geotag_source = "gpx"\ngeotag_source_path = "GPS"\noffset_time = "auto"\n',
        "zone": "",
    }
    tables = "".join(
        f'[[watch]]\npath = "{cards / name}"\ningest = "copy"\n{extra}\n'
        for name, extra in watches.items()
    )
    path = tmp / "config.toml"
    path.write_text(
        f"""[state]
dir = "{tmp / "state"}"
log_dir = "{tmp / "logs"}"

{tables}
[mapillary]
upload_endpoint = "{sandbox.upload_endpoint}"
graph_endpoint = "{sandbox.graph_endpoint}"

[process]
time_zone = "UTC"
batch_quiet_seconds = 1

[scan]
interval_seconds = 60

[upload]
retry_base_seconds = 0.1
retry_cap_seconds = 0.5

[[privacy_zone]]
lat = {zone.lat!r}
lon = {zone.lon!r}
radius_m = {ZONE_RADIUS_M}
name = "home"
""",
        encoding="utf-8",
    )
    return path


@dataclass(frozen=True)
class Outcome:
    cards: Cards
    cards_dir: Path
    sandbox_dir: Path
    uploaded: dict[str, dict[str, Any]]  # MAPFilename → the description the sandbox holds
    clusters: list[dict[str, Any]]
    status: dict[str, Any]  # ``mapillaryd status --json``


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    tmp = tmp_path_factory.mktemp("daemon_geotagging")
    cards = write_cards(tmp / "cards")
    with Sandbox(tmp / "sandbox", TOKEN) as sandbox:
        config_path = write_config(
            tmp, sandbox, tmp / "cards", cards.zone[f"ZONE_{ZONE_CENTRE:05d}.jpg"]
        )
        cfg: Config = load_config(config_path, env={"MAPILLARY_TOKEN": TOKEN})
        done = len(cards.gpx) + len(cards.auto) + len(cards.zone) - len(cards.in_zone)
        rejected = len(cards.ambiguous) + len(cards.in_zone)
        with running(cfg):
            wait_until(
                lambda: counts(cfg)["done"] == done and counts(cfg)["rejected"] == rejected,
                120,
                f"{done} images uploaded and {rejected} rejected",
            )
        proc = subprocess.run(
            [sys.executable, "-m", "daemon", "status", "--json", "--config", str(config_path)],
            env={**os.environ, "MAPILLARY_TOKEN": TOKEN},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        clusters = sandbox.clusters()
    uploaded = {
        i["description"]["MAPFilename"]: i["description"] for c in clusters for i in c["images"]
    }
    assert len(uploaded) == done, "an image was uploaded twice or not at all"
    yield Outcome(
        cards, tmp / "cards", tmp / "sandbox", uploaded, clusters, json.loads(proc.stdout)
    )


def capture_time(description: dict[str, Any]) -> datetime:
    return datetime.strptime(f"{description['MAPCaptureTime']}Z", "%Y_%m_%d_%H_%M_%S_%f%z")


def not_uploaded(outcome: Outcome, prefix: str) -> dict[str, dict[str, Any]]:
    return {
        Path(r["path"]).name: r
        for r in outcome.status["not_uploaded"]
        if Path(r["path"]).name.startswith(prefix)
    }


def test_a_card_with_a_gpx_track_is_uploaded_with_the_track_positions(outcome: Outcome) -> None:
    gpx = {n: d for n, d in outcome.uploaded.items() if n.startswith("GPX_")}
    assert sorted(gpx) == sorted(outcome.cards.gpx)
    for name, d in gpx.items():
        truth = outcome.cards.gpx[name]
        assert distance_m(d["MAPLatitude"], d["MAPLongitude"], truth.lat, truth.lon) < 0.05, name
        assert capture_time(d) == truth.time, name
    # the track file itself is not an upload, and the card is left as it was
    assert outcome.status["files_seen"] == (
        len(outcome.cards.gpx) + len(outcome.cards.auto) + len(outcome.cards.ambiguous)
        + len(outcome.cards.zone)
    )  # fmt: skip
    assert (outcome.cards_dir / "gpx" / "GPS" / "track.gpx").exists()


def test_auto_offset_places_a_camera_1h_37s_behind(outcome: Outcome) -> None:
    auto = {n: d for n, d in outcome.uploaded.items() if n.startswith("AUTO_")}
    assert sorted(auto) == sorted(outcome.cards.auto)
    for name, d in auto.items():
        truth = outcome.cards.auto[name]
        off = distance_m(d["MAPLatitude"], d["MAPLongitude"], truth.lat, truth.lon)
        assert off < 3.0, (name, off)
        assert abs((capture_time(d) - truth.time).total_seconds()) < 1.0, name


def test_the_status_says_which_offset_was_applied_or_why_none(outcome: Outcome) -> None:
    notes = {Path(n["watch"]).name: n["notes"] for n in outcome.status.get("processing_notes", [])}
    assert sorted(notes) == ["ambiguous", "auto"], notes
    (applied,) = notes["auto"]
    assert "1 h 0 min 37.00 s behind GPS time" in applied and "applied" in applied, applied
    assert "offset +1 h 0 min 37.00 s" in applied, applied
    (refused,) = notes["ambiguous"]
    assert "cannot be determined" in refused and "applied" not in refused, refused


def test_an_ambiguous_offset_places_nothing_and_says_why(outcome: Outcome) -> None:
    assert not [n for n in outcome.uploaded if n.startswith("AMB_")]
    rows = not_uploaded(outcome, "AMB_")
    assert sorted(rows) == sorted(outcome.cards.ambiguous)
    for r in rows.values():
        assert r["state"] == "rejected" and r["reason"] == "offset_ambiguous", r
        assert "the camera clock offset cannot be determined" in r["detail"], r
        assert "the speed hardly changes" in r["detail"], r


def test_images_in_a_privacy_zone_never_leave_the_machine(outcome: Outcome) -> None:
    cards = outcome.cards
    assert len(cards.in_zone) == 7  # frames 12–18
    rows = not_uploaded(outcome, "ZONE_")
    assert sorted(rows) == sorted(cards.in_zone)
    for r in rows.values():
        assert r["state"] == "rejected" and r["reason"] == "privacy_zone", r
        assert 'privacy zone "home"' in r["detail"], r
    # the rest of the drive is uploaded, where it was
    zone = {n: d for n, d in outcome.uploaded.items() if n.startswith("ZONE_")}
    assert sorted(zone) == sorted(set(cards.zone) - cards.in_zone)
    for name, d in zone.items():
        frame = cards.zone[name]
        assert (
            abs(d["MAPLatitude"] - frame.lat) < 1e-6 and abs(d["MAPLongitude"] - frame.lon) < 1e-6
        )
    # the drive is split where the zone was: no sequence is drawn across it
    zone_clusters = sorted(
        sorted(i["description"]["MAPFilename"] for i in c["images"])
        for c in outcome.clusters
        if c["images"][0]["description"]["MAPFilename"].startswith("ZONE_")
    )
    assert zone_clusters == [
        [f"ZONE_{i:05d}.jpg" for i in range(12)],
        [f"ZONE_{i:05d}.jpg" for i in range(19, 30)],
    ]
    # not by name, not by content: the compressed pixels of an image in the zone are nowhere
    # in what the sandbox received (every session's bytes, finished or not)
    received = [p.read_bytes() for p in outcome.sandbox_dir.rglob("*") if p.is_file()]
    assert len(received) > len(zone)
    for name in cards.in_zone:
        data = cards.zone[name].path.read_bytes()
        pixels = data[data.rindex(b"\xff\xda") :]
        assert not any(pixels in blob for blob in received), name
    # and a kept image's pixels are found that way, so the check can see an upload
    kept = cards.zone[min(zone)].path.read_bytes()
    assert any(kept[kept.rindex(b"\xff\xda") :] in blob for blob in received)


def test_time_is_utc_and_untouched_for_exif_positions(outcome: Outcome) -> None:
    """The privacy-zone card geotags from EXIF: its capture times are the cameras' own."""
    for name, d in outcome.uploaded.items():
        if name.startswith("ZONE_"):
            assert capture_time(d) == outcome.cards.zone[name].time.astimezone(UTC), name


def test_images_that_arrive_before_their_track_wait_for_it(tmp_path: Path) -> None:
    """A camera card copied before the GPS logger's file: the images are held (not rejected)
    with a reason, and placed as soon as a track covering them appears on the card — the first
    track covering only half of them, a second one the rest."""
    truths = renamed("LATE_", drive(16, seed=31))
    card = tmp_path / "card"
    write_images(card / "DCIM", truths)
    (tmp_path / "cfg.toml").write_text(
        f"""[state]
dir = "{tmp_path / "state"}"
[[watch]]
path = "{card}"
geotag_source = "gpx"
geotag_source_path = "GPS"
[process]
time_zone = "UTC"
batch_quiet_seconds = 1
[scan]
interval_seconds = 60
""",
        encoding="utf-8",
    )
    with Sandbox(tmp_path / "sandbox", TOKEN) as sandbox:
        env = {
            "MAPILLARY_TOKEN": TOKEN,
            "MAPILLARY_UPLOAD_ENDPOINT": sandbox.upload_endpoint,
            "MAPILLARY_GRAPH_API_ENDPOINT": sandbox.graph_endpoint,
        }
        cfg = load_config(tmp_path / "cfg.toml", env=env)
        with running(cfg):
            wait_until(lambda: counts(cfg)["held"] == 16, 60, "16 images held for a track")
            held = {r["reason"] for r in _status(cfg)["not_uploaded"]}
            assert held == {"no_track"}
            (card / "GPS").mkdir()
            gpx_of(card / "GPS" / "first_half.gpx", drive(16, seed=31)[:8])
            wait_until(lambda: counts(cfg)["done"] == 8, 60, "the first half placed")
            assert counts(cfg)["held"] == 8
            assert {r["reason"] for r in _status(cfg)["not_uploaded"]} == {"outside_track"}
            gpx_of(card / "GPS" / "second_half.gpx", drive(16, seed=31)[8:])
            wait_until(lambda: counts(cfg)["done"] == 16, 60, "the rest placed")
        uploaded = {
            i["description"]["MAPFilename"]: i["description"]
            for c in sandbox.clusters()
            for i in c["images"]
        }
    assert set(uploaded) == {t.name for t in truths}
    for t in truths:
        d = uploaded[t.name]
        assert distance_m(d["MAPLatitude"], d["MAPLongitude"], t.lat, t.lon) < 1.0


def _status(cfg: Config) -> dict[str, Any]:
    from daemon.status import report
    from daemon.store.queue import Queue

    q = Queue.open(cfg.state.database)
    try:
        return report(q)
    finally:
        q.close()
