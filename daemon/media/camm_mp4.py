"""The CAMM MP4 a video is uploaded as, planned up front and streamed from the source file.

mapillary_tools 0.14.7 uploads a video as a rebuilt MP4 (``VideoUploader``: the source's
``ftyp``, a new ``moov`` holding ``mvhd`` and the **video** tracks only, plus a CAMM track made
from the GPS points, then one ``mdat``). This module builds the same kind of file, in two steps:

1. **Planning** (:func:`plan_camm_mp4`): the source's index is read (:func:`read_source`, the
   only step that touches the file) and then :func:`layout` — a pure function of what was read,
   the points, make and model — computes the whole output: its size, the new ``moov`` bytes with
   every chunk offset rewritten, and the list of :class:`Segment` s the output is made of, each
   either a byte range of the source file (video samples) or bytes held in memory (``ftyp`` +
   ``moov`` + ``mdat`` header before the samples, the CAMM samples after them).
2. **Streaming** (:class:`CammStream`): a read-only, seekable binary stream over a plan that
   pulls the source's bytes from disk as it is read. Memory does not grow with the video's
   size; any offset can be read first (a resumed upload starts in the middle); each read checks
   that the source still has the size (and modification time) it had when planned, and raises
   :class:`SourceChangedError` rather than stream different bytes under the same session key.

Layout of the output (all offsets are known before the first byte is streamed)::

    ftyp (the source's, verbatim)
    moov  mvhd (the source's; next_track_ID updated)
          trak … every source track whose handler is 'vide' and that has samples, in source
                 order, byte for byte except its chunk offset table (stco or co64)
          trak   CAMM: tkhd, edts (when the first point is after 0 s), mdia(mdhd, hdlr 'camm',
                 minf(nmhd, dinf, stbl(stsd 'camm', stts, stsc, stsz, stco|co64)))
          udta   '@mak' / '@mod' (raw UTF-8, as mapillary_tools writes and reads them), if known
    mdat  the kept video chunks, in source-file order, then the CAMM samples as one chunk

Design decisions:

* **moov before mdat** ("faststart"), as mapillary_tools uploads. Because the output is
  generated, not written, the index costs nothing to place first: its size depends only on the
  sample and chunk counts and on the offset width, all known before any offset is assigned.
  A reader (Mapillary's server, ffprobe, a browser) finds the index in the first kilobytes,
  even of a partly uploaded file.
* **Source chunking kept**: every source chunk of a kept track stays one chunk, so ``stsc``,
  ``stsz``, ``stts``, ``ctts``, ``stss``, ``sdtp``, sample groups … stay valid and are copied
  verbatim; only the chunk offsets change. Chunks of all kept tracks are laid out in the order
  they have in the source file, so the output interleaves like the source (plays
  progressively) and the source is read front to back, once, never seeking backwards.
  (mapillary_tools instead rebuilds each track's sample table as one chunk per track and keeps
  only stsd/stts/stsc/stsz/co64/ctts/stss.)
* **Offsets**: 32-bit ``stco`` when every chunk offset fits in 32 bits, else ``co64`` for
  every track (the choice only ever depends on the sizes, so it is deterministic); ``mdat``
  gets a 64-bit ``largesize`` header when its size needs it. ``force_co64`` forces ``co64``.
* **Track IDs**: the kept tracks keep their IDs (their ``tref`` boxes stay meaningful); the
  CAMM track gets the source's ``next_track_ID`` (never used by any source track, so no kept
  ``tref`` can point at it by accident), and ``next_track_ID`` becomes one more.
* **CAMM samples**: one per point, via :func:`daemon.media.camm.encode_point` (type 6 when the
  point has a GPS epoch time, else type 5). The media timescale is ``max(1000, movie
  timescale)`` as in mapillary_tools; each decode time is rounded from the point's own time
  relative to the first point (no drift accumulates, unlike truncating every delta). A first
  point after 0 s is placed by an empty edit of ``round(t0 × movie timescale)`` ticks followed
  by one normal edit covering the whole track (the standard form of a delayed track). Points
  with a negative movie time are dropped, as mapillary_tools drops them. The last sample lasts
  until the end of the movie (a position holds until the video ends), so the movie duration
  only grows when points lie past the end of the video.
* **Deterministic**: no clock is read; creation and modification times are the source
  ``mvhd``'s. The same source, points, make and model always give byte-identical output,
  hence the same md5 and the same session key (:func:`md5_of`).

**Clips** (:func:`plan_camm_clip`, for trimmed videos, :mod:`daemon.geo.video_trim`): the
same output for a time window ``[t0, t1)`` of the source. :func:`read_clip_source` also reads
every sample of the kept video tracks (offset, size, duration, composition offset, sync flag;
a few bytes each, never the media); :func:`layout_clip` keeps, per video track, the samples
from the first *clean* sync sample shown at or after ``t0`` (a keyframe after which no sample
in decode order is shown earlier, so an open GOP's leading pictures never start a clip) to the
longest decode-order run whose frames all end by ``t1`` and leave no frame shown in between
out. Those tracks get new ``stts``/``ctts``/``stss``/``stsz``/``stsc`` and chunk tables
(chunks are the source's, split where the window cuts them; per-sample extras such as
``sdtp`` or sample groups are left out, as mapillary_tools leaves them out), an edit list
that shows the first kept frame at the clip's 0 s (after an empty edit for a track that
starts later), and ``tkhd``/``mdhd``/``mvhd`` durations of the clip; the CAMM track holds the
points shown during the clip, rebased to its start. The bytes still stream from the source.
Sources whose video edit list is more than an optional delay and one edit at rate 1 cannot
be cut (``trim_unsupported``).

Errors: planning raises only :class:`~daemon.errors.ItemError` subclasses naming the file —
``truncated_mp4`` / ``corrupt_media`` (:class:`~daemon.errors.CorruptMediaError`) for a cut or
malformed source, ``no_video_track`` when no track with handler ``vide`` has a sample,
``fragmented_mp4`` for a fragmented MP4 (samples in ``moof`` fragments, not in the index),
``no_video_gps`` when no point is usable, ``unreadable`` for an OS error, ``source_changed``
when the file's size is not the one ``info`` was probed with; for clips also ``empty_clip`` (no
frame can start the window) and ``trim_unsupported``.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import io
import itertools
import math
import os
import struct
import sys
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

from daemon.errors import CorruptMediaError, ItemError, UnsupportedMediaError
from daemon.media import camm, mp4

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = [
    "CAMM_HANDLER_NAME",
    "MIN_CAMM_TIMESCALE",
    "CammPlan",
    "CammSamples",
    "CammStream",
    "ClipSource",
    "KeptTrack",
    "Segment",
    "SourceChangedError",
    "SourceIndex",
    "TrackSamples",
    "TrakTemplate",
    "VideoTrak",
    "camm_samples",
    "layout",
    "layout_clip",
    "md5_of",
    "plan_camm_clip",
    "plan_camm_mp4",
    "read_clip_source",
    "read_source",
]

UINT32_MAX = 0xFFFFFFFF
#: The CAMM track's media timescale is at least this (1 ms resolution), as in mapillary_tools.
MIN_CAMM_TIMESCALE = 1000
#: The handler name written into the CAMM track's ``hdlr``.
CAMM_HANDLER_NAME = "CameraMetadataMotionHandler"
_LANGUAGE_UND = 0x55C4  # ISO 639-2 "und", packed as mdhd wants it
_IDENTITY_MATRIX = struct.pack(">9i", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
_CHUNK_TABLES = (b"stco", b"co64")
_MD5_CHUNK = 1 << 20
assert array("I").itemsize == 4 and array("Q").itemsize == 8


class SourceChangedError(ItemError):
    """The source file is not the one the plan was made from (its size or modification time
    changed, or it ended early): streaming on would send other bytes under the same key."""

    reason = "source_changed"


# --- boxes -------------------------------------------------------------------------------------


def _box(box_type: bytes, payload: bytes) -> bytes:
    """A box; the 64-bit ``largesize`` header only when the size needs it."""
    if len(payload) + 8 <= UINT32_MAX:
        return struct.pack(">I4s", len(payload) + 8, box_type) + payload
    return struct.pack(">I4sQ", 1, box_type, len(payload) + 16) + payload


def _full_box(box_type: bytes, version: int, flags: int, payload: bytes) -> bytes:
    return _box(box_type, struct.pack(">I", (version << 24) | flags) + payload)


def _big_endian(values: array[int]) -> bytes:
    """An unsigned ``array`` as big-endian bytes (copied, the array is left as it is)."""
    if sys.byteorder == "big":
        return values.tobytes()
    swapped = array(values.typecode, values)
    swapped.byteswap()
    return swapped.tobytes()


def _offset_table(offsets: array[int], wide: bool) -> bytes:
    """``stco`` (32-bit) or ``co64`` (64-bit) holding ``offsets``."""
    if wide:
        values = offsets if offsets.typecode == "Q" else array("Q", offsets)
        return _full_box(b"co64", 0, 0, struct.pack(">I", len(values)) + _big_endian(values))
    if offsets and max(offsets) > UINT32_MAX:
        raise ValueError("a chunk offset does not fit in stco")
    narrow = array("I", offsets)
    return _full_box(b"stco", 0, 0, struct.pack(">I", len(narrow)) + _big_endian(narrow))


# --- what is read from the source --------------------------------------------------------------


@dataclass(frozen=True)
class TrakTemplate:
    """A source ``trak`` with a hole where its chunk offset table goes.

    ``path`` runs from ``trak`` down to ``stbl``: per level the box type and the payload bytes
    before and after the child on the path (at the ``stbl`` level: before and after the chunk
    offset table, any other ``stco``/``co64`` left out). :meth:`render` fills the hole and
    rebuilds every header on the path around it.
    """

    path: tuple[tuple[bytes, bytes, bytes], ...]

    def render(self, table: bytes) -> bytes:
        """The ``trak`` box with ``table`` (a whole ``stco``/``co64`` box) in the hole."""
        body = table
        for box_type, before, after in reversed(self.path):
            body = _box(box_type, before + body + after)
        return body


@dataclass(frozen=True)
class VideoTrak:
    """A video track to keep: its template, ID and, per chunk in table order, the chunk's
    source offset and size in bytes (the sum of its samples' sizes)."""

    track_id: int
    sample_count: int
    template: TrakTemplate = field(repr=False)
    chunk_offsets: array[int] = field(repr=False)
    chunk_sizes: array[int] = field(repr=False)


@dataclass(frozen=True)
class SourceIndex:
    """Everything :func:`layout` needs from the source file (read by :func:`read_source`).

    ``ftyp`` is the source's whole box (a plain ``isom`` one when the source has none),
    ``mvhd`` the payload of its movie header; ``times`` is the ``mvhd`` (creation,
    modification) in its own seconds-since-1904; ``track_ids`` are the IDs of every source
    track, kept or not; ``dropped`` the handler of every track left out; ``mtime_ns`` the
    modification time when the file object has a file descriptor.
    """

    name: str
    file_size: int
    mtime_ns: int | None
    ftyp: bytes = field(repr=False)
    mvhd: bytes = field(repr=False)
    movie_timescale: int
    movie_duration: int
    times: tuple[int, int]
    next_track_id: int
    track_ids: tuple[int, ...]
    video: tuple[VideoTrak, ...]
    dropped: tuple[str, ...]


def _unreadable(name: str, exc: OSError) -> ItemError:
    return ItemError(f"{name}: cannot read: {exc.strerror or exc}", reason="unreadable")


def _read_range(fileobj: BinaryIO, name: str, offset: int, length: int) -> bytes:
    try:
        fileobj.seek(offset)
        data = fileobj.read(length)
    except OSError as exc:
        raise _unreadable(name, exc) from exc
    if len(data) != length:
        raise CorruptMediaError(
            f"{name}: the file ends at offset {offset + len(data)}, before the "
            f"{length} byte(s) expected at {offset}",
            reason=mp4.TRUNCATED,
        )
    return data


def _identity(fileobj: BinaryIO, name: str) -> tuple[int, int | None]:
    """(size, modification time in ns or None) of the file behind ``fileobj``."""
    try:
        fd = fileobj.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
        return mp4.file_size(fileobj, name), None
    try:
        stat = os.fstat(fd)
    except OSError as exc:
        raise _unreadable(name, exc) from exc
    return stat.st_size, stat.st_mtime_ns


def _mvhd(fileobj: BinaryIO, name: str, moov: mp4.Box) -> tuple[bytes, int, int, int, int, int]:
    """(the mvhd payload, timescale, duration, creation, modification, next_track_ID)."""
    box = next((b for b in mp4.child_boxes(fileobj, name, moov) if b.type == b"mvhd"), None)
    if box is None:
        raise CorruptMediaError(f"{name}: the 'moov' index has no 'mvhd' movie header")
    payload = mp4.read_payload(fileobj, name, box, limit=4096)
    version = payload[0] if payload else -1
    layouts = {0: (">4xIIII", 96), 1: (">4xQQIQ", 108)}
    if version not in layouts or len(payload) < layouts[version][1] + 4:
        raise CorruptMediaError(
            f"{name}: 'mvhd' at offset {box.offset} is malformed (version {version}, "
            f"{len(payload)} bytes)"
        )
    fmt, next_at = layouts[version]
    creation, modification, timescale, duration = struct.unpack_from(fmt, payload)
    if timescale <= 0:
        raise CorruptMediaError(f"{name}: 'mvhd' has movie timescale 0")
    (next_id,) = struct.unpack_from(">I", payload, next_at)
    return payload, timescale, duration, creation, modification, next_id


def _trak_template(fileobj: BinaryIO, name: str, track: mp4.TrackInfo) -> TrakTemplate:
    target = track.tables.co64 or track.tables.stco
    assert target is not None
    trak = track.box
    if trak.size > mp4.MAX_PAYLOAD_READ:
        raise CorruptMediaError(
            f"{name}: track {track.index + 1} has a {trak.size}-byte 'trak' box, more than the "
            f"{mp4.MAX_PAYLOAD_READ} bytes accepted for one"
        )
    raw = _read_range(fileobj, name, trak.offset, trak.size)
    path: list[tuple[bytes, bytes, bytes]] = []
    box = trak
    while True:
        children = list(mp4.child_boxes(fileobj, name, box))
        inner = next((c for c in children if c.offset <= target.offset < c.end), None)
        if inner is None or inner.type == b"meta":
            raise CorruptMediaError(
                f"{name}: track {track.index + 1}: its chunk offset table at offset "
                f"{target.offset} is not inside its sample table"
            )
        if inner == target:
            drop = [c for c in children if c.type in _CHUNK_TABLES and c != target]
        else:
            drop = []

        def cut(start: int, end: int, drop: list[mp4.Box] = drop) -> bytes:
            parts, pos = [], start
            for other in drop:
                if start <= other.offset and other.end <= end:
                    parts.append(raw[pos - trak.offset : other.offset - trak.offset])
                    pos = other.end
            parts.append(raw[pos - trak.offset : end - trak.offset])
            return b"".join(parts)

        path.append((box.type, cut(box.data_offset, inner.offset), cut(inner.end, box.end)))
        if inner == target:
            return TrakTemplate(tuple(path))
        box = inner


def _stsc_runs(fileobj: BinaryIO, name: str, track: mp4.TrackInfo) -> list[tuple[int, int]]:
    """(first chunk, samples per chunk) of every ``stsc`` entry."""
    assert track.tables.stsc is not None
    payload = mp4.read_payload(fileobj, name, track.tables.stsc)
    if len(payload) < 8:
        raise CorruptMediaError(f"{name}: track {track.index + 1}: 'stsc' is too short")
    (count,) = struct.unpack_from(">I", payload, 4)
    if count * 12 > len(payload) - 8:
        raise CorruptMediaError(
            f"{name}: track {track.index + 1}: 'stsc' announces {count} entries, more than it holds"
        )
    return [
        (first, per) for first, per, _ in struct.iter_unpack(">III", payload[8 : 8 + count * 12])
    ]


def _chunk_offsets(fileobj: BinaryIO, name: str, track: mp4.TrackInfo) -> array[int]:
    box = track.tables.co64 or track.tables.stco
    assert box is not None
    payload = mp4.read_payload(fileobj, name, box)
    width = 8 if box.type == b"co64" else 4
    if len(payload) < 8:
        raise CorruptMediaError(f"{name}: track {track.index + 1}: {box.label} is too short")
    (count,) = struct.unpack_from(">I", payload, 4)
    if count * width > len(payload) - 8:
        raise CorruptMediaError(
            f"{name}: track {track.index + 1}: {box.label} announces {count} chunk offsets, "
            "more than it holds"
        )
    table = array("Q" if width == 8 else "I", payload[8 : 8 + count * width])
    if sys.byteorder == "little":
        table.byteswap()
    return table if width == 8 else array("Q", table)


def _video_trak(fileobj: BinaryIO, name: str, track: mp4.TrackInfo, file_size: int) -> VideoTrak:
    """The chunk table of a kept track: per chunk its source offset and byte size.

    The samples (and so the chunk sizes) come from :func:`mp4.iter_samples`, which also checks
    that the tables agree; the ``stsc`` runs say which samples belong to which chunk.
    """
    if track.tables.stsc is None or (track.tables.co64 or track.tables.stco) is None:
        raise CorruptMediaError(
            f"{name}: track {track.index + 1} has {track.sample_count} samples but no "
            f"{'stsc' if track.tables.stsc is None else 'stco/co64'} box to locate them"
        )
    offsets = _chunk_offsets(fileobj, name, track)
    runs = _stsc_runs(fileobj, name, track)
    sizes = array("Q", bytes(8 * len(offsets)))
    samples = mp4.iter_samples(fileobj, name, track)
    run = 0
    placed = 0
    for chunk in range(len(offsets)):
        while run + 1 < len(runs) and runs[run + 1][0] <= chunk + 1:
            run += 1
        per_chunk = runs[run][1] if runs else 0
        total = 0
        for _ in range(per_chunk):
            sample = next(samples, None)
            if sample is None:
                break
            if sample.offset != offsets[chunk] + total:  # iter_samples walks the same tables
                raise CorruptMediaError(
                    f"{name}: track {track.index + 1}: sample {sample.index + 1} is not where "
                    f"chunk {chunk + 1} puts it"
                )
            total += sample.size
            placed += 1
        sizes[chunk] = total
        if total and offsets[chunk] + total > file_size:
            raise CorruptMediaError(
                f"{name}: track {track.index + 1}: chunk {chunk + 1} runs to offset "
                f"{offsets[chunk] + total}, past the end of the file at {file_size}: the media "
                "data was cut short",
                reason=mp4.TRUNCATED,
            )
    for _ in samples:  # iter_samples raises when its tables place fewer samples than counted
        placed += 1
    if placed != track.sample_count:
        raise CorruptMediaError(
            f"{name}: track {track.index + 1}: the chunk tables place {placed} of its "
            f"{track.sample_count} samples"
        )
    return VideoTrak(
        track.track_id, track.sample_count, _trak_template(fileobj, name, track), offsets, sizes
    )


_DEFAULT_FTYP = _box(b"ftyp", b"isom" + struct.pack(">I", 0x200) + b"isomiso2mp41")


def read_source(fileobj: BinaryIO, name: str, *, info: mp4.Mp4Info | None = None) -> SourceIndex:
    """Read what :func:`layout` needs from the source video (the index only, never the media).

    ``info`` is the source's :func:`mp4.probe` result when the caller already has it (it must
    come from the same, unchanged file: a different size is ``source_changed``). Raises only
    :class:`~daemon.errors.ItemError` subclasses (see the module docstring).
    """
    file_size, mtime_ns = _identity(fileobj, name)
    if info is None:
        info = mp4.probe(fileobj, name)
    elif info.file_size != file_size:
        raise SourceChangedError(
            f"{name}: the file is {file_size} bytes now, {info.file_size} when it was probed"
        )
    if info.truncated is not None:
        raise CorruptMediaError(info.truncated, reason=mp4.TRUNCATED)
    moov = next((b for b in info.top_level if b.type == b"moov"), None)
    if moov is None:
        raise CorruptMediaError(f"{name}: no 'moov' index", reason=mp4.TRUNCATED)
    if info.fragmented:
        raise UnsupportedMediaError(
            f"{name}: a fragmented MP4 (samples in 'moof' fragments, not in the 'moov' index) "
            "cannot be rebuilt as a CAMM video",
            reason="fragmented_mp4",
        )
    ftyp_box = next((b for b in info.top_level if b.type == b"ftyp"), None)
    ftyp = (
        _read_range(fileobj, name, ftyp_box.offset, ftyp_box.size)
        if ftyp_box is not None and ftyp_box.size <= 4096
        else _DEFAULT_FTYP
    )
    mvhd, timescale, duration, creation, modification, next_id = _mvhd(fileobj, name, moov)
    video = []
    dropped = []
    for track in info.tracks:
        if track.handler == "vide" and track.sample_count > 0:
            video.append(_video_trak(fileobj, name, track, file_size))
        else:
            dropped.append(track.handler or "?")
    if not video:
        handlers = ", ".join(t.handler or "?" for t in info.tracks) or "none"
        raise ItemError(
            f"{name}: no video track with frames to upload (track handlers: {handlers})",
            reason="no_video_track",
        )
    return SourceIndex(
        name=name,
        file_size=file_size,
        mtime_ns=mtime_ns,
        ftyp=ftyp,
        mvhd=mvhd,
        movie_timescale=timescale,
        movie_duration=duration,
        times=(creation, modification),
        next_track_id=next_id,
        track_ids=tuple(t.track_id for t in info.tracks),
        video=tuple(video),
        dropped=tuple(dropped),
    )


# --- the CAMM track (pure) ---------------------------------------------------------------------


@dataclass(frozen=True)
class CammSamples:
    """The CAMM samples for a list of points.

    ``data`` is every sample, concatenated in time order; ``sizes`` and ``deltas`` (durations in
    ``timescale`` ticks) are per sample; ``empty_edit`` is the movie-timescale gap before the
    first sample; ``types`` counts the samples of each CAMM type; ``dropped`` the points left
    out for a negative movie time.
    """

    data: bytes = field(repr=False)
    sizes: tuple[int, ...] = field(repr=False)
    deltas: tuple[int, ...] = field(repr=False)
    timescale: int
    empty_edit: int
    types: dict[int, int]
    dropped: int

    @property
    def media_duration(self) -> int:
        """The track's duration in media ticks."""
        return sum(self.deltas)

    def span(self, movie_timescale: int) -> int:
        """The media duration in movie ticks, rounded up (the normal edit's duration)."""
        return -(-self.media_duration * movie_timescale // self.timescale)

    def movie_duration(self, movie_timescale: int) -> int:
        """The track's duration on the movie timeline: the empty edit, then the samples."""
        return self.empty_edit + self.span(movie_timescale)


def camm_samples(
    points: Sequence[mp4.TimedPoint],
    movie_timescale: int,
    *,
    movie_duration: int = 0,
    name: str = "video",
) -> CammSamples:
    """Encode ``points`` as CAMM samples timed on a movie of ``movie_timescale`` ticks/s.

    Points are taken in time order; a negative movie time is dropped. The last sample lasts
    until the end of the movie (``movie_duration`` ticks) when that is after it, else as long
    as the one before it (0 for a single point). ``ItemError(reason=
    "no_video_gps")`` when no point is left, ``CorruptMediaError`` when two consecutive points
    are too far apart for a 32-bit sample duration.
    """
    if movie_timescale <= 0:
        raise ValueError("movie_timescale must be positive")
    kept = sorted(
        (p for p in points if math.isfinite(p.time_s) and p.time_s >= 0), key=lambda p: p.time_s
    )
    if not kept:
        raise ItemError(
            f"{name}: no GPS point at a non-negative movie time to put in a CAMM track",
            reason="no_video_gps",
        )
    timescale = max(MIN_CAMM_TIMESCALE, movie_timescale)
    t0 = kept[0].time_s
    decode = [round((p.time_s - t0) * timescale) for p in kept]
    deltas = [b - a for a, b in itertools.pairwise(decode)]
    until_end = round((movie_duration / movie_timescale - t0) * timescale) - decode[-1]
    if 0 < until_end <= UINT32_MAX:
        deltas.append(until_end)
    else:
        deltas.append(deltas[-1] if deltas else 0)
    if max(deltas) > UINT32_MAX:
        raise CorruptMediaError(
            f"{name}: two GPS points are more than {UINT32_MAX // timescale} s apart, too far "
            "for one CAMM sample"
        )
    encoded = [camm.encode_point(p) for p in kept]
    types: dict[int, int] = {}
    for sample in encoded:
        kind = int.from_bytes(sample[2:4], "little")
        types[kind] = types.get(kind, 0) + 1
    return CammSamples(
        data=b"".join(encoded),
        sizes=tuple(len(s) for s in encoded),
        deltas=tuple(deltas),
        timescale=timescale,
        empty_edit=round(t0 * movie_timescale),
        types=types,
        dropped=len(points) - len(kept),
    )


def _stts(deltas: Sequence[int]) -> bytes:
    runs: list[list[int]] = []
    for delta in deltas:
        if runs and runs[-1][1] == delta:
            runs[-1][0] += 1
        else:
            runs.append([1, delta])
    body = struct.pack(">I", len(runs)) + b"".join(struct.pack(">II", n, d) for n, d in runs)
    return _full_box(b"stts", 0, 0, body)


def _stsz(sizes: Sequence[int]) -> bytes:
    if len(set(sizes)) == 1:
        return _full_box(b"stsz", 0, 0, struct.pack(">II", sizes[0], len(sizes)))
    body = struct.pack(f">II{len(sizes)}I", 0, len(sizes), *sizes)
    return _full_box(b"stsz", 0, 0, body)


def _camm_trak(
    samples: CammSamples,
    *,
    track_id: int,
    movie_timescale: int,
    times: tuple[int, int],
    offset: int,
    wide: bool,
) -> bytes:
    """The CAMM ``trak``, its one chunk at ``offset``."""
    media_duration = samples.media_duration
    span = samples.span(movie_timescale)
    movie_duration = samples.movie_duration(movie_timescale)
    long_times = max(*times, movie_duration, media_duration) > UINT32_MAX
    version = 1 if long_times else 0
    t = "Q" if long_times else "I"
    tkhd = _full_box(
        b"tkhd",
        version,
        0x000001,  # enabled; a metadata track is not shown (as mapillary_tools writes it)
        struct.pack(f">{t}{t}II{t}", times[0], times[1], track_id, 0, movie_duration)
        + struct.pack(">8xhhH2x", 0, 0, 0)  # reserved, layer, alternate group, volume
        + _IDENTITY_MATRIX
        + struct.pack(">II", 0, 0),  # width, height
    )
    edts = b""
    if samples.empty_edit > 0:
        wide_edit = max(samples.empty_edit, span) > UINT32_MAX
        fmt = ">QqhH" if wide_edit else ">IihH"
        entries = struct.pack(fmt, samples.empty_edit, -1, 1, 0) + struct.pack(fmt, span, 0, 1, 0)
        elst = _full_box(b"elst", 1 if wide_edit else 0, 0, struct.pack(">I", 2) + entries)
        edts = _box(b"edts", elst)
    mdhd = _full_box(
        b"mdhd",
        version,
        0,
        struct.pack(
            f">{t}{t}I{t}HH",
            times[0],
            times[1],
            samples.timescale,
            media_duration,
            _LANGUAGE_UND,
            0,
        ),
    )
    hdlr = _full_box(
        b"hdlr", 0, 0, struct.pack(">I4s12x", 0, b"camm") + CAMM_HANDLER_NAME.encode() + b"\0"
    )
    dref = _full_box(b"dref", 0, 0, struct.pack(">I", 1) + _full_box(b"url ", 0, 1, b""))
    entry = _box(b"camm", bytes(6) + struct.pack(">H", 1))  # SampleEntry: data reference 1
    stbl = _box(
        b"stbl",
        _full_box(b"stsd", 0, 0, struct.pack(">I", 1) + entry)
        + _stts(samples.deltas)
        + _full_box(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, len(samples.sizes), 1))
        + _stsz(samples.sizes)
        + _offset_table(array("Q", [offset]), wide),
    )
    minf = _box(b"minf", _full_box(b"nmhd", 0, 0, b"") + _box(b"dinf", dref) + stbl)
    return _box(b"trak", tkhd + edts + _box(b"mdia", mdhd + hdlr + minf))


# --- the plan (pure) ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Segment:
    """A piece of the output: ``length`` bytes at ``offset``, copied from the source file at
    ``source_offset``, or the in-memory ``data`` (exactly one of the two is set)."""

    offset: int
    length: int
    source_offset: int | None
    data: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class KeptTrack:
    """A track of the output: its ID, handler, sample and chunk counts, bytes of samples."""

    track_id: int
    handler: str
    sample_count: int
    chunk_count: int
    media_bytes: int


@dataclass(frozen=True, eq=False)
class CammPlan:
    """The complete layout of one CAMM MP4 (see the module docstring).

    ``size`` is the output's size; ``head`` its first bytes (``ftyp``, ``moov``, the ``mdat``
    header) and ``tail`` its last (the CAMM samples); between them the video chunks are copied
    from the source, whose size and modification time the plan records to refuse a changed
    file. ``tracks`` lists the output's tracks (the video ones, then CAMM), ``dropped`` the
    handlers of the source tracks left out. Immutable; :meth:`segments` lists the pieces.
    """

    name: str
    size: int
    head: bytes = field(repr=False)
    tail: bytes = field(repr=False)
    moov_offset: int
    moov_size: int
    mdat_offset: int
    co64: bool
    tracks: tuple[KeptTrack, ...]
    dropped: tuple[str, ...]
    camm: CammSamples = field(repr=False)
    source_size: int
    source_mtime_ns: int | None
    # segment i covers [starts[i], starts[i + 1]); sources[i] is its source offset, or -1 for
    # the head (i == 0) and the tail (the last one)
    _starts: array[int] = field(repr=False)
    _sources: array[int] = field(repr=False)

    @property
    def camm_track(self) -> KeptTrack:
        """The CAMM track (always the last)."""
        return self.tracks[-1]

    @property
    def video_tracks(self) -> tuple[KeptTrack, ...]:
        """The kept video tracks, in source order."""
        return self.tracks[:-1]

    def __len__(self) -> int:
        return self.size

    def segment_count(self) -> int:
        """How many segments the output is made of."""
        return len(self._sources)

    def segment(self, index: int) -> Segment:
        """Segment ``index`` (0-based)."""
        start, end = self._starts[index], self._starts[index + 1]
        source = self._sources[index]
        if source >= 0:
            return Segment(start, end - start, source)
        data = self.head if index == 0 else self.tail
        return Segment(start, end - start, None, data)

    def segments(self) -> Iterator[Segment]:
        """Every segment in output order; together they cover ``[0, size)`` exactly."""
        for index in range(len(self._sources)):
            yield self.segment(index)

    def locate(self, offset: int) -> int:
        """The index of the segment holding output byte ``offset`` (0 <= offset < size)."""
        if not 0 <= offset < self.size:
            raise ValueError(f"offset {offset} outside the {self.size}-byte output")
        return bisect.bisect_right(self._starts, offset) - 1


def _camm_track_id(source: SourceIndex) -> int:
    highest = max(source.track_ids, default=0)
    if highest < source.next_track_id < UINT32_MAX:
        return source.next_track_id
    return highest + 1


def _mvhd_with(payload: bytes, next_track_id: int, duration: int | None) -> bytes:
    """The ``mvhd`` box from the source's payload with ``next_track_ID`` (and ``duration``
    if given) replaced; :func:`read_source` checked the version and the length."""
    out = bytearray(payload)
    if out[0] == 0:
        out[96:100] = struct.pack(">I", next_track_id)
        if duration is not None:
            out[16:20] = struct.pack(">I", duration)
    else:
        out[108:112] = struct.pack(">I", next_track_id)
        if duration is not None:
            out[24:32] = struct.pack(">Q", duration)
    return _box(b"mvhd", bytes(out))


def layout(
    source: SourceIndex,
    points: Sequence[mp4.TimedPoint],
    *,
    make: str = "",
    model: str = "",
    force_co64: bool = False,
) -> CammPlan:
    """Plan the CAMM MP4 of ``source`` with a CAMM track of ``points`` (pure: no I/O).

    Kept video chunks are laid out in source-file order (ties: track order, then chunk
    order); contiguous source ranges become one segment. ``ItemError(reason="no_video_gps")``
    when no point can be encoded (see :func:`camm_samples`).
    """
    movie_ts = source.movie_timescale
    samples = camm_samples(points, movie_ts, movie_duration=source.movie_duration, name=source.name)
    camm_id = _camm_track_id(source)
    camm_movie_duration = samples.movie_duration(movie_ts)
    movie_duration = None
    if camm_movie_duration > source.movie_duration and (
        source.mvhd[0] == 1 or camm_movie_duration <= UINT32_MAX
    ):
        movie_duration = camm_movie_duration  # points past the end of the video
    mvhd = _mvhd_with(source.mvhd, camm_id + 1, movie_duration)
    udta_items = b""
    if make:
        udta_items += _box(b"@mak", make.encode())
    if model:
        udta_items += _box(b"@mod", model.encode())
    udta = _box(b"udta", udta_items) if udta_items else b""

    # chunk order: every kept chunk sorted by its source offset
    flat_offsets = array("Q")
    flat_sizes = array("Q")
    bounds = [0]
    for trak in source.video:
        flat_offsets.extend(trak.chunk_offsets)
        flat_sizes.extend(trak.chunk_sizes)
        bounds.append(len(flat_offsets))
    count = len(flat_offsets)
    if all(flat_offsets[i] <= flat_offsets[i + 1] for i in range(count - 1)):
        order: Sequence[int] = range(count)
    else:
        order = sorted(range(count), key=flat_offsets.__getitem__)
    video_bytes = sum(flat_sizes)
    mdat_payload = video_bytes + len(samples.data)
    mdat_header = (
        struct.pack(">I4s", mdat_payload + 8, b"mdat")
        if mdat_payload + 8 <= UINT32_MAX
        else struct.pack(">I4sQ", 1, b"mdat", mdat_payload + 16)
    )

    def moov(new_offsets: array[int], camm_offset: int, wide: bool) -> bytes:
        traks = b"".join(
            trak.template.render(_offset_table(new_offsets[bounds[i] : bounds[i + 1]], wide))
            for i, trak in enumerate(source.video)
        )
        camm_trak = _camm_trak(
            samples,
            track_id=camm_id,
            movie_timescale=movie_ts,
            times=source.times,
            offset=camm_offset,
            wide=wide,
        )
        return _box(b"moov", mvhd + traks + camm_trak + udta)

    # the moov size depends on the offset width only; the CAMM chunk has the largest offset
    zeros = array("Q", bytes(8 * count))
    moov_size = len(moov(zeros, 0, False))
    wide = force_co64 or len(source.ftyp) + moov_size + len(mdat_header) + video_bytes > UINT32_MAX
    if wide:
        moov_size = len(moov(zeros, 0, True))
    data_start = len(source.ftyp) + moov_size + len(mdat_header)

    new_offsets = array("Q", zeros)
    starts = array("Q", [0, data_start])
    sources = array("q", [-1])
    pos = data_start
    for index in order:
        size = flat_sizes[index]
        new_offsets[index] = pos
        if size:
            src = flat_offsets[index]
            last = len(sources) - 1
            if last > 0 and sources[last] + (starts[last + 1] - starts[last]) == src:
                starts[last + 1] += size  # continues the previous source range
            else:
                sources.append(src)
                starts.append(pos + size)
            pos += size
    camm_offset = pos
    sources.append(-1)
    starts.append(pos + len(samples.data))
    new_moov = moov(new_offsets, camm_offset, wide)
    assert len(new_moov) == moov_size, "the moov size must not depend on the offsets"
    head = source.ftyp + new_moov + mdat_header

    kept = [
        KeptTrack(t.track_id, "vide", t.sample_count, len(t.chunk_offsets), sum(t.chunk_sizes))
        for t in source.video
    ]
    camm_track = KeptTrack(camm_id, "camm", len(samples.sizes), 1, len(samples.data))
    return CammPlan(
        name=source.name,
        size=starts[-1],
        head=head,
        tail=samples.data,
        moov_offset=len(source.ftyp),
        moov_size=moov_size,
        mdat_offset=len(source.ftyp) + moov_size,
        co64=wide,
        tracks=(*kept, camm_track),
        dropped=source.dropped,
        camm=samples,
        source_size=source.file_size,
        source_mtime_ns=source.mtime_ns,
        _starts=starts,
        _sources=sources,
    )


def plan_camm_mp4(
    fileobj: BinaryIO,
    name: str,
    track: mp4.TimedTrack,
    *,
    info: mp4.Mp4Info | None = None,
    make: str = "",
    model: str = "",
    force_co64: bool = False,
) -> CammPlan:
    """Plan the CAMM MP4 uploaded for the video in ``fileobj`` with ``track``'s points.

    :func:`read_source` (the source's index; ``info`` if the caller has probed it already)
    then :func:`layout`. ``make``/``model`` go into ``udta`` as mapillary_tools writes them.
    Raises only :class:`~daemon.errors.ItemError` subclasses naming ``name``.
    """
    source = read_source(fileobj, name, info=info)
    return layout(source, track.points, make=make, model=model, force_co64=force_co64)


# --- clips: a time window of the video (mapillary_tools #637) -----------------------------------


@dataclass(frozen=True)
class TrackSamples:
    """Every sample of one kept video track, as a clip is cut from it (read by
    :func:`read_clip_source`).

    Per sample in decode order: file ``offsets``, ``sizes``, ``durations`` and ``decode`` times
    (media ticks), composition offsets ``cts`` (signed, all 0 without ``ctts``), ``sync``
    (1/0) and the ``stsd`` entry index ``descriptions``. ``empty_edit`` (movie ticks) and
    ``media_time`` (media ticks) place the track on the movie timeline: a sample is shown at
    movie time ``empty_edit / movie_timescale + (decode + cts - media_time) / timescale``.
    ``trak`` is the source ``trak`` box (``trak_header`` bytes of header); ``ctts_version`` is
    None without ``ctts``, ``has_stss`` says whether the source lists sync samples at all,
    ``has_edts`` whether it had an edit list.
    """

    track_id: int
    timescale: int
    trak: bytes = field(repr=False)
    trak_header: int
    offsets: array[int] = field(repr=False)
    sizes: array[int] = field(repr=False)
    durations: array[int] = field(repr=False)
    decode: array[int] = field(repr=False)
    cts: array[int] = field(repr=False)
    sync: bytes = field(repr=False)
    descriptions: array[int] = field(repr=False)
    ctts_version: int | None
    has_stss: bool
    has_edts: bool
    empty_edit: int
    media_time: int

    def __len__(self) -> int:
        return len(self.sizes)

    def shown_at(self, index: int, movie_timescale: int) -> float:
        """Movie seconds at which sample ``index`` is shown."""
        media = self.decode[index] + self.cts[index] - self.media_time
        return self.empty_edit / movie_timescale + media / self.timescale

    def clean_starts(self) -> list[int]:
        """The sync samples a clip may start at: no later sample (in decode order) is shown
        before them, so nothing kept refers to a frame left out (an open GOP's leading
        pictures would)."""
        count = len(self.sizes)
        starts = []
        lowest = None
        for i in range(count - 1, -1, -1):
            shown = self.decode[i] + self.cts[i]
            if self.sync[i] and (lowest is None or shown <= lowest):
                starts.append(i)
            lowest = shown if lowest is None else min(lowest, shown)
        starts.reverse()
        return starts


@dataclass(frozen=True)
class ClipSource:
    """What :func:`layout_clip` needs: the source's index and the samples of its kept video
    tracks (in the order of ``source.video``)."""

    source: SourceIndex
    samples: tuple[TrackSamples, ...]

    def keyframes(self) -> tuple[float, ...]:
        """Movie seconds at which a clip may start: the first video track's clean sync samples,
        in time order. A clip planned to start at one of them starts exactly there."""
        first = self.samples[0]
        ts = self.source.movie_timescale
        return tuple(sorted(first.shown_at(i, ts) for i in first.clean_starts()))

    def end_s(self) -> float:
        """Movie seconds at which the first video track's last frame ends."""
        first = self.samples[0]
        if not len(first):
            return 0.0
        ends = max(first.decode[i] + first.cts[i] + first.durations[i] for i in range(len(first)))
        return (
            first.empty_edit / self.source.movie_timescale
            + (ends - first.media_time) / first.timescale
        )


def _stbl_children(fileobj: BinaryIO, name: str, track: mp4.TrackInfo) -> list[mp4.Box]:
    for mdia in mp4.child_boxes(fileobj, name, track.box):
        if mdia.type != b"mdia":
            continue
        for minf in mp4.child_boxes(fileobj, name, mdia):
            if minf.type != b"minf":
                continue
            for stbl in mp4.child_boxes(fileobj, name, minf):
                if stbl.type == b"stbl":
                    return list(mp4.child_boxes(fileobj, name, stbl))
    return []


def _ctts(
    fileobj: BinaryIO, name: str, track: mp4.TrackInfo, count: int
) -> tuple[array[int], int | None]:
    """Per-sample composition offsets (signed, as every player reads them) and the ``ctts``
    version, or zeros and None without a ``ctts``."""
    box = next((b for b in _stbl_children(fileobj, name, track) if b.type == b"ctts"), None)
    offsets = array("q", bytes(8 * count))
    if box is None:
        return offsets, None
    payload = mp4.read_payload(fileobj, name, box)
    if len(payload) < 8:
        raise CorruptMediaError(f"{name}: track {track.index + 1}: 'ctts' is too short")
    version = payload[0]
    (entries,) = struct.unpack_from(">I", payload, 4)
    if entries * 8 > len(payload) - 8:
        raise CorruptMediaError(
            f"{name}: track {track.index + 1}: 'ctts' announces {entries} entries, more than "
            "it holds"
        )
    index = 0
    for run, value in struct.iter_unpack(">Ii", payload[8 : 8 + entries * 8]):
        take = min(run, count - index)
        offsets[index : index + take] = array("q", [value]) * take
        index += take
    if index < count:
        raise CorruptMediaError(
            f"{name}: track {track.index + 1}: 'ctts' covers {index} of its {count} samples"
        )
    return offsets, version


def _edit_origin(name: str, track: mp4.TrackInfo) -> tuple[int, int]:
    """(movie ticks of leading empty edits, media time of the one normal edit) of a track;
    ``trim_unsupported`` for an edit list a clip cannot follow (several normal edits, a
    rate other than 1)."""
    empty = 0
    normal = [e for e in track.edits if e.media_time != -1]
    for edit in track.edits:
        if edit.media_time != -1:
            break
        empty += edit.segment_duration
    if len(normal) > 1 or any(e.rate != 1 for e in normal):
        raise UnsupportedMediaError(
            f"{name}: track {track.index + 1} has an edit list of {len(track.edits)} entries "
            "that a clip cannot follow; the video cannot be trimmed",
            reason="trim_unsupported",
        )
    return empty, normal[0].media_time if normal else 0


def _track_samples(fileobj: BinaryIO, name: str, track: mp4.TrackInfo) -> TrackSamples:
    count = track.sample_count
    offsets, sizes = array("Q"), array("Q")
    durations, decode = array("Q"), array("q")
    descriptions = array("I")
    sync = bytearray(count)
    for sample in mp4.iter_samples(fileobj, name, track):
        offsets.append(sample.offset)
        sizes.append(sample.size)
        durations.append(sample.duration)
        decode.append(sample.decode_time)
        descriptions.append(sample.description)
        sync[sample.index] = sample.is_sync
    cts, ctts_version = _ctts(fileobj, name, track, count)
    empty, media_time = _edit_origin(name, track)
    if track.box.size > mp4.MAX_PAYLOAD_READ:
        raise CorruptMediaError(
            f"{name}: track {track.index + 1} has a {track.box.size}-byte 'trak' box, more than "
            f"the {mp4.MAX_PAYLOAD_READ} bytes accepted for one"
        )
    return TrackSamples(
        track_id=track.track_id,
        timescale=track.timescale,
        trak=_read_range(fileobj, name, track.box.offset, track.box.size),
        trak_header=track.box.header_size,
        offsets=offsets,
        sizes=sizes,
        durations=durations,
        decode=decode,
        cts=cts,
        sync=bytes(sync),
        descriptions=descriptions,
        ctts_version=ctts_version,
        has_stss=track.tables.stss is not None,
        has_edts=bool(track.edits),
        empty_edit=empty,
        media_time=media_time,
    )


def read_clip_source(
    fileobj: BinaryIO, name: str, *, info: mp4.Mp4Info | None = None
) -> ClipSource:
    """Read what a clip of the video needs: :func:`read_source`, then every sample of each kept
    video track (a few bytes per sample; the media itself is never read). Raises only
    :class:`~daemon.errors.ItemError` subclasses; ``trim_unsupported`` for a track whose edit
    list a clip cannot follow."""
    if info is None:
        info = mp4.probe(fileobj, name)
    source = read_source(fileobj, name, info=info)
    kept = [t for t in info.tracks if t.handler == "vide" and t.sample_count > 0]
    return ClipSource(source, tuple(_track_samples(fileobj, name, t) for t in kept))


@dataclass(frozen=True)
class _Cut:
    """Samples ``[first, stop)`` of a track, and where they sit on the clip's timeline."""

    first: int
    stop: int
    shown_s: float  # movie seconds (source timeline) of the first sample
    span: int  # media ticks from the first sample shown to the end of the last


def _cut(samples: TrackSamples, start_s: float, end_s: float, movie_ts: int) -> _Cut | None:
    """The samples of ``samples`` a clip of ``[start_s, end_s)`` keeps: from the first clean
    sync sample shown at or after ``start_s``, in decode order, up to the longest run whose
    frames all end by ``end_s`` and leave no gap (no later frame shown before one kept)."""
    count = len(samples)
    first = next(
        (i for i in samples.clean_starts() if samples.shown_at(i, movie_ts) >= start_s - 1e-6),
        None,
    )
    if first is None:
        return None
    shown = [samples.decode[i] + samples.cts[i] for i in range(count)]
    later_min = [0] * (count + 1)
    lowest = None
    for i in range(count - 1, -1, -1):
        lowest = shown[i] if lowest is None else min(lowest, shown[i])
        later_min[i] = lowest
    # end_s in the track's media ticks
    limit = samples.media_time + (end_s - samples.empty_edit / movie_ts) * samples.timescale
    stop = first
    highest = None
    for i in range(first, count):
        end = shown[i] + samples.durations[i]
        highest = end if highest is None else max(highest, end)
        if highest > limit + 1e-6 * samples.timescale:
            break
        if i + 1 == count or later_min[i + 1] >= highest:
            stop = i + 1
    if stop == first:
        return None
    span = max(shown[i] + samples.durations[i] for i in range(first, stop)) - shown[first]
    return _Cut(first, stop, samples.shown_at(first, movie_ts), span)


def _patched(payload: bytes, at: tuple[int, int], value: int) -> bytes:
    """``payload`` (a full box's, version first) with a duration field replaced: ``at`` is its
    offset in version 0 and version 1."""
    out = bytearray(payload)
    if out[0] == 1:
        out[at[1] : at[1] + 8] = struct.pack(">Q", value)
    else:
        out[at[0] : at[0] + 4] = struct.pack(">I", min(value, UINT32_MAX))
    return bytes(out)


def _runs(values: Sequence[int]) -> list[tuple[int, int]]:
    """(count, value) runs of equal consecutive values."""
    out: list[tuple[int, int]] = []
    for value in values:
        if out and out[-1][1] == value:
            out[-1] = (out[-1][0] + 1, value)
        else:
            out.append((1, value))
    return out


def _clip_trak(
    name: str, samples: TrackSamples, cut: _Cut, *, movie_ts: int, clip_start_s: float
) -> tuple[VideoTrak, int]:
    """The clip's copy of a video track (a :class:`VideoTrak` ready for :func:`layout`) and its
    duration in movie ticks. The sample tables are rebuilt for the kept samples (stsd kept,
    stts/ctts/stss/stsz/stsc new, per-sample extras such as sdtp or sample groups left out);
    tkhd/mdhd durations and the edit list are set for the clip."""
    first, stop = cut.first, cut.stop
    kept = range(first, stop)
    # chunks: runs of samples contiguous in the source with the same sample description
    chunk_offsets, chunk_sizes = array("Q"), array("Q")
    per_chunk: list[tuple[int, int]] = []
    for i in kept:
        if (
            i == first
            or samples.offsets[i] != samples.offsets[i - 1] + samples.sizes[i - 1]
            or samples.descriptions[i] != samples.descriptions[i - 1]
        ):
            chunk_offsets.append(samples.offsets[i])
            chunk_sizes.append(0)
            per_chunk.append((0, samples.descriptions[i]))
        chunk_sizes[-1] += samples.sizes[i]
        per_chunk[-1] = (per_chunk[-1][0] + 1, per_chunk[-1][1])
    stsc_entries: list[tuple[int, int, int]] = []
    for number, (n, description) in enumerate(per_chunk, start=1):
        if not stsc_entries or stsc_entries[-1][1:] != (n, description):
            stsc_entries.append((number, n, description))
    durations = samples.durations[first:stop]
    stts_runs = _runs(durations)
    tables = _full_box(
        b"stts",
        0,
        0,
        struct.pack(">I", len(stts_runs))
        + b"".join(struct.pack(">II", n, d) for n, d in stts_runs),
    )
    if samples.ctts_version is not None:
        ctts_runs = _runs(samples.cts[first:stop])
        tables += _full_box(
            b"ctts",
            samples.ctts_version,
            0,
            struct.pack(">I", len(ctts_runs))
            + b"".join(struct.pack(">II", n, v & UINT32_MAX) for n, v in ctts_runs),
        )
    if samples.has_stss:
        syncs = [i - first + 1 for i in kept if samples.sync[i]]
        tables += _full_box(b"stss", 0, 0, struct.pack(f">I{len(syncs)}I", len(syncs), *syncs))
    tables += _stsz(samples.sizes[first:stop])
    tables += _full_box(
        b"stsc",
        0,
        0,
        struct.pack(">I", len(stsc_entries))
        + b"".join(struct.pack(">III", *e) for e in stsc_entries),
    )

    empty = round((cut.shown_s - clip_start_s) * movie_ts)
    normal = -(-cut.span * movie_ts // samples.timescale)
    media_time = samples.cts[first]
    edts = b""
    if samples.has_edts or media_time != 0 or empty > 0:
        wide = max(empty, normal, abs(media_time)) > 0x7FFFFFFF
        fmt = ">QqhH" if wide else ">IihH"
        entries = [(empty, -1)] if empty > 0 else []
        entries.append((normal, media_time))
        elst = _full_box(
            b"elst",
            1 if wide else 0,
            0,
            struct.pack(">I", len(entries))
            + b"".join(struct.pack(fmt, d, m, 1, 0) for d, m in entries),
        )
        edts = _box(b"edts", elst)
    track_duration = empty + normal

    raw = io.BytesIO(samples.trak)
    trak_box = mp4.Box(b"trak", 0, len(samples.trak), samples.trak_header)

    def payload(box: mp4.Box) -> bytes:
        return samples.trak[box.data_offset : box.end]

    def whole(box: mp4.Box) -> bytes:
        return samples.trak[box.offset : box.end]

    def level(
        box: mp4.Box, inner: bytes, edit: dict[bytes, bytes | None]
    ) -> tuple[bytes, bytes, mp4.Box | None]:
        """(bytes before, bytes after) the child of type ``inner``, and that child; children
        in ``edit`` are replaced by their value (None: left out)."""
        before, after, found = b"", b"", None
        for child in mp4.child_boxes(raw, name, box):
            if child.type == inner and found is None:
                found = child
                continue
            data = edit.get(child.type, whole(child))
            if data is None:
                continue
            if found is None:
                before += data
            else:
                after += data
        return before, after, found

    tkhd_at = next((c for c in mp4.child_boxes(raw, name, trak_box) if c.type == b"tkhd"), None)
    if tkhd_at is None:
        raise CorruptMediaError(f"{name}: track {samples.track_id} has no 'tkhd'")
    tkhd = _box(b"tkhd", _patched(payload(tkhd_at), (20, 28), track_duration))
    trak_before, trak_after, mdia = level(trak_box, b"mdia", {b"tkhd": tkhd + edts, b"edts": None})
    if mdia is None:
        raise CorruptMediaError(f"{name}: track {samples.track_id} has no 'mdia'")
    mdhd_at = next((c for c in mp4.child_boxes(raw, name, mdia) if c.type == b"mdhd"), None)
    if mdhd_at is None:
        raise CorruptMediaError(f"{name}: track {samples.track_id} has no 'mdhd'")
    mdhd = _box(b"mdhd", _patched(payload(mdhd_at), (16, 24), sum(durations)))
    mdia_before, mdia_after, minf = level(mdia, b"minf", {b"mdhd": mdhd})
    if minf is None:
        raise CorruptMediaError(f"{name}: track {samples.track_id} has no 'minf'")
    minf_before, minf_after, stbl = level(minf, b"stbl", {})
    if stbl is None:
        raise CorruptMediaError(f"{name}: track {samples.track_id} has no 'stbl'")
    stsd = next((c for c in mp4.child_boxes(raw, name, stbl) if c.type == b"stsd"), None)
    if stsd is None:
        raise CorruptMediaError(f"{name}: track {samples.track_id} has no 'stsd'")
    template = TrakTemplate(
        (
            (b"trak", trak_before, trak_after),
            (b"mdia", mdia_before, mdia_after),
            (b"minf", minf_before, minf_after),
            (b"stbl", whole(stsd) + tables, b""),
        )
    )
    trak = VideoTrak(samples.track_id, stop - first, template, chunk_offsets, chunk_sizes)
    return trak, track_duration


def layout_clip(
    clip: ClipSource,
    points: Sequence[mp4.TimedPoint],
    start_s: float,
    end_s: float,
    *,
    make: str = "",
    model: str = "",
    force_co64: bool = False,
) -> CammPlan:
    """Plan the CAMM MP4 of the clip ``[start_s, end_s)`` (movie seconds) of a video (pure).

    The first video track keeps its samples from the first clean sync sample shown at or after
    ``start_s`` (see :meth:`ClipSource.keyframes`) to the last frame that ends by ``end_s``;
    the clip's timeline starts at that keyframe. Other video tracks keep their own samples
    within the clip (after an empty edit if they start later) or are left out when they have
    none. The CAMM track holds the points shown during the clip, rebased to its start; the
    media bytes are the source's, streamed by :class:`CammStream` like a whole video.
    ``ItemError(reason="empty_clip")`` when the window holds no frame of the first track,
    ``no_video_gps`` when it holds no point.
    """
    source = clip.source
    name = source.name
    movie_ts = source.movie_timescale
    first = _cut(clip.samples[0], start_s, end_s, movie_ts)
    if first is None:
        raise ItemError(
            f"{name}: the clip {start_s:.3f}–{end_s:.3f} s holds no frame that can start it",
            reason="empty_clip",
        )
    clip_start = first.shown_s
    traks, dropped = [], list(source.dropped)
    duration = 0
    for samples in clip.samples:
        cut = first if samples is clip.samples[0] else _cut(samples, clip_start, end_s, movie_ts)
        if cut is None:
            dropped.append("vide")
            continue
        trak, ticks = _clip_trak(name, samples, cut, movie_ts=movie_ts, clip_start_s=clip_start)
        traks.append(trak)
        duration = max(duration, ticks)
    clip_end = clip_start + duration / movie_ts
    mvhd = source.mvhd
    if mvhd[0] == 0:
        mvhd = mvhd[:16] + struct.pack(">I", min(duration, UINT32_MAX)) + mvhd[20:]
    else:
        mvhd = mvhd[:24] + struct.pack(">Q", duration) + mvhd[32:]
    clipped = SourceIndex(
        name=name,
        file_size=source.file_size,
        mtime_ns=source.mtime_ns,
        ftyp=source.ftyp,
        mvhd=mvhd,
        movie_timescale=movie_ts,
        movie_duration=duration,
        times=source.times,
        next_track_id=source.next_track_id,
        track_ids=source.track_ids,
        video=tuple(traks),
        dropped=tuple(dropped),
    )
    rebased = [
        dataclasses.replace(p, time_s=p.time_s - clip_start)
        for p in points
        if clip_start - 1e-6 <= p.time_s < clip_end - 1e-6
    ]
    if not rebased:
        raise ItemError(
            f"{name}: no GPS point in the clip {clip_start:.3f}–{clip_end:.3f} s",
            reason="no_video_gps",
        )
    return layout(clipped, rebased, make=make, model=model, force_co64=force_co64)


def plan_camm_clip(
    fileobj: BinaryIO,
    name: str,
    track: mp4.TimedTrack,
    start_s: float,
    end_s: float,
    *,
    info: mp4.Mp4Info | None = None,
    make: str = "",
    model: str = "",
    force_co64: bool = False,
) -> CammPlan:
    """Plan the CAMM MP4 of the clip ``[start_s, end_s)`` of the video in ``fileobj``:
    :func:`read_clip_source` then :func:`layout_clip`. The same source and window always give
    the same bytes (hence the same upload session key)."""
    clip = read_clip_source(fileobj, name, info=info)
    return layout_clip(
        clip, track.points, start_s, end_s, make=make, model=model, force_co64=force_co64
    )


# --- the stream --------------------------------------------------------------------------------


class CammStream(io.RawIOBase, BinaryIO):
    """A read-only, seekable binary stream of the output a :class:`CammPlan` describes.

    Video bytes are read from ``fileobj`` (the source; seekable, left open by :meth:`close`)
    as the stream is read, so memory stays flat whatever the size. ``read(n)`` returns exactly
    ``n`` bytes unless the end is reached (``b""`` at or past the end); ``seek`` accepts any
    non-negative position, past the end included (``ValueError`` for a negative one);
    ``len(stream)`` and :attr:`size` give the output size. Before every read from the source,
    its size (and modification time when both it and the plan have one) is checked against the
    plan: :class:`SourceChangedError` when they differ or the source ends early, ``ItemError
    (reason="unreadable")`` for an OS error.
    """

    def __init__(self, plan: CammPlan, fileobj: BinaryIO) -> None:
        super().__init__()
        self._plan = plan
        self._source = fileobj
        self._pos = 0

    @property
    def plan(self) -> CammPlan:
        """The plan streamed."""
        return self._plan

    @property
    def size(self) -> int:
        """The output size in bytes."""
        return self._plan.size

    @property
    def name(self) -> str:
        """The source's name (for messages)."""
        return self._plan.name

    @property
    def mode(self) -> str:
        return "rb"

    def __len__(self) -> int:
        return self._plan.size

    def __enter__(self) -> CammStream:
        return self

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def tell(self) -> int:
        self._check_open()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._check_open()
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._pos + offset
        elif whence == io.SEEK_END:
            target = self._plan.size + offset
        else:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        if target < 0:
            raise ValueError(f"negative seek position {target}")
        self._pos = target
        return target

    def read(self, size: int | None = -1) -> bytes:
        self._check_open()
        plan = self._plan
        end = plan.size if size is None or size < 0 else min(plan.size, self._pos + size)
        parts: list[bytes] = []
        pos = self._pos
        while pos < end:
            index = plan.locate(pos)
            segment = plan.segment(index)
            take = min(end, segment.offset + segment.length) - pos
            skip = pos - segment.offset
            if segment.data is not None:
                parts.append(segment.data[skip : skip + take])
            else:
                assert segment.source_offset is not None
                parts.append(self._from_source(segment.source_offset + skip, take))
            pos += take
        self._pos = pos
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed CammStream")

    def _from_source(self, offset: int, length: int) -> bytes:
        plan = self._plan
        size, mtime_ns = _identity(self._source, plan.name)
        if size != plan.source_size or (
            mtime_ns is not None
            and plan.source_mtime_ns is not None
            and mtime_ns != plan.source_mtime_ns
        ):
            what = (
                f"is {size} bytes, {plan.source_size} when planned"
                if size != plan.source_size
                else "was modified"
            )
            raise SourceChangedError(
                f"{plan.name}: the source video {what} since its upload was planned"
            )
        try:
            self._source.seek(offset)
            data = self._source.read(length)
        except OSError as exc:
            raise _unreadable(plan.name, exc) from exc
        if len(data) != length:
            raise SourceChangedError(
                f"{plan.name}: the source video ends at offset {offset + len(data)}, before the "
                f"{length} byte(s) planned at {offset}"
            )
        return data


def md5_of(stream: BinaryIO, *, chunk_size: int = _MD5_CHUNK) -> str:
    """The md5 hex digest of ``stream`` from offset 0 to its end, read ``chunk_size`` bytes at
    a time; the stream's position is restored afterwards. (mapillary_tools' session key for a
    video is ``mly_tools_<this>.mp4``.)"""
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    where = stream.tell()
    digest = hashlib.md5(usedforsecurity=False)
    stream.seek(0)
    while piece := stream.read(chunk_size):
        digest.update(piece)
    stream.seek(where)
    return digest.hexdigest()
