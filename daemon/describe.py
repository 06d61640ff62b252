"""The Mapillary image description: what goes into EXIF ImageDescription and the upload.

Pure functions reproducing mapillary_tools 0.14.7 ``serializer/description.py``
(``DescriptionJSONSerializer._as_image_desc``, ``build_capture_time``, ``desc_file_to_exif``),
so that Mapillary receives the same JSON from mapillaryd as from ``mapillary_tools upload``.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only the type: this module stays free of piexif and I/O
    from daemon.media.exif import ImageMetadata

__all__ = [
    "MT_ERROR_TYPES",
    "description_file",
    "error_description",
    "exif_description",
    "format_capture_time",
    "image_description",
]

#: Decimal places kept (mapillary_tools: 7 ≈ 1 cm for coordinates, 3 for metres and degrees).
COORDINATE_PRECISION = 7
ALTITUDE_PRECISION = 3
ANGLE_PRECISION = 3

_SEQUENCE_ID = re.compile(r"[a-zA-Z0-9_-]+")


def format_capture_time(dt: datetime) -> str:
    """``MAPCaptureTime`` of an aware datetime: UTC ``YYYY_MM_DD_HH_MM_SS_mmm``.

    Milliseconds are truncated, not rounded, like mapillary_tools' ``build_capture_time``.

    >>> from datetime import timedelta, timezone
    >>> cest = timezone(timedelta(hours=2))
    >>> format_capture_time(datetime(2024, 5, 1, 9, 3, 7, 999_999, tzinfo=cest))
    '2024_05_01_07_03_07_999'

    Raise ValueError for a naive datetime (its meaning would depend on the host's time zone).
    """
    if dt.utcoffset() is None:
        raise ValueError("capture time must be timezone-aware")
    u = dt.astimezone(UTC)
    return (
        f"{u.year:04d}_{u.month:02d}_{u.day:02d}_{u.hour:02d}_{u.minute:02d}_{u.second:02d}"
        f"_{u.microsecond // 1000:03d}"
    )


def image_description(
    meta: ImageMetadata,
    *,
    filename: str,
    md5sum: str | None,
    filesize: int | None,
    sequence_id: str | None,
) -> dict[str, Any]:
    """The description mapillary_tools writes for one image (``_as_image_desc``).

    Keys: ``filename`` (as given; mapillary_tools puts the absolute path there), ``md5sum``,
    ``filesize``, ``filetype`` = ``"image"``, ``MAPLatitude``/``MAPLongitude`` rounded to 7
    decimals, ``MAPCaptureTime`` (:func:`format_capture_time`), and when known
    ``MAPAltitude`` (3 decimals), ``MAPCompassHeading`` = ``{TrueHeading, MagneticHeading}``
    (both the heading, 3 decimals), ``MAPSequenceUUID``, ``MAPDeviceMake``,
    ``MAPDeviceModel``, ``MAPCameraUUID``, ``MAPOrientation``, and always ``MAPFilename`` (the
    base name of ``filename``). ``meta.heading`` is used as is: derive missing headings first
    (:func:`daemon.geo.sequence.derive_headings`).

    Raise ValueError if ``sequence_id`` is not ``[a-zA-Z0-9_-]+`` (the schema's pattern).
    """
    if sequence_id is not None and not _SEQUENCE_ID.fullmatch(sequence_id):
        raise ValueError(f"sequence id {sequence_id!r} does not match [a-zA-Z0-9_-]+")
    desc: dict[str, Any] = {
        "filename": filename,
        "md5sum": md5sum,
        "filesize": filesize,
        "filetype": "image",
        "MAPLatitude": round(meta.lat, COORDINATE_PRECISION),
        "MAPLongitude": round(meta.lon, COORDINATE_PRECISION),
        "MAPCaptureTime": format_capture_time(meta.capture_time),
    }
    if meta.alt is not None:
        desc["MAPAltitude"] = round(meta.alt, ALTITUDE_PRECISION)
    if meta.heading is not None:
        angle = round(meta.heading, ANGLE_PRECISION)
        desc["MAPCompassHeading"] = {"TrueHeading": angle, "MagneticHeading": angle}
    optional = {
        "MAPSequenceUUID": sequence_id,
        "MAPDeviceMake": meta.make,
        "MAPDeviceModel": meta.model,
        "MAPCameraUUID": meta.camera_uuid,
        "MAPOrientation": meta.orientation,
        "MAPFilename": PurePath(filename).name,
    }
    desc.update((key, value) for key, value in optional.items() if value is not None)
    return desc


def exif_description(desc: dict[str, Any]) -> dict[str, Any]:
    """The part of a description that goes into the image's EXIF (``desc_file_to_exif``):
    the ``MAP*`` keys except ``MAPSequenceUUID``.

    >>> exif_description({"filename": "/a/b.jpg", "MAPLatitude": 1.0, "MAPSequenceUUID": "0"})
    {'MAPLatitude': 1.0}
    """
    return {
        key: value
        for key, value in desc.items()
        if key.startswith("MAP") and key != "MAPSequenceUUID"
    }


#: Our reason codes → the mapillary_tools exception names its description files use, so that a
#: description file from ``mapillaryd process`` reads like one from ``mapillary_tools process``.
MT_ERROR_TYPES: dict[str, str] = {
    "no_gps": "MapillaryGeoTaggingError",
    "no_time": "MapillaryGeoTaggingError",
    "corrupt_media": "MapillaryGeoTaggingError",
    "outside_track": "MapillaryOutsideGPXTrackError",
    "bad_gpx": "MapillaryGPXEmptyError",
    "bad_nmea": "MapillaryGPXEmptyError",
    "no_track": "MapillaryGPXEmptyError",
    "duplicate": "MapillaryDuplicationError",
    "null_island": "MapillaryNullIslandError",
    "too_fast": "MapillaryCaptureSpeedTooFastError",
    "zigzag": "MapillaryZigZagError",
    "invalid_description": "MapillaryMetadataValidationError",
    "no_video_gps": "MapillaryVideoGPSNotFoundError",
    "gps_noise": "MapillaryGPSNoiseError",
    "truncated_mp4": "MapillaryInvalidVideoError",
    "stationary_video": "MapillaryStationaryVideoError",
    "file_too_large": "MapillaryFileTooLargeError",
}


def error_description(
    filename: str, reason: str, message: str, *, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An error entry as mapillary_tools writes it: ``{filename, filetype, error}``.

    ``error.type`` is the mapillary_tools exception name for ``reason`` (``Mapillaryd…Error`` for
    reasons it has no name for); ``error.vars`` carries our ``reason`` and any ``extra`` values.
    """
    error_type = (
        MT_ERROR_TYPES.get(reason)
        or "Mapillaryd" + "".join(part.capitalize() for part in reason.split("_")) + "Error"
    )
    return {
        "error": {
            "message": message,
            "type": error_type,
            "vars": {"reason": reason, **(extra or {})},
        },
        "filename": filename,
        "filetype": "image",
    }


def description_file(entries: list[dict[str, Any]]) -> bytes:
    """The description file: a JSON array, sorted keys, no spaces (mapillary_tools' format)."""
    return json.dumps(entries, sort_keys=True, separators=(",", ":")).encode("utf-8")
