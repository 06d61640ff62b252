"""JPEG structure: validation and EXIF segment surgery on plain bytes.

A JPEG file is ``SOI`` (``FF D8``), then marker segments (``FF xx`` + a big-endian length that
counts itself + payload), then from the first ``SOS`` (``FF DA``) entropy-coded scan data in which
a literal ``FF`` is always followed by ``00`` (byte stuffing) or a restart marker, possibly more
segments and scans (progressive JPEGs), and finally ``EOI`` (``FF D9``). Any number of ``FF`` fill
bytes may precede a marker.

EXIF lives in an ``APP1`` segment (``FF E1``) whose payload starts with ``Exif\\0\\0`` followed by
a TIFF structure; XMP lives in another ``APP1`` whose payload starts with the XMP namespace URI.

Nothing here decodes pixels and nothing imports a third-party library. Every function that takes
the file's bytes raises :class:`~daemon.errors.CorruptMediaError` naming the file when the header
part of the structure (everything up to the first scan) is malformed.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from daemon.errors import CorruptMediaError

SOI = b"\xff\xd8"
EXIF_HEADER = b"Exif\x00\x00"
XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
#: Largest payload an APPn segment can carry: the length field (which counts its own two bytes)
#: is 16 bits.
MAX_SEGMENT_PAYLOAD = 65533

_APP0 = 0xE0
_APP1 = 0xE1
_SOS = 0xDA
_EOI = 0xD9
_SOI = 0xD8
#: Markers that stand alone, without a length: TEM and the restart markers RST0..RST7.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
#: An FF that may start a marker inside entropy-coded data: not followed by a stuffed 00 or a
#: standalone marker byte (an FF that is, or that ends the data, can never start one).
_MARKER_CANDIDATE = re.compile(rb"\xff[^\x00\x01\xd0-\xd7]")
#: Start-of-frame markers (baseline, progressive, lossless, arithmetic…); not DHT/JPG/DAC.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


@dataclass(frozen=True)
class Segment:
    """One marker segment: ``data[start:end]`` is ``FF marker length payload``."""

    marker: int
    start: int
    end: int

    @property
    def payload_start(self) -> int:
        """Offset of the first payload byte (after marker and length)."""
        return self.start + 4


def _header_segments(data: bytes, name: str) -> list[Segment]:
    """The segments from SOI up to and including the first SOS.

    Raise CorruptMediaError if there is no SOI, a segment is malformed or runs past the end of
    the data, or the data ends before a start-of-scan.
    """
    if not data.startswith(SOI):
        if not data:
            raise CorruptMediaError(f"{name}: not a JPEG (empty file)")
        raise CorruptMediaError(f"{name}: not a JPEG (no SOI marker)")
    segments: list[Segment] = []
    pos = 2
    size = len(data)
    while True:
        start, marker, pos = _next_marker(data, pos, name)
        if marker in _STANDALONE:
            continue
        if marker == 0x00:
            raise CorruptMediaError(f"{name}: bad marker 0xFF00 at offset {start}")
        if marker == _SOI:
            raise CorruptMediaError(f"{name}: unexpected second SOI marker at offset {start}")
        if marker == _EOI:
            raise CorruptMediaError(f"{name}: no image data (end-of-image before start-of-scan)")
        if pos + 2 > size:
            raise CorruptMediaError(
                f"{name}: truncated inside the header (segment 0xFF{marker:02X})"
            )
        (length,) = struct.unpack_from(">H", data, pos)
        if length < 2:
            raise CorruptMediaError(
                f"{name}: bad segment length {length} for 0xFF{marker:02X} at offset {start}"
            )
        end = pos + length
        if end > size:
            raise CorruptMediaError(
                f"{name}: truncated: segment 0xFF{marker:02X} at offset {start} runs past the end"
            )
        segments.append(Segment(marker, start, end))
        pos = end
        if marker == _SOS:
            return segments


def _next_marker(data: bytes, pos: int, name: str) -> tuple[int, int, int]:
    """At ``pos`` expect ``FF`` (fill bytes allowed) then a marker byte.

    Return (offset of the last ``FF`` before the marker byte, marker, offset after the marker).
    """
    size = len(data)
    if pos >= size:
        raise CorruptMediaError(f"{name}: truncated: the data ends before the start-of-scan")
    if data[pos] != 0xFF:
        raise CorruptMediaError(
            f"{name}: bad marker at offset {pos}: expected 0xFF, found 0x{data[pos]:02X}"
        )
    while pos + 1 < size and data[pos + 1] == 0xFF:
        pos += 1
    if pos + 1 >= size:
        raise CorruptMediaError(f"{name}: truncated: the data ends before the start-of-scan")
    return pos, data[pos + 1], pos + 2


def check_jpeg(data: bytes, name: str) -> None:
    """Return if ``data`` is a structurally complete JPEG; raise CorruptMediaError if not.

    Complete means: SOI; well-formed marker segments with a frame header (SOF) before the first
    start-of-scan; scan data and any further segments/scans (progressive JPEGs) ending in an EOI
    marker. Bytes after EOI are allowed and ignored: cameras pad files, and phones append
    trailers (motion-photo videos, vendor blocks) there. The message names ``name`` and the
    reason, e.g. ``not a JPEG (no SOI marker)`` or ``truncated: no end-of-image marker``.
    """
    segments = _header_segments(data, name)
    if not any(s.marker in _SOF for s in segments):
        raise CorruptMediaError(f"{name}: no frame header (SOF) before the start-of-scan")
    pos = segments[-1].end
    size = len(data)
    if _single_sequential_scan(segments, data):
        # Baseline/extended sequential JPEG with all components in its first scan (the camera
        # and phone case): nothing but stuffed FF 00 and restart markers can follow until EOI,
        # and FF D9 cannot occur in entropy-coded data, so the first FF D9 is the EOI and a
        # file cut short has none. Searched from the end (where a complete file has it), not
        # by walking every FF of ~3 MB: the same question, answered in microseconds.
        if data.rfind(b"\xff\xd9", pos) == -1:
            raise CorruptMediaError(f"{name}: truncated: no end-of-image marker")
        return
    while True:
        # Entropy-coded data: skip to the next FF that starts a real marker. Nearly every FF
        # there is a stuffed FF 00 (one per ~100 bytes of a photo's scan data): the regular
        # expression steps over those, and over restart markers, in C.
        found = _MARKER_CANDIDATE.search(data, pos)
        if found is None:
            raise CorruptMediaError(f"{name}: truncated: no end-of-image marker")
        ff = found.start()
        nxt = ff + 1
        while nxt < size and data[nxt] == 0xFF:
            nxt += 1
        if nxt >= size:
            raise CorruptMediaError(f"{name}: truncated: no end-of-image marker")
        marker = data[nxt]
        if marker == 0x00 or marker in _STANDALONE:
            pos = nxt + 1
            continue
        if marker == _EOI:
            return
        if marker == _SOI:
            raise CorruptMediaError(f"{name}: unexpected SOI marker inside the image data")
        # A segment between scans (DHT, DQT, DRI, SOS of the next progressive scan…).
        if nxt + 3 > size:
            raise CorruptMediaError(f"{name}: truncated: no end-of-image marker")
        (length,) = struct.unpack_from(">H", data, nxt + 1)
        if length < 2:
            raise CorruptMediaError(
                f"{name}: bad segment length {length} for 0xFF{marker:02X} at offset {nxt - 1}"
            )
        pos = nxt + 1 + length
        if pos > size:
            raise CorruptMediaError(f"{name}: truncated: no end-of-image marker")


def _single_sequential_scan(segments: list[Segment], data: bytes) -> bool:
    """True for a sequential (SOF0/SOF1) frame whose first scan carries every component: the
    image data then runs from that scan to EOI with no other segment in between."""
    frame = next((s for s in segments if s.marker in _SOF), None)
    scan = segments[-1]
    if frame is None or frame.marker not in (0xC0, 0xC1) or scan.marker != 0xDA:
        return False
    nf = frame.payload_start + 5  # P, Y, X, then Nf
    ns = scan.payload_start
    return nf < frame.end and ns < scan.end and data[nf] == data[ns]


def _exif_segment(segments: list[Segment], data: bytes) -> Segment | None:
    for seg in segments:
        if seg.marker == _APP1 and data.startswith(EXIF_HEADER, seg.payload_start, seg.end):
            return seg
    return None


def exif_tiff(data: bytes, name: str = "JPEG") -> bytes | None:
    """The TIFF structure (without ``Exif\\0\\0``) of the first EXIF APP1 segment, or None.

    Raise CorruptMediaError if the header part of the JPEG is malformed.
    """
    segments = _header_segments(data, name)
    seg = _exif_segment(segments, data)
    if seg is None:
        return None
    return data[seg.payload_start + len(EXIF_HEADER) : seg.end]


def xmp_packet(data: bytes, name: str = "JPEG") -> bytes | None:
    """The payload (after the namespace header) of the first XMP APP1 segment, or None.

    Only the standard packet is returned; extended XMP (split over several segments) is not
    reassembled. Raise CorruptMediaError if the header part of the JPEG is malformed.
    """
    for seg in _header_segments(data, name):
        if seg.marker == _APP1 and data.startswith(XMP_HEADER, seg.payload_start, seg.end):
            return data[seg.payload_start + len(XMP_HEADER) : seg.end]
    return None


def frame_size(data: bytes, name: str = "JPEG") -> tuple[int, int] | None:
    """(width, height) from the first start-of-frame header, or None if it has none or says 0.

    Raise CorruptMediaError if the header part of the JPEG is malformed.
    """
    for seg in _header_segments(data, name):
        if seg.marker in _SOF:
            if seg.end - seg.payload_start < 5:
                return None
            height, width = struct.unpack_from(">HH", data, seg.payload_start + 1)
            return (width, height) if width and height else None
    return None


def _as_segment_payload(exif_payload: bytes) -> bytes:
    if exif_payload.startswith(EXIF_HEADER):
        return exif_payload
    if exif_payload[:4] in (b"II*\x00", b"MM\x00*"):
        return EXIF_HEADER + exif_payload
    raise ValueError("exif_payload must be a TIFF structure, with or without the Exif header")


@dataclass(frozen=True)
class Splice:
    """``data[:start] + segment + data[end:]``: a JPEG with one stretch of its header replaced.

    The output is fully determined by the input bytes and these three values, whatever code
    produced them; that is what lets an upload name its bytes without hashing them again
    (see :func:`daemon.upload.prepare_image`).
    """

    start: int
    end: int
    segment: bytes

    def apply(self, data: bytes) -> bytes:
        """The spliced bytes (one copy of ``data``)."""
        return b"".join(self.parts(data))

    def parts(self, data: bytes) -> tuple[memoryview, bytes, memoryview]:
        """The spliced bytes as three pieces, two of them views of ``data`` (no copy)."""
        view = memoryview(data)
        return view[: self.start], self.segment, view[self.end :]


def exif_splice(data: bytes, exif_payload: bytes, *, name: str = "JPEG") -> Splice:
    """Where and how :func:`replace_exif_segment` changes ``data``; same contract."""
    payload = _as_segment_payload(exif_payload)
    if len(payload) > MAX_SEGMENT_PAYLOAD:
        raise CorruptMediaError(
            f"{name}: EXIF too large for a JPEG segment "
            f"({len(payload)} bytes, at most {MAX_SEGMENT_PAYLOAD})"
        )
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    segments = _header_segments(data, name)
    old = _exif_segment(segments, data)
    if old is not None:
        return Splice(old.start, old.end, segment)
    at = 2
    for seg in segments:
        if seg.marker != _APP0:
            break
        at = seg.end
    return Splice(at, at, segment)


def replace_exif_segment(data: bytes, exif_payload: bytes, *, name: str = "JPEG") -> bytes:
    """Return ``data`` with its EXIF APP1 segment carrying ``exif_payload`` instead.

    ``exif_payload`` is a TIFF structure (starting ``II*\\0`` or ``MM\\0*``), with or without the
    ``Exif\\0\\0`` header in front — both are accepted, and the header is added when missing (so
    the output of ``piexif.dump`` can be passed as is). Anything else raises ValueError.

    The first EXIF APP1 segment is replaced in place. If there is none, a new one is inserted
    right after SOI, or after the leading APP0 segments (JFIF/JFXX) so that JFIF stays first.
    Every other byte — other APPn segments (XMP, ICC, JFIF), quantisation and Huffman tables, scan
    data, bytes after EOI — is kept identical; :func:`non_exif_bytes` of input and output are
    equal. Raise CorruptMediaError naming ``name`` if the JPEG header is malformed or the payload
    is longer than 65533 bytes (the most an APP1 segment can carry).
    """
    return exif_splice(data, exif_payload, name=name).apply(data)


def non_exif_bytes(data: bytes, name: str = "JPEG") -> bytes:
    """``data`` without its first EXIF APP1 segment: what EXIF rewriting must leave untouched.

    For any ``payload``, ``non_exif_bytes(replace_exif_segment(data, payload)) ==
    non_exif_bytes(data)``. Raise CorruptMediaError if the JPEG header is malformed.
    """
    segments = _header_segments(data, name)
    seg = _exif_segment(segments, data)
    if seg is None:
        return data
    return data[: seg.start] + data[seg.end :]
