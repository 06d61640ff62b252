"""daemon.media.jpeg: structure checks and EXIF segment surgery on synthetic JPEGs."""

from __future__ import annotations

import io
import struct
from datetime import UTC, datetime

import pytest
from PIL import Image

from daemon.errors import CorruptMediaError
from daemon.media.jpeg import (
    EXIF_HEADER,
    XMP_HEADER,
    check_jpeg,
    exif_tiff,
    frame_size,
    non_exif_bytes,
    replace_exif_segment,
    xmp_packet,
)
from daemon.synth import exif_bytes, jpeg_bytes

TIFF = b"MM\x00*\x00\x00\x00\x08\x00\x00\x00\x00\x00\x00"  # an empty IFD0


def segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def insert_after_soi(data: bytes, *segments: bytes) -> bytes:
    return data[:2] + b"".join(segments) + data[2:]


def pillow_jpeg(**options: object) -> bytes:
    image = Image.new("RGB", (64, 48), (10, 200, 30))
    for x in range(0, 64, 8):
        image.paste((x * 4, 255 - x * 4, 90), (x, 0, x + 4, 48))
    out = io.BytesIO()
    image.save(out, "JPEG", **options)
    return out.getvalue()


def synth_with_exif() -> bytes:
    exif = exif_bytes(time=datetime(2026, 6, 1, 9, tzinfo=UTC), lat=46.05, lon=14.5, alt=300.0)
    return jpeg_bytes(1, exif=exif)


XMP = segment(0xE1, XMP_HEADER + b"<x:xmpmeta xmlns:x='adobe:ns:meta/'></x:xmpmeta>")
ICC = segment(0xE2, b"ICC_PROFILE\x00\x01\x01" + bytes(range(200)))
COMMENT = segment(0xFE, b"a comment")


# --- check_jpeg -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(jpeg_bytes(0), id="baseline"),
        pytest.param(synth_with_exif(), id="with-exif"),
        pytest.param(pillow_jpeg(progressive=True), id="progressive"),
        pytest.param(pillow_jpeg(restart_marker_blocks=1), id="restart-markers"),
        pytest.param(pillow_jpeg(icc_profile=b"x" * 300), id="icc"),
        pytest.param(jpeg_bytes(0) + b"\x00" * 64, id="zero-padding-after-eoi"),
        pytest.param(jpeg_bytes(0) + b"\xff" * 3, id="ff-padding-after-eoi"),
        pytest.param(jpeg_bytes(0) + b"ftypmp42 motion photo trailer", id="trailer-after-eoi"),
        pytest.param(insert_after_soi(jpeg_bytes(0), b"\xff\xff", COMMENT), id="fill-bytes"),
    ],
)
def test_check_jpeg_accepts_complete_files(data: bytes) -> None:
    check_jpeg(data, "ok.jpg")


def _bad_length(data: bytes) -> bytes:
    return data[:4] + b"\x00\x01" + data[6:]  # APP0 (JFIF) claims 1 byte


