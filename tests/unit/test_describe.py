"""daemon.describe: the Mapillary description JSON (parity with mapillary_tools 0.14.7)."""

from __future__ import annotations

import doctest
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

import daemon.describe
from daemon.describe import exif_description, format_capture_time, image_description
from daemon.media.exif import ImageMetadata

META = ImageMetadata(
    capture_time=datetime(2026, 6, 1, 11, 0, 5, 123_999, tzinfo=timezone(timedelta(hours=2))),
    lat=46.056912345678,
    lon=14.505812345649,
    alt=301.23456,
    heading=45.12345,
    make="GoPro",
    model="HERO6 Black",
    width=4000,
    height=3000,
    orientation=1,
    gps_time_used=True,
)


def test_doctests() -> None:
    result = doctest.testmod(daemon.describe)
    assert result.attempted >= 2 and result.failed == 0


@pytest.mark.parametrize(
    ("dt", "expected"),
    [
        (datetime(2026, 6, 1, 9, 0, 5, 123_999, tzinfo=UTC), "2026_06_01_09_00_05_123"),
        (datetime(2026, 6, 1, 9, 0, 5, 999_999, tzinfo=UTC), "2026_06_01_09_00_05_999"),
        (datetime(2026, 6, 1, 9, 0, 5, tzinfo=UTC), "2026_06_01_09_00_05_000"),
        (
            datetime(2026, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))),
            "2025_12_31_23_30_00_000",
        ),
        (datetime(999, 2, 3, 4, 5, 6, 7000, tzinfo=UTC), "0999_02_03_04_05_06_007"),
    ],
)
def test_format_capture_time(dt: datetime, expected: str) -> None:
    assert format_capture_time(dt) == expected


def test_format_capture_time_refuses_naive() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        format_capture_time(datetime(2026, 6, 1))  # noqa: DTZ001 - the case under test


def test_full_description() -> None:
    desc = image_description(
        META,
        filename="/var/spool/DCIM/100GOPRO/G0010001.JPG",
        md5sum="abc",
        filesize=123,
        sequence_id="seq-1_a",
    )
    assert desc == {
        "filename": "/var/spool/DCIM/100GOPRO/G0010001.JPG",
        "md5sum": "abc",
        "filesize": 123,
        "filetype": "image",
        "MAPLatitude": 46.0569123,
        "MAPLongitude": 14.5058123,
        "MAPCaptureTime": "2026_06_01_09_00_05_123",
        "MAPAltitude": 301.235,
        "MAPCompassHeading": {"TrueHeading": 45.123, "MagneticHeading": 45.123},
        "MAPSequenceUUID": "seq-1_a",
        "MAPDeviceMake": "GoPro",
        "MAPDeviceModel": "HERO6 Black",
        "MAPOrientation": 1,
        "MAPFilename": "G0010001.JPG",
    }


def test_minimal_description() -> None:
    bare = replace(
        META, alt=None, heading=None, make=None, model=None, orientation=None, camera_uuid=None
    )
    desc = image_description(bare, filename="a.jpg", md5sum=None, filesize=None, sequence_id=None)
    assert desc == {
        "filename": "a.jpg",
        "md5sum": None,
        "filesize": None,
        "filetype": "image",
        "MAPLatitude": 46.0569123,
        "MAPLongitude": 14.5058123,
        "MAPCaptureTime": "2026_06_01_09_00_05_123",
        "MAPFilename": "a.jpg",
    }


def test_camera_uuid_and_zero_values_are_kept() -> None:
    meta = replace(META, camera_uuid="C3221324657219", alt=0.0, heading=0.0, lat=0.5, lon=-0.5)
    desc = image_description(meta, filename="x.jpg", md5sum=None, filesize=0, sequence_id="0")
    assert desc["MAPCameraUUID"] == "C3221324657219"
    assert desc["MAPAltitude"] == 0.0
    assert desc["MAPCompassHeading"] == {"TrueHeading": 0.0, "MagneticHeading": 0.0}
    assert (desc["MAPSequenceUUID"], desc["filesize"]) == ("0", 0)


@pytest.mark.parametrize("bad", ["", "a b", "ä", "x/y"])
def test_sequence_id_must_match_the_schema(bad: str) -> None:
    with pytest.raises(ValueError, match="sequence id"):
        image_description(META, filename="x.jpg", md5sum=None, filesize=None, sequence_id=bad)


def test_exif_description_keeps_map_keys_but_the_sequence() -> None:
    desc = image_description(META, filename="/a/b.jpg", md5sum="m", filesize=1, sequence_id="s")
    exif = exif_description(desc)
    assert set(exif) == {k for k in desc if k.startswith("MAP")} - {"MAPSequenceUUID"}
    assert "filename" not in exif and "MAPSequenceUUID" not in exif
    assert exif["MAPFilename"] == "b.jpg"
