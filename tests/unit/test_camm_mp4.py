"""daemon.media.camm_mp4: the CAMM MP4 planned from a video and streamed from it.

Sources are the corpus GoPro MAX video and MP4 files built here (:func:`write_mp4`: any number
of tracks whose chunks interleave in the file, optionally sparse so that a gigabyte-sized
source costs no disk). Outputs are read back through the stream itself — :func:`mp4.probe`,
:func:`mp4.iter_samples` and :func:`camm.camm_track` take any seekable file object — so most
tests never materialise the output. ffprobe/ffmpeg and mapillary_tools' own reading are in
``tests/integration/test_camm_mp4_vs_mapillary_tools.py``.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
import struct
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import pytest

from daemon.errors import CorruptMediaError, ItemError
from daemon.media import camm, camm_mp4, mp4
from daemon.media.camm_mp4 import CammStream, SourceChangedError, md5_of, plan_camm_mp4
from daemon.media.video import read_video_track

VIDEO = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "video"
MAX = VIDEO / "gpmfparser__max-heromode.mp4"
needs_corpus = pytest.mark.skipif(not MAX.is_file(), reason=f"no corpus video at {MAX}")
MAC_EPOCH = datetime(1904, 1, 1, tzinfo=UTC)
CREATED = int((datetime(2024, 5, 1, 12, 0, tzinfo=UTC) - MAC_EPOCH).total_seconds())
MiB = 1 << 20

# --- building sources ----------------------------------------------------------------------


def box(box_type: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I4s", 8 + len(payload), box_type) + payload


def full_box(box_type: bytes, payload: bytes, version: int = 0, flags: int = 0) -> bytes:
    return box(box_type, struct.pack(">I", (version << 24) | flags) + payload)


@dataclass
class Track:
    """A track to write: per chunk, the sizes of its samples; every sample lasts ``delta``."""

    handler: bytes
    chunks: Sequence[Sequence[int]]
    fmt: bytes = b"avc1"
    timescale: int = 1000
    delta: int = 100
    co64: bool = False
    track_id: int | None = None
    extra_stbl: bytes = b""  # more sample-table boxes, kept verbatim by the builder under test

    @property
    def sizes(self) -> list[int]:
        return [s for chunk in self.chunks for s in chunk]


def sample_bytes(track: int, index: int, size: int) -> bytes:
    """The content of sample ``index`` of track ``track``: a recognisable repeated pattern."""
    stamp = struct.pack(">HI", track, index) + b"\xa5\x5a"
    return (stamp * (size // 8 + 1))[:size]


@dataclass
class Written:
    """What :func:`write_mp4` wrote: per track, per sample, (offset, size) in the file."""

    path: Path
    samples: list[list[tuple[int, int]]] = field(default_factory=list)


def _trak(number: int, track: Track, offsets: Sequence[int]) -> bytes:
    sizes = track.sizes
    entry = box(track.fmt, bytes(6) + struct.pack(">H", 1))
    stsd = full_box(b"stsd", struct.pack(">I", 1) + entry)
    stts = full_box(b"stts", struct.pack(">III", 1, len(sizes), track.delta))
    runs: list[tuple[int, int]] = []
    for chunk_no, chunk in enumerate(track.chunks, start=1):
        if not runs or runs[-1][1] != len(chunk):
            runs.append((chunk_no, len(chunk)))
    stsc = full_box(
        b"stsc",
        struct.pack(">I", len(runs)) + b"".join(struct.pack(">III", f, n, 1) for f, n in runs),
    )
    stsz = full_box(b"stsz", struct.pack(f">II{len(sizes)}I", 0, len(sizes), *sizes))
    if track.co64:
        stco = full_box(b"co64", struct.pack(f">I{len(offsets)}Q", len(offsets), *offsets))
    else:
        stco = full_box(b"stco", struct.pack(f">I{len(offsets)}I", len(offsets), *offsets))
    stbl = box(b"stbl", stsd + stts + stsc + stsz + stco + track.extra_stbl)
    duration = len(sizes) * track.delta
    track_id = track.track_id or number
    tkhd = full_box(
        b"tkhd", struct.pack(">IIIII", CREATED, CREATED, track_id, 0, duration) + bytes(60), 0, 3
    )
    mdhd = full_box(
        b"mdhd", struct.pack(">IIIIHH", CREATED, CREATED, track.timescale, duration, 0x55C4, 0)
    )
    hdlr = full_box(b"hdlr", bytes(4) + track.handler + bytes(12) + b"handler\x00")
    dinf = box(b"dinf", full_box(b"dref", struct.pack(">I", 1) + full_box(b"url ", b"", 0, 1)))
    minf = box(b"minf", dinf + stbl)
    return box(b"trak", tkhd + box(b"mdia", mdhd + hdlr + minf))


def write_mp4(
    path: Path,
    tracks: Sequence[Track],
    *,
    sparse: bool = False,
    gap: int = 0,
    fragmented: bool = False,
) -> Written:
    """An MP4 at ``path``: ``ftyp``, one ``mdat`` holding chunk 1 of every track, then chunk 2
    of every track … (interleaved like a camera's file, ``gap`` unused bytes between chunks),
    then ``moov``. ``sparse`` writes only the first 8 bytes of each sample and leaves the rest
    a hole, so a multi-GB file takes no disk space."""
    written = Written(path, [[] for _ in tracks])
    offsets: list[list[int]] = [[] for _ in tracks]
    ftyp = box(b"ftyp", b"isom" + struct.pack(">I", 0x200) + b"isomiso2avc1mp41")
    with open(path, "wb") as out:
        out.write(ftyp)
        mdat_at = out.tell()
        out.write(struct.pack(">I4sQ", 1, b"mdat", 0))  # the largesize is patched at the end
        pos = out.tell()
        counters = [0] * len(tracks)
        for chunk_index in range(max(len(t.chunks) for t in tracks)):
            for number, track in enumerate(tracks):
                if chunk_index >= len(track.chunks):
                    continue
                pos += gap
                offsets[number].append(pos)
                for size in track.chunks[chunk_index]:
                    data = sample_bytes(number, counters[number], min(size, 8) if sparse else size)
                    out.seek(pos)
                    out.write(data)
                    written.samples[number].append((pos, size))
                    counters[number] += 1
                    pos += size
        out.truncate(pos)
        out.seek(pos)
        duration = max(len(t.sizes) * t.delta * 1000 // t.timescale for t in tracks)
        mvhd = full_box(
            b"mvhd",
            struct.pack(">IIII", CREATED, CREATED, 1000, duration)
            + struct.pack(">IH10x", 0x10000, 0x100)
            + bytes(36 + 24)
            + struct.pack(">I", len(tracks) + 1),
        )
        traks = b"".join(_trak(n, t, offsets[n - 1]) for n, t in enumerate(tracks, start=1))
        out.write(box(b"moov", mvhd + traks))
        if fragmented:
            out.write(box(b"moof", full_box(b"mfhd", struct.pack(">I", 1))))
        out.seek(mdat_at + 8)
        out.write(struct.pack(">Q", pos - mdat_at))
    return written


def video(count: int = 12, size: int = 700, per_chunk: int = 1, **kwargs: object) -> Track:
    chunks = [[size + i % 5] * per_chunk for i in range(count // per_chunk)]
    return Track(b"vide", chunks, **kwargs)  # type: ignore[arg-type]


def audio(count: int = 12, size: int = 90, *, co64: bool = False) -> Track:
    return Track(b"soun", [[size, size + 1] for _ in range(count // 2)], fmt=b"mp4a", co64=co64)


def points(
    count: int = 10, *, start: float = 0.0, step: float = 0.1, epoch: float | None = 1.7e9
) -> list[mp4.TimedPoint]:
    return [
        mp4.TimedPoint(
            start + i * step,
            48.0 + i * 1e-5,
            11.0 - i * 2e-5,
            500.0 + i,
            None if epoch is None else epoch + i * step,
        )
        for i in range(count)
    ]


def timed(pts: Sequence[mp4.TimedPoint], name: str = "test.mp4") -> mp4.TimedTrack:
    return mp4.timed_track(pts, name, movie_creation=None)


def plan_file(
    path: Path, pts: Sequence[mp4.TimedPoint] | None = None, **kwargs: object
) -> camm_mp4.CammPlan:
    with open(path, "rb") as f:
        return plan_camm_mp4(f, str(path), timed(pts or points()), **kwargs)  # type: ignore[arg-type]


def output(plan: camm_mp4.CammPlan, path: Path) -> bytes:
    with open(path, "rb") as f:
        return CammStream(plan, f).read()


def track_samples(f: BinaryIO, name: str, track: mp4.TrackInfo) -> list[bytes]:
    return [mp4.read_sample(f, name, s) for s in mp4.iter_samples(f, name, track)]


# --- the output, read back ------------------------------------------------------------------


def test_video_tracks_kept_audio_dropped_camm_added(tmp_path: Path) -> None:
    src = write_mp4(tmp_path / "in.mp4", [video(), audio(), Track(b"meta", [[40]] * 3, b"gpmd")])
    plan = plan_file(src.path, make="Acme", model="Cam 1")
    out = io.BytesIO(output(plan, src.path))
    assert len(out.getvalue()) == plan.size
    info = mp4.probe(out, "out.mp4")
    assert [(t.handler, t.formats, t.sample_count) for t in info.tracks] == [
        ("vide", ("avc1",), 12),
        ("camm", ("camm",), 10),
    ]
    assert plan.dropped == ("soun", "meta")
    assert [t.type for t in info.top_level] == [b"ftyp", b"moov", b"mdat"]  # faststart
    # the video samples are the source's, byte for byte
    with open(src.path, "rb") as f:
        source_info = mp4.probe(f, "in.mp4")
        expected = track_samples(f, "in.mp4", source_info.tracks[0])
    assert track_samples(out, "out.mp4", info.tracks[0]) == expected
    # the CAMM track holds the points, make and model
    telemetry = camm.camm_track(out, "out.mp4", info=info)
    assert telemetry is not None and telemetry.kind == 6
    assert (telemetry.make, telemetry.model) == ("Acme", "Cam 1")
    for got, want in zip(telemetry.points, points(), strict=True):
        assert abs(got.time_s - want.time_s) <= 1e-9
        assert (got.lat, got.lon, got.alt, got.epoch_s) == (
            want.lat,
            want.lon,
            want.alt,
            want.epoch_s,
        )


def test_only_the_chunk_offset_table_of_a_video_trak_changes(tmp_path: Path) -> None:
    sdtp = full_box(b"sdtp", bytes(12))  # a table mapillary_tools drops, kept verbatim here
    src = write_mp4(tmp_path / "in.mp4", [audio(), video(extra_stbl=sdtp)])
    plan = plan_file(src.path)
    out = io.BytesIO(output(plan, src.path))
    info = mp4.probe(out, "out.mp4")
    with open(src.path, "rb") as f:
        source = mp4.probe(f, "in.mp4")
        old_trak = mp4.read_payload(f, "in", source.tracks[1].box)
        old_stco = source.tracks[1].tables.stco
        assert old_stco is not None
        cut = old_stco.offset - source.tracks[1].box.data_offset
    new_trak = mp4.read_payload(out, "out", info.tracks[0].box)
    assert new_trak[:cut] == old_trak[:cut]
    assert new_trak[cut + old_stco.size :] == old_trak[cut + old_stco.size :]
    assert info.tracks[0].track_id == 2  # source IDs kept
    assert info.tracks[1].track_id == 3  # the CAMM track: the source's next_track_ID
    mvhd = next(b for b in mp4.child_boxes(out, "out", info.top_level[1]) if b.type == b"mvhd")
    assert mp4.read_payload(out, "out", mvhd)[96:100] == struct.pack(">I", 4)


def test_chunks_keep_the_source_interleaving_and_order(tmp_path: Path) -> None:
    """Two video tracks interleaved with audio: the output keeps the two interleaved (source
    order), reads the source front to back, and merges contiguous ranges into one segment."""
    a, b = video(8, 500), video(8, 300, track_id=7)
    src = write_mp4(tmp_path / "in.mp4", [a, b, audio(16)])
    plan = plan_file(src.path)
    sources = [s.source_offset for s in plan.segments() if s.source_offset is not None]
    assert sources == sorted(sources)
    assert len(sources) == 8  # a's and b's chunks are contiguous: one range per round
    out = io.BytesIO(output(plan, src.path))
    info = mp4.probe(out, "out.mp4")
    offsets = [[s.offset for s in mp4.iter_samples(out, "o", t)] for t in info.tracks[:2]]
    assert offsets[0][0] < offsets[1][0] < offsets[0][1] < offsets[1][1]  # interleaved
    assert [t.track_id for t in info.tracks] == [1, 7, 8]
    with open(src.path, "rb") as f:
        source = mp4.probe(f, "in")
        for old, new in zip(source.tracks[:2], info.tracks[:2], strict=True):
            assert track_samples(out, "o", new) == track_samples(f, "in", old)


def test_a_contiguous_video_is_one_segment(tmp_path: Path) -> None:
    src = write_mp4(tmp_path / "in.mp4", [video(30, 1000, per_chunk=3)])
    plan = plan_file(src.path)
    kinds = [(s.source_offset is None, s.length) for s in plan.segments()]
    assert kinds == [
        (True, len(plan.head)),
        (False, sum(size for _, size in src.samples[0])),
        (True, len(plan.tail)),
    ]
    assert len(plan.head) == plan.mdat_offset + 8


def test_segments_cover_the_output_exactly(tmp_path: Path) -> None:
    src = write_mp4(tmp_path / "in.mp4", [video(20), audio(20)], gap=5)
    plan = plan_file(src.path)
    pos = 0
    for index, segment in enumerate(plan.segments()):
        assert segment.offset == pos and segment.length > 0
        assert (segment.data is None) != (segment.source_offset is None)
        assert plan.locate(pos) == plan.locate(pos + segment.length - 1) == index
        pos += segment.length
    assert pos == plan.size == len(plan)
    with pytest.raises(ValueError):
        plan.locate(plan.size)


@needs_corpus
def test_gopro_max(tmp_path: Path) -> None:
    source = read_video_track(MAX)
    with open(MAX, "rb") as f:
        plan = plan_camm_mp4(
            f, str(MAX), source.timed, info=source.info, make=source.make, model=source.model
        )
        stream = CammStream(plan, f)
        info = mp4.probe(stream, "out.mp4")
        assert [(t.handler, t.sample_count) for t in info.tracks] == [("vide", 315), ("camm", 191)]
        assert plan.dropped == ("soun", "tmcd", "meta", "meta")
        assert not plan.co64 and plan.camm.types == {6: 191}
        old = track_samples(f, "src", source.info.tracks[0])
        assert track_samples(stream, "out", info.tracks[0]) == old
        telemetry = camm.camm_track(stream, "out.mp4", info=info)
    assert telemetry is not None and telemetry.timed is not None
    assert (telemetry.make, telemetry.model) == ("GoPro", "GoPro Max")
    assert telemetry.timed.start_time == source.start_time
    for got, want in zip(telemetry.points, source.points, strict=True):
        assert abs(got.time_s - want.time_s) <= 0.5 / 90000 + 1e-12
        assert (got.lat, got.lon, got.epoch_s) == (want.lat, want.lon, want.epoch_s)
    # the same plan from a copy under another name: the same bytes (deterministic)
    copy = tmp_path / "copy.mp4"
    shutil.copyfile(MAX, copy)
    os.utime(copy, (1, 1))
    again = plan_file(copy, source.points, make="GoPro", model="GoPro Max")
    assert again.head == plan.head and again.tail == plan.tail
    assert output(again, copy) == output(plan, MAX)


def test_first_point_after_zero_is_an_edit(tmp_path: Path) -> None:
    """Points from 2.5 s: an empty edit of 2.5 s, then the track; times read back exactly."""
    src = write_mp4(tmp_path / "in.mp4", [video(60)])
    pts = points(20, start=2.5, step=0.15)
    plan = plan_file(src.path, pts)
    out = io.BytesIO(output(plan, src.path))
    info = mp4.probe(out, "out.mp4")
    edits = info.tracks[1].edits
    assert [(e.media_time, e.segment_duration) for e in edits] == [(-1, 2500), (0, 3500)]
    telemetry = camm.camm_track(out, "out.mp4", info=info)
    assert telemetry is not None
    assert [round(p.time_s, 9) for p in telemetry.points] == [round(p.time_s, 9) for p in pts]
    # the last sample lasts until the end of the movie (6 s), which therefore does not grow
    assert info.movie is not None and info.movie.duration == 6000
    assert info.tracks[1].duration == 3500
    # points past the end of the video: the movie grows to hold them
    longer = plan_file(src.path, points(20, start=5.0, step=0.1))
    info = mp4.probe(io.BytesIO(output(longer, src.path)), "out.mp4")
    assert info.movie is not None and info.movie.duration == 5000 + 1900 + 100


def test_type_5_without_gps_time_and_negative_times_dropped(tmp_path: Path) -> None:
    src = write_mp4(tmp_path / "in.mp4", [video()])
    pts = [mp4.TimedPoint(-0.5, 1.0, 2.0), *points(5, epoch=None)]
    pts[2] = mp4.TimedPoint(pts[2].time_s, pts[2].lat, pts[2].lon, None, None)
    with open(src.path, "rb") as f:
        plan = plan_camm_mp4(f, "in.mp4", timed(pts))  # timed_track keeps the -0.5 s
    assert plan.camm.types == {5: 5} and plan.camm.dropped == 1
    out = io.BytesIO(output(plan, src.path))
    telemetry = camm.camm_track(out, "out.mp4")
    assert telemetry is not None and telemetry.kind == 5
    assert [p.alt for p in telemetry.points] == [500.0, -1.0, 502.0, 503.0, 504.0]
    assert [p.epoch_s for p in telemetry.points] == [None] * 5


def test_mixed_point_kinds_follow_encode_point(tmp_path: Path) -> None:
    src = write_mp4(tmp_path / "in.mp4", [video()])
    pts = points(6)
    pts[1] = mp4.TimedPoint(pts[1].time_s, pts[1].lat, pts[1].lon, pts[1].alt, None)
    plan = plan_file(src.path, pts)
    assert plan.camm.types == {6: 5, 5: 1}
    assert plan.tail == b"".join(camm.encode_point(p) for p in pts)


# --- offsets: stco, co64, > 4 GB ------------------------------------------------------------


def test_forced_co64(tmp_path: Path) -> None:
    src = write_mp4(tmp_path / "in.mp4", [video(), audio()])
    narrow, wide = plan_file(src.path), plan_file(src.path, force_co64=True)
    assert not narrow.co64 and wide.co64
    assert wide.size == narrow.size + 4 * (12 + 1)  # 4 more bytes per chunk offset
    for plan in (narrow, wide):
        out = io.BytesIO(output(plan, src.path))
        info = mp4.probe(out, "out.mp4")
        kind = b"co64" if plan.co64 else b"stco"
        assert all((t.tables.co64 or t.tables.stco).type == kind for t in info.tracks)  # type: ignore[union-attr]
        with open(src.path, "rb") as f:
            old = track_samples(f, "in", mp4.probe(f, "in").tracks[0])
        assert track_samples(out, "out", info.tracks[0]) == old
        assert camm.camm_track(out, "out.mp4") is not None


def test_source_with_co64_input(tmp_path: Path) -> None:
    src = write_mp4(tmp_path / "in.mp4", [video(co64=True), audio()])
    plan = plan_file(src.path)
    assert not plan.co64  # the output decides for itself
    out = io.BytesIO(output(plan, src.path))
    info = mp4.probe(out, "out.mp4")
    with open(src.path, "rb") as f:
        old = track_samples(f, "in", mp4.probe(f, "in").tracks[0])
    assert track_samples(out, "out", info.tracks[0]) == old


def test_over_4gb_output_uses_co64_and_a_64_bit_mdat(tmp_path: Path) -> None:
    """A sparse 4.3 GB source: co64 and a largesize mdat are chosen on their own, and samples
    near the end of the output are where the tables say (read without reading 4 GB)."""
    big = 64 * MiB
    src = write_mp4(
        tmp_path / "big.mp4", [video(68, big, co64=True), audio(68, co64=True)], sparse=True
    )
    assert src.path.stat().st_size > 1 << 32
    plan = plan_file(src.path)
    assert plan.co64 and plan.size > 1 << 32
    with open(src.path, "rb") as f:
        stream = CammStream(plan, f)
        stream.seek(plan.mdat_offset)
        assert stream.read(16)[:8] == struct.pack(">I4s", 1, b"mdat")
        info = mp4.probe(stream, "out.mp4")
        assert info.tracks[0].tables.co64 is not None
        samples = list(mp4.iter_samples(stream, "out", info.tracks[0]))
        assert samples[-1].offset > 1 << 32
        for sample in samples[::9] + samples[-2:]:
            stream.seek(sample.offset)
            assert stream.read(8) == sample_bytes(0, sample.index, 8)
        telemetry = camm.camm_track(stream, "out.mp4", info=info)
        assert telemetry is not None and len(telemetry.points) == 10


# --- the stream -----------------------------------------------------------------------------


def test_random_reads_equal_the_whole(tmp_path: Path) -> None:
    src = write_mp4(tmp_path / "in.mp4", [video(40, 3000), audio(40)], gap=7)
    plan = plan_file(src.path)
    whole = output(plan, src.path)
    rng = random.Random(4)
    with open(src.path, "rb") as f:
        stream = CammStream(plan, f)
        for _ in range(400):
            start = rng.randrange(plan.size + 50)
            length = rng.choice([0, 1, 7, rng.randrange(1, 9000), rng.randrange(1, plan.size)])
            assert stream.seek(start) == start
            assert stream.read(length) == whole[start : start + length]
            assert stream.tell() == max(start, min(start + length, plan.size))
        # sequential random-sized pieces rebuild the whole
        stream.seek(0)
        pieces = []
        while piece := stream.read(rng.randrange(1, 5000)):
            pieces.append(piece)
        assert b"".join(pieces) == whole
        # readinto, readall, seek whence, len
        stream.seek(-10, io.SEEK_END)
        buffer = bytearray(32)
        assert stream.readinto(buffer) == 10 and bytes(buffer[:10]) == whole[-10:]
        stream.seek(100)
        stream.seek(5, io.SEEK_CUR)
        assert stream.tell() == 105 and stream.read(3) == whole[105:108]
        assert stream.seek(0) == 0 and stream.readall() == whole
        assert len(stream) == stream.size == plan.size == len(whole)
        assert stream.readable() and stream.seekable() and not stream.writable()


def test_seek_past_end_and_negative(tmp_path: Path) -> None:
    src = write_mp4(tmp_path / "in.mp4", [video()])
    plan = plan_file(src.path)
    with open(src.path, "rb") as f:
        stream = CammStream(plan, f)
        assert stream.seek(plan.size + 1000) == plan.size + 1000
        assert stream.read(10) == b"" and stream.read() == b""
        assert stream.tell() == plan.size + 1000
        assert stream.seek(5, io.SEEK_END) == plan.size + 5 and stream.read(1) == b""
        with pytest.raises(ValueError, match="negative"):
            stream.seek(-1)
        with pytest.raises(ValueError, match="negative"):
            stream.seek(-plan.size - 1, io.SEEK_END)
        with pytest.raises(ValueError, match="whence"):
            stream.seek(0, 3)
        assert stream.tell() == plan.size + 5  # a refused seek moves nothing
        stream.close()
        with pytest.raises(ValueError, match="closed"):
            stream.read(1)
        assert not f.closed  # the source belongs to the caller


def test_md5_of(tmp_path: Path) -> None:
    src = write_mp4(tmp_path / "in.mp4", [video(30, 2000), audio(30)])
    plan = plan_file(src.path)
    whole = output(plan, src.path)
    with open(src.path, "rb") as f:
        stream = CammStream(plan, f)
        stream.seek(123)
        assert md5_of(stream, chunk_size=777) == hashlib.md5(whole).hexdigest()
        assert stream.tell() == 123
    assert md5_of(io.BytesIO(whole)) == hashlib.md5(whole).hexdigest()


@pytest.mark.parametrize("change", ["grow", "shrink", "touch"])
def test_a_source_changed_underneath_is_refused(tmp_path: Path, change: str) -> None:
    src = write_mp4(tmp_path / "in.mp4", [video(20, 1000), audio(20)])
    plan = plan_file(src.path)
    with open(src.path, "rb") as f:
        stream = CammStream(plan, f)
        head = stream.read(plan.mdat_offset + 200)  # some video bytes: fine so far
        stat = src.path.stat()
        if change == "grow":
            with open(src.path, "ab") as g:
                g.write(b"more")
        elif change == "shrink":
            os.truncate(src.path, stat.st_size // 2)
        else:
            os.utime(src.path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
        with pytest.raises(SourceChangedError) as err:
            stream.read(5000)
    assert err.value.reason == "source_changed"
    assert str(src.path) in str(err.value)
    assert len(head) == plan.mdat_offset + 200


def test_a_source_without_descriptor_that_shrinks(tmp_path: Path) -> None:
    """A file object without fileno (no mtime): the size is still checked, and a short read is
    refused."""
    src = write_mp4(tmp_path / "in.mp4", [video(20, 1000)])
    data = src.path.read_bytes()
    plan = plan_camm_mp4(io.BytesIO(data), "mem.mp4", timed(points()))
    assert plan.source_mtime_ns is None
    assert CammStream(plan, io.BytesIO(data)).read() == output(plan, src.path)
    with pytest.raises(SourceChangedError, match=r"mem\.mp4"):
        CammStream(plan, io.BytesIO(data[:-100])).read()

    class Short(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            return super().read(size)[:-1]

    with pytest.raises(SourceChangedError, match="ends at offset"):
        CammStream(plan, Short(data)).read()


def test_memory_stays_flat_for_a_1gb_source(tmp_path: Path) -> None:
    """A sparse 1.1 GB source (video interleaved with audio): planning and hashing the whole
    stream keep tracemalloc's peak far below the size."""
    src = write_mp4(tmp_path / "big.mp4", [video(1100, MiB), audio(2200)], sparse=True)
    size = src.path.stat().st_size
    assert size > 1100 * MiB
    tracemalloc.start()
    try:
        with open(src.path, "rb") as f:
            plan = plan_camm_mp4(f, str(src.path), timed(points(500)))
            digest = md5_of(CammStream(plan, f))
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert plan.size > 1100 * MiB and len(digest) == 32
    assert peak < 64 * MiB, f"peak {peak / MiB:.1f} MiB for a {size / MiB:.0f} MiB source"
    print(f"1.1 GB sparse source: tracemalloc peak {peak / MiB:.1f} MiB")


# --- unusable input -------------------------------------------------------------------------


def test_no_video_track(tmp_path: Path) -> None:
    src = write_mp4(tmp_path / "audio.m4a", [audio()])
    with pytest.raises(ItemError) as err:
        plan_file(src.path)
    assert err.value.reason == "no_video_track" and str(src.path) in str(err.value)
    empty_video = Track(b"vide", [])
    src = write_mp4(tmp_path / "empty.mp4", [audio(), empty_video])
    with pytest.raises(ItemError, match="no video track with frames") as err:
        plan_file(src.path)
    assert err.value.reason == "no_video_track"


@needs_corpus
@pytest.mark.parametrize("cut", [1_000_000, 3_660_000])
def test_truncated(tmp_path: Path, cut: int) -> None:
    """Cut inside mdat (no moov at all) and inside moov: both truncated_mp4, naming the file."""
    path = tmp_path / "cut.mp4"
    path.write_bytes(MAX.read_bytes()[:cut])
    with pytest.raises(CorruptMediaError) as err:
        plan_file(path)
    assert err.value.reason == "truncated_mp4" and str(path) in str(err.value)


def test_chunk_past_the_end_of_the_file(tmp_path: Path) -> None:
    src = write_mp4(tmp_path / "in.mp4", [video(4, 1000)])
    data = bytearray(src.path.read_bytes())
    at = data.index(b"stco") + 12 + 4 * 3  # the last of the 4 chunk offsets
    data[at : at + 4] = struct.pack(">I", len(data) - 500)
    src.path.write_bytes(bytes(data))
    with pytest.raises(CorruptMediaError) as err:
        plan_file(src.path)
    assert err.value.reason == "truncated_mp4" and "past the end of the file" in str(err.value)


def test_no_points(tmp_path: Path) -> None:
    src = write_mp4(tmp_path / "in.mp4", [video()])
    with open(src.path, "rb") as f:
        source = camm_mp4.read_source(f, str(src.path))
    for pts in ([], [mp4.TimedPoint(-1.0, 1.0, 2.0)]):
        with pytest.raises(ItemError) as err:
            camm_mp4.layout(source, pts)
        assert err.value.reason == "no_video_gps" and str(src.path) in str(err.value)


def test_fragmented_and_not_an_mp4(tmp_path: Path) -> None:
    src = write_mp4(tmp_path / "frag.mp4", [video()], fragmented=True)
    with pytest.raises(ItemError) as err:
        plan_file(src.path)
    assert err.value.reason == "fragmented_mp4" and str(src.path) in str(err.value)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x01\x02 not an mp4 at all" * 10)
    with pytest.raises(CorruptMediaError) as err2:
        plan_file(junk)
    assert str(junk) in str(err2.value)


def test_info_from_another_version_of_the_file(tmp_path: Path) -> None:
    src = write_mp4(tmp_path / "in.mp4", [video()])
    with open(src.path, "rb") as f:
        info = mp4.probe(f, str(src.path))
    with open(src.path, "ab") as g:
        g.write(bytes(10))
    with open(src.path, "rb") as f, pytest.raises(SourceChangedError):
        plan_camm_mp4(f, str(src.path), timed(points()), info=info)


def test_layout_is_pure_and_deterministic(tmp_path: Path) -> None:
    src = write_mp4(tmp_path / "in.mp4", [video(), audio()])
    with open(src.path, "rb") as f:
        source = camm_mp4.read_source(f, str(src.path))
    one = camm_mp4.layout(source, points(), make="m")
    two = camm_mp4.layout(source, points(), make="m")
    assert one.head == two.head and one.tail == two.tail
    assert list(one.segments()) == list(two.segments())
    assert camm_mp4.layout(source, points(), make="n").head != one.head
