"""The archive backup's pure parts: API metadata, layout, EXIF values, sidecars, schedule."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from zoneinfo import ZoneInfo

import piexif
import pytest

from daemon import synth
from daemon.archive.exif_restore import build_exif, dms, local_time, restore
from daemon.archive.layout import image_path, sidecar_path
from daemon.archive.meta import parse_image, unwrap_altitude
from daemon.archive.scheduler import BackupScheduler, cron_trigger, plan
from daemon.archive.sidecar import feature_collection
from daemon.config import BackupConfig, load_config
from daemon.media.jpeg import non_exif_bytes
from daemon.sandbox.cdn import ImageArt, render
from tests.conftest import REPO, ManualClock

API = {
    "id": "1933525276802129",
    "captured_at": 1507560881123,
    "compass_angle": 200.93476466846,
    "sequence": "f1ihYvTZNTEhCCnRjyMAuQ",
    "geometry": {"type": "Point", "coordinates": [-97.743279722222, 30.270651388889]},
    "computed_geometry": {"type": "Point", "coordinates": [-97.7433, 30.2707]},
    "altitude": 4294967281,
    "creator": {"id": "1", "username": "alice"},
    "make": "GoPro",
    "model": "MAX",
}


def fixed_zone(lat: float, lon: float) -> str | None:
    return "America/Chicago"


def test_parse_image_tolerates_missing_fields_and_prefers_raw_values() -> None:
    m = parse_image(API)
    assert (m.lat, m.lon) == (30.270651388889, -97.743279722222)
    assert m.altitude == -15.0
    assert m.direction == pytest.approx(200.93476466846)
    bare = parse_image({"id": "42"})
    assert bare.lat is None and bare.captured_at_ms is None and bare.make is None
    assert not bare.is_pano
    with pytest.raises(ValueError):
        parse_image({"id": "../../etc"})
    computed = parse_image({"id": "7", "computed_geometry": {"coordinates": [1.5, 2.5]}})
    assert (computed.lat, computed.lon) == (2.5, 1.5)


def test_altitude_wrap_is_undone_and_absurd_values_dropped() -> None:
    assert unwrap_altitude(4294967281) == -15
    assert unwrap_altitude(312.5) == 312.5
    assert unwrap_altitude(3_000_000) is None
    assert unwrap_altitude(None) is None and unwrap_altitude(True) is None


def test_layout_is_user_utc_date_sequence_id() -> None:
    m = parse_image(API)
    path = image_path("alice", m, "jpg")
    assert str(path) == "alice/2017-10-09/f1ihYvTZNTEhCCnRjyMAuQ/1933525276802129.jpg"
    assert str(sidecar_path(path.parent)).endswith("f1ihYvTZNTEhCCnRjyMAuQ.geojson")
    assert str(image_path("alice", parse_image({"id": "5"}), "jpg")) == (
        "alice/unknown-date/no-sequence/5.jpg"
    )


@pytest.mark.parametrize("value", [48.777089857534, -46.6333, 0.000001, 179.99999999, -0.5])
def test_dms_seconds_reproduce_the_decimal_within_1e_10_degree(value: float) -> None:
    (d, _), (m, _), (sn, sd) = dms(value)
    back = d + Fraction(m, 60) + Fraction(sn, sd) / 3600
    assert abs(float(back) - abs(value)) < 1e-10
    assert sn < 2**32 and sd < 2**32


def test_exif_holds_local_time_offset_gps_and_artist() -> None:
    m = parse_image(API)
    assert local_time(m, fixed_zone) == datetime(
        2017, 10, 9, 9, 54, 41, 123000, tzinfo=ZoneInfo("America/Chicago")
    )
    exif = piexif.load(build_exif(m, fixed_zone))
    assert exif["Exif"][piexif.ExifIFD.DateTimeOriginal] == b"2017:10:09 09:54:41"
    assert exif["Exif"][piexif.ExifIFD.SubSecTimeOriginal] == b"123"
    assert exif["Exif"][piexif.ExifIFD.OffsetTimeOriginal] == b"-05:00"
    assert exif["GPS"][piexif.GPSIFD.GPSDateStamp] == b"2017:10:09"
    assert exif["GPS"][piexif.GPSIFD.GPSTimeStamp] == ((14, 1), (54, 1), (41123, 1000))
    assert exif["GPS"][piexif.GPSIFD.GPSLatitudeRef] == b"N"
    assert exif["GPS"][piexif.GPSIFD.GPSLongitudeRef] == b"W"
    assert exif["GPS"][piexif.GPSIFD.GPSAltitudeRef] == 1
    assert exif["GPS"][piexif.GPSIFD.GPSAltitude] == (15, 1)
    assert exif["0th"][piexif.ImageIFD.Artist] == b"alice"
    assert piexif.ImageIFD.Orientation not in exif["0th"]


def test_corrupt_served_exif_is_replaced_and_pixels_kept() -> None:
    served = render(ImageArt(seed=3, width=64, height=32, corrupt_exif=True), "original")
    with pytest.raises(Exception):  # noqa: B017 - whatever piexif raises on the broken IFD
        piexif.load(served)
    pano = parse_image({**API, "is_pano": True, "camera_type": "spherical"})
    out = restore(served, pano, fixed_zone, (64, 32))
    assert piexif.load(out)["0th"][piexif.ImageIFD.Make] == b"GoPro"
    assert b'GPano:ProjectionType="equirectangular"' in out
    assert b'GPano:FullPanoWidthPixels="64"' in out
    # Only the EXIF and the added XMP segment differ: tables and scan data are the served ones.
    plain = synth.jpeg_bytes(3, size=(64, 32), quality=85)
    assert non_exif_bytes(out).endswith(plain[plain.index(b"\xff\xdb") :])


def test_sidecar_has_raw_and_computed_geometry_and_no_urls() -> None:
    fc = feature_collection([("a/b/c/1.jpg", {**API, "thumb_original_url": "https://x"})])
    (feature,) = fc["features"]
    assert feature["geometry"] == API["geometry"]
    assert feature["properties"]["computed_geometry"] == API["computed_geometry"]
    assert "thumb_original_url" not in feature["properties"]
    assert feature["properties"]["file"] == "1.jpg"


def test_backup_config_keys_are_all_documented_in_the_example() -> None:
    cfg = load_config(REPO / "config.example.toml", env={})
    assert cfg.backup is not None
    text = (REPO / "config.example.toml").read_text()
    section = text[text.index("\n[backup]") :]
    for name in BackupConfig.__dataclass_fields__:
        assert re.search(rf"\n{name} = ", section), f"[backup] {name} is not documented"


# --- the schedule (point 4: exactly one run, with an injected clock) ---------------------------

ZONE = ZoneInfo("Europe/Ljubljana")
GRACE = timedelta(hours=20)


class Harness:
    """A BackupScheduler on a manual clock, with its 'last fire' kept in memory."""

    def __init__(self, clock: ManualClock, *, synced: bool = True) -> None:
        self.clock = clock
        self.synced = synced
        self.last: datetime | None = None
        self.ran_at: list[datetime] = []
        self.sched = BackupScheduler(
            cron_trigger("0 2 * * *", ZONE),
            clock=clock,
            job=self.job,
            load_last=lambda: self.last,
            save_last=self.save,
            grace=GRACE,
            clock_synced=lambda: self.synced,
        )

    def job(self) -> tuple[str, str | None]:
        self.ran_at.append(self.clock.now())
        return "ok", None

    def save(self, when: datetime) -> None:
        self.last = when

    def ticks(self, n: int, every: float = 30.0) -> None:
        for _ in range(n):
            self.sched.tick()
            self.clock.advance(every)


def local(y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=ZONE).astimezone(UTC)


def test_runs_once_at_the_scheduled_time() -> None:
    h = Harness(ManualClock(local(2026, 6, 1, 1, 50)))
    h.ticks(60)  # 01:50 → 02:20, a tick every 30 s
    assert len(h.ran_at) == 1
    assert local(2026, 6, 1, 2) <= h.ran_at[0] < local(2026, 6, 1, 2, 1)


def test_clock_jump_forward_after_sync_gives_exactly_one_run() -> None:
    # A Pi without RTC boots believing it is 1 June 01:00; NTP then sets 3 June 10:00.
    clock = ManualClock(local(2026, 6, 1, 1, 0))
    h = Harness(clock, synced=False)
    h.last = local(2026, 5, 31, 2)  # its last run, kept in the index
    h.ticks(200)  # 100 minutes of bogus time, past the bogus 02:00: nothing runs unsynced
    assert h.ran_at == []
    clock.wall = local(2026, 6, 3, 10, 0)
    h.synced = True
    h.ticks(100)
    assert len(h.ran_at) == 1  # the missed 02:00 runs coalesce into one
    h.ticks(2 * 60 * 24)  # the next day: the regular 02:00 run
    assert len(h.ran_at) == 2


def test_wake_up_after_a_missed_two_oclock_runs_once() -> None:
    clock = ManualClock(local(2026, 6, 1, 1, 59))
    h = Harness(clock)
    h.ticks(4)
    assert len(h.ran_at) == 1
    clock.wall = local(2026, 6, 2, 7, 30)  # off (or asleep) from 23:00 to 07:30
    restarted = Harness(clock)
    restarted.last = h.last  # what the index kept
    restarted.ticks(120)
    assert len(restarted.ran_at) == 1


def test_a_miss_older_than_the_grace_is_skipped_not_run() -> None:
    p = plan(cron_trigger("0 2 * * *", ZONE), local(2026, 6, 1, 2), local(2026, 6, 5, 1), GRACE)
    assert not p.run and p.skipped == 3 and p.next_run == local(2026, 6, 5, 2)


def test_failed_run_is_retried_after_the_retry_delay_only(tmp_path: Path) -> None:
    clock = ManualClock(local(2026, 6, 1, 1, 59))
    results = iter([("failed", "disk full: 0 MB free"), ("ok", None)])
    calls: list[datetime] = []

    def job() -> tuple[str, str | None]:
        calls.append(clock.now())
        return next(results)

    last: list[datetime] = []
    sched = BackupScheduler(
        cron_trigger("0 2 * * *", ZONE),
        clock=clock,
        job=job,
        load_last=lambda: last[-1] if last else None,
        save_last=last.append,
        grace=GRACE,
        clock_synced=lambda: True,
        retry_after=600,
    )
    for _ in range(60):  # 30 minutes
        sched.tick()
        clock.advance(30)
    assert len(calls) == 2 and timedelta(minutes=10) <= calls[1] - calls[0] < timedelta(minutes=11)