def _sos_without_sof(data: bytes) -> bytes:
    out, pos = bytearray(data), 2
    while out[pos + 1] != 0xDA:
        (length,) = struct.unpack_from(">H", out, pos + 2)
        if 0xC0 <= out[pos + 1] <= 0xCF and out[pos + 1] not in (0xC4, 0xC8, 0xCC):
            out[pos + 1] = 0xFE  # turn the frame header into a comment
        pos += 2 + length
    return bytes(out)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not a JPEG (empty file)"),
        (b"GIF89a" + bytes(100), "not a JPEG (no SOI marker)"),
        (b"\x89PNG\r\n\x1a\n", "not a JPEG (no SOI marker)"),
        (jpeg_bytes(0)[:-2], "truncated: no end-of-image marker"),
        (jpeg_bytes(0)[: len(jpeg_bytes(0)) // 2], "truncated: no end-of-image marker"),
        (jpeg_bytes(0)[:100], "truncated"),
        (jpeg_bytes(0)[:3], "truncated"),
        (_bad_length(jpeg_bytes(0)), "bad segment length 1"),
        (b"\xff\xd8" + segment(0xE1, b"x" * 50)[:-10], "runs past the end"),
        (b"\xff\xd8\xff\xd9", "no image data"),
        (b"\xff\xd8\x00\x00", "bad marker at offset 2"),
        (b"\xff\xd8\xff\xd8", "unexpected second SOI"),
        (_sos_without_sof(jpeg_bytes(0)), "no frame header (SOF)"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_check_jpeg_rejects_with_file_name_and_reason(data: bytes, reason: str) -> None:
    with pytest.raises(CorruptMediaError) as info:
        check_jpeg(data, "DCIM/IMG_0001.JPG")
    assert str(info.value).startswith("DCIM/IMG_0001.JPG: ")
    assert reason in str(info.value)
    assert info.value.reason == "corrupt_media"


@pytest.mark.parametrize("make", [jpeg_bytes, lambda _: pillow_jpeg(progressive=True)])
def test_every_truncation_is_rejected(make: object) -> None:
    data = make(3)  # type: ignore[operator]
    assert isinstance(data, bytes)
    for cut in [*range(0, len(data) - 1, 7), len(data) - 1]:
        with pytest.raises(CorruptMediaError):
            check_jpeg(data[:cut], "cut.jpg")


# --- reading segments ---------------------------------------------------------------------------


def test_exif_tiff_xmp_and_frame_size() -> None:
    data = insert_after_soi(synth_with_exif(), XMP)
    tiff = exif_tiff(data)
    assert tiff is not None and tiff[:4] == b"MM\x00*"
    assert xmp_packet(data) == b"<x:xmpmeta xmlns:x='adobe:ns:meta/'></x:xmpmeta>"
    assert frame_size(data) == (320, 240)
    plain = jpeg_bytes(0, size=(33, 17))
    assert (exif_tiff(plain), xmp_packet(plain), frame_size(plain)) == (None, None, (33, 17))


def test_exif_is_found_behind_an_xmp_segment() -> None:
    data = insert_after_soi(jpeg_bytes(0), XMP, segment(0xE1, EXIF_HEADER + TIFF))
    assert exif_tiff(data) == TIFF


# --- replace_exif_segment -----------------------------------------------------------------------


def _segments(data: bytes) -> list[bytes]:
    """Header segments (raw bytes) up to the first SOS, for comparing layouts."""
    out, pos = [], 2
    while data[pos + 1] != 0xDA:
        (length,) = struct.unpack_from(">H", data, pos + 2)
        out.append(data[pos : pos + 2 + length])
        pos += 2 + length
    return out


def test_replace_keeps_every_other_byte() -> None:
    original = insert_after_soi(synth_with_exif(), XMP, ICC, COMMENT)
    new_tiff = TIFF + b"padding" * 10
    out = replace_exif_segment(original, new_tiff)
    assert exif_tiff(out) == new_tiff
    assert non_exif_bytes(out) == non_exif_bytes(original)
    assert non_exif_bytes(out) != out
    before, after = _segments(original), _segments(out)
    exif_index = next(i for i, s in enumerate(before) if s[4:10] == EXIF_HEADER)
    assert [s for i, s in enumerate(before) if i != exif_index] == [
        s for i, s in enumerate(after) if i != exif_index
    ]
    assert after[exif_index] == segment(0xE1, EXIF_HEADER + new_tiff)
    scan = original.index(b"\xff\xda")
    assert out.endswith(original[scan:])  # the scan data and EOI


def test_payload_with_or_without_exif_header_is_the_same() -> None:
    data = synth_with_exif()
    assert replace_exif_segment(data, TIFF) == replace_exif_segment(data, EXIF_HEADER + TIFF)


def test_insert_after_jfif_when_there_is_no_exif() -> None:
    original = jpeg_bytes(0)  # Pillow writes JFIF APP0 first
    assert _segments(original)[0][4:9] == b"JFIF\x00"
    out = replace_exif_segment(original, TIFF)
    layout = _segments(out)
    assert layout[0] == _segments(original)[0]
    assert layout[1] == segment(0xE1, EXIF_HEADER + TIFF)
    assert non_exif_bytes(out) == original


def test_insert_right_after_soi_without_app0() -> None:
    original = jpeg_bytes(0)
    first = _segments(original)[0]
    bare = original[:2] + original[2 + len(first) :]
    out = replace_exif_segment(bare, TIFF)
    assert out[2:].startswith(segment(0xE1, EXIF_HEADER + TIFF))
    assert non_exif_bytes(out) == bare


def test_only_the_first_exif_segment_is_replaced() -> None:
    camera = synth_with_exif()
    second = next(s for s in _segments(camera) if s[4:10] == EXIF_HEADER)
    original = insert_after_soi(camera, segment(0xE1, EXIF_HEADER + TIFF + b"first"))
    out = replace_exif_segment(original, TIFF + b"new")
    assert exif_tiff(out) == TIFF + b"new"
    assert second in out
    assert b"first" not in out


def test_largest_payload_fits_and_one_more_byte_does_not() -> None:
    data = synth_with_exif()
    limit = 65533 - len(EXIF_HEADER)
    out = replace_exif_segment(data, TIFF.ljust(limit, b"\x00"))
    check_jpeg(out, "big.jpg")
    with pytest.raises(CorruptMediaError, match=r"big\.jpg: EXIF too large .*65534 bytes"):
        replace_exif_segment(data, TIFF.ljust(limit + 1, b"\x00"), name="big.jpg")


def test_payload_must_be_tiff() -> None:
    with pytest.raises(ValueError, match="TIFF"):
        replace_exif_segment(jpeg_bytes(0), b"<xml/>")


def test_replace_rejects_a_broken_header() -> None:
    with pytest.raises(CorruptMediaError, match=r"x\.jpg: not a JPEG"):
        replace_exif_segment(b"nope", TIFF, name="x.jpg")


def _pillow_jpeg(progressive: bool) -> bytes:
    image = Image.open(io.BytesIO(jpeg_bytes(7, size=(320, 240))))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85, progressive=progressive)
    return out.getvalue()


def test_truncation_is_caught_on_both_the_sequential_and_the_progressive_path() -> None:
    """Sequential single-scan files take the fast end-of-image search, progressive ones the
    full walk; a file cut anywhere after its header is refused by either."""
    for progressive in (False, True):
        data = _pillow_jpeg(progressive)
        check_jpeg(data, "whole.jpg")
        check_jpeg(data + b"\x00" * 64 + b"trailer video bytes", "trailer.jpg")
        header_end = data.index(b"\xff\xda")
        for cut in range(header_end + 20, len(data) - 1, max(1, len(data) // 40)):
            with pytest.raises(CorruptMediaError, match="truncated"):
                check_jpeg(data[:cut], "cut.jpg")
