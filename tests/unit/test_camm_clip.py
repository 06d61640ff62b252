"""daemon.media.camm_mp4 clips: the CAMM MP4 of a time window of a video, without re-encoding.

Sources are the corpus GoPro MAX video and MP4 files built here by :func:`build`, which can
write what the clip code must follow: B-frames (``ctts``, version 0 with an edit list that
hides the shift, or version 1 with negative offsets), sync sample tables, open GOPs, several
samples per chunk interleaved with audio, a delayed track (an empty edit), a second video
track and per-sample extras (``sdtp``). Outputs are read back with our MP4 reader
(:func:`mp4.probe`, :func:`mp4.iter_samples`) and, for the boxes it does not expose, by the
small raw box walker :func:`boxes` written here. ffprobe, ffmpeg and mapillary_tools' own
parser read real clips in ``tests/integration/test_video_trim_daemon.py``.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from daemon.errors import ItemError
from daemon.media import camm, camm_mp4, mp4
from daemon.media.camm_mp4 import CammStream, md5_of
from daemon.media.video import read_video_track

VIDEO = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "video"
MAX = VIDEO / "gpmfparser__max-heromode.mp4"
needs_corpus = pytest.mark.skipif(not MAX.is_file(), reason=f"no corpus video at {MAX}")

# --- building sources ----------------------------------------------------------------------


def box(box_type: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I4s", 8 + len(payload), box_type) + payload


def full_box(box_type: bytes, payload: bytes, version: int = 0, flags: int = 0) -> bytes:
    return box(box_type, struct.pack(">I", (version << 24) | flags) + payload)


@dataclass
class Trk:
    """A track to write. ``shown`` gives each sample's presentation time in media ticks (in
    decode order; default: its decode time); ``sync`` the 1-based sync samples (None: no
    ``stss``, every sample sync); ``edits`` (movie ticks, media time) elst entries."""

    count: int
    handler: bytes = b"vide"
    size: int = 500
    per_chunk: int = 1
    timescale: int = 1000
    delta: int = 100
    shown: Sequence[int] | None = None
    ctts_version: int = 0
    sync: Sequence[int] | None = None
    edits: Sequence[tuple[int, int]] = ()
    extra_stbl: bytes = b""

    def sizes(self) -> list[int]:
        return [self.size + (i * 7) % 13 for i in range(self.count)]


@dataclass
class Built:
    path: Path
    #: per track, per sample: its bytes
    samples: list[list[bytes]] = field(default_factory=list)


def content(track: int, index: int, size: int) -> bytes:
    stamp = struct.pack(">HI", track, index) + b"\xc3\x3c"
    return (stamp * (size // 8 + 1))[:size]


def _trak(number: int, t: Trk, chunk_offsets: list[int], movie_ts: int) -> bytes:
    sizes = t.sizes()
    stsd = full_box(b"stsd", struct.pack(">I", 1) + box(b"avc1", bytes(6) + b"\x00\x01"))
    stts = full_box(b"stts", struct.pack(">III", 1, t.count, t.delta))
    tables = stsd + stts
    if t.shown is not None:
        offsets = [s - i * t.delta for i, s in enumerate(t.shown)]
        fmt = ">Ii" if t.ctts_version == 1 else ">II"
        tables += full_box(
            b"ctts",
            struct.pack(">I", len(offsets)) + b"".join(struct.pack(fmt, 1, o) for o in offsets),
            t.ctts_version,
        )
    if t.sync is not None:
        tables += full_box(b"stss", struct.pack(f">I{len(t.sync)}I", len(t.sync), *t.sync))
    tables += full_box(b"stsz", struct.pack(f">II{len(sizes)}I", 0, len(sizes), *sizes))
    tables += full_box(b"stsc", struct.pack(">IIII", 1, 1, t.per_chunk, 1))
    tables += full_box(
        b"stco", struct.pack(f">I{len(chunk_offsets)}I", len(chunk_offsets), *chunk_offsets)
    )
    tables += t.extra_stbl
    media_duration = t.count * t.delta
    movie_duration = media_duration * movie_ts // t.timescale
    tkhd = full_box(
        b"tkhd", struct.pack(">IIIII", 0, 0, number, 0, movie_duration) + bytes(60), 0, 3
    )
    edts = b""
    if t.edits:
        entries = b"".join(struct.pack(">IihH", d, m, 1, 0) for d, m in t.edits)
        edts = box(b"edts", full_box(b"elst", struct.pack(">I", len(t.edits)) + entries))
    mdhd = full_box(b"mdhd", struct.pack(">IIIIHH", 0, 0, t.timescale, media_duration, 0x55C4, 0))
    hdlr = full_box(b"hdlr", bytes(4) + t.handler + bytes(12) + b"h\x00")
    dinf = box(b"dinf", full_box(b"dref", struct.pack(">I", 1) + full_box(b"url ", b"", 0, 1)))
    minf = box(b"minf", dinf + box(b"stbl", tables))
    return box(b"trak", tkhd + edts + box(b"mdia", mdhd + hdlr + minf))


def build(path: Path, tracks: Sequence[Trk], movie_ts: int = 1000) -> Built:
    """``ftyp``, one ``mdat`` with chunk 1 of every track, chunk 2 of every track …, then
    ``moov``; every sample filled with a pattern naming its track and index."""
    built = Built(path, [[] for _ in tracks])
    chunk_offsets: list[list[int]] = [[] for _ in tracks]
    body = bytearray()
    ftyp = box(b"ftyp", b"isom" + struct.pack(">I", 0x200) + b"isomiso2avc1mp41")
    start = len(ftyp) + 16
    chunks = max(-(-t.count // t.per_chunk) for t in tracks)
    sizes = [t.sizes() for t in tracks]
    for c in range(chunks):
        for n, t in enumerate(tracks):
            first = c * t.per_chunk
            if first >= t.count:
                continue
            chunk_offsets[n].append(start + len(body))
            for i in range(first, min(first + t.per_chunk, t.count)):
                data = content(n, i, sizes[n][i])
                built.samples[n].append(data)
                body += data
    duration = max(t.count * t.delta * movie_ts // t.timescale for t in tracks)
    mvhd = full_box(
        b"mvhd",
        struct.pack(">IIII", 0, 0, movie_ts, duration)
        + struct.pack(">IH10x", 0x10000, 0x100)
        + bytes(60)
        + struct.pack(">I", len(tracks) + 1),
    )
    traks = b"".join(_trak(n + 1, t, chunk_offsets[n], movie_ts) for n, t in enumerate(tracks))
    mdat = struct.pack(">I4sQ", 1, b"mdat", 16 + len(body)) + bytes(body)
    path.write_bytes(ftyp + mdat + box(b"moov", mvhd + traks))
    return built


def gop_video(count: int = 24, gop: int = 4, **kwargs: object) -> Trk:
    """I P B B per GOP in decode order, shown I B B P (ctts version 0 shifted by one frame,
    hidden by an edit list starting at media time 100)."""
    shown = []
    for i in range(count):
        g, k = divmod(i, gop)
        order = [0, 3, 1, 2][k] if gop == 4 else k
        shown.append((g * gop + order + 1) * 100)
    sync = [g * gop + 1 for g in range(count // gop)]
    return Trk(count, shown=shown, sync=sync, edits=[(count * 100, 100)], **kwargs)  # type: ignore[arg-type]


# --- reading outputs back -------------------------------------------------------------------

CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf"}


def boxes(
    data: bytes, start: int = 0, end: int | None = None, path: str = ""
) -> dict[str, list[bytes]]:
    """Every box under ``path`` as ``"moov/trak/mdia/…": [payloads]`` (a raw walk, independent
    of the reader under test)."""
    end = len(data) if end is None else end
    out: dict[str, list[bytes]] = {}
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        name = f"{path}/{kind.decode('latin-1')}" if path else kind.decode("latin-1")
        out.setdefault(name, []).append(data[pos + header : pos + size])
        if kind in CONTAINERS:
            for key, value in boxes(data, pos + header, pos + size, name).items():
                out.setdefault(key, []).extend(value)
        pos += size
    return out


def ctts_of(payload: bytes) -> tuple[int, list[int]]:
    version = payload[0]
    (count,) = struct.unpack_from(">I", payload, 4)
    fmt = ">Ii" if version == 1 else ">II"
    out = []
    for n, v in struct.iter_unpack(fmt, payload[8 : 8 + 8 * count]):
        out += [v] * n
    return version, out


def clip_of(
    path: Path, start: float, end: float, pts: Sequence[mp4.TimedPoint] | None = None, **kw: object
) -> tuple[camm_mp4.CammPlan, bytes]:
    pts = pts if pts is not None else points(0.0, 3.0, 0.1)
    with open(path, "rb") as f:
        clip = camm_mp4.read_clip_source(f, str(path))
        plan = camm_mp4.layout_clip(clip, pts, start, end, **kw)  # type: ignore[arg-type]
        return plan, CammStream(plan, f).read()


def points(start: float, stop: float, step: float) -> list[mp4.TimedPoint]:
    n = round((stop - start) / step)
    return [
        mp4.TimedPoint(start + i * step, 48 + i * 1e-5, 11 + i * 1e-5, 500.0, 1.7e9 + i * step)
        for i in range(n)
    ]


def read_back(data: bytes) -> tuple[mp4.Mp4Info, list[list[bytes]]]:
    f = io.BytesIO(data)
    info = mp4.probe(f, "clip")
    samples = [
        [mp4.read_sample(f, "clip", s) for s in mp4.iter_samples(f, "clip", t)]
        for t in info.tracks
        if t.handler == "vide"
    ]
    return info, samples


# --- the tests ------------------------------------------------------------------------------


def test_b_frames_clip_starts_at_a_keyframe_and_shows_contiguous_frames(tmp_path: Path) -> None:
    # GOPs of 4 (I P B B, shown I B B P) of 100 ms: keyframes shown at 0, 0.4, 0.8 … The clip
    # [0.75, 1.75) starts at the I frame shown at 0.8 (decode index 8) and ends with the I frame
    # shown at 1.6: the P after it is shown at 1.9, past 1.75.
    built = build(tmp_path / "b.mp4", [gop_video()])
    _plan, data = clip_of(built.path, 0.75, 1.75)
    info, samples = read_back(data)
    video = info.tracks[0]
    assert samples[0] == built.samples[0][8:17]
    assert video.sample_count == 9 and video.duration == 900
    parsed = boxes(data)
    version, offsets = ctts_of(parsed["moov/trak/mdia/minf/stbl/ctts"][0])
    assert version == 0
    decode = [s.decode_time for s in mp4.iter_samples(io.BytesIO(data), "c", video)]
    shown = sorted(d + o for d, o in zip(decode, offsets, strict=True))
    assert shown == [100 * (i + 1) for i in range(9)]  # contiguous frames, none missing
    # the edit list maps media time 100 (the first frame shown) to the clip's 0 s
    assert video.edits == (mp4.Edit(900, 100, 1.0),)
    stss = parsed["moov/trak/mdia/minf/stbl/stss"][0]
    assert struct.unpack(">I3I", stss[4:]) == (3, 1, 5, 9)
    assert info.movie is not None and info.movie.duration == 900
    tkhd = parsed["moov/trak/tkhd"][0]
    assert struct.unpack_from(">I", tkhd, 20)[0] == 900
    # the CAMM track holds the points of 0.8–1.7 s, rebased
    camm_points = camm.camm_track(io.BytesIO(data), "clip").points
    assert [round(p.time_s, 3) for p in camm_points] == [round(i * 0.1, 3) for i in range(9)]
    assert camm_points[0].lat == pytest.approx(48 + 8e-5)


def test_open_gop_keyframes_are_not_clip_starts(tmp_path: Path) -> None:
    # decode order I0 P1 | I2 B B P | …: the second GOP's I frame (shown at 400) is followed
    # in decode order by two B frames shown before it (200, 300) that refer to the first GOP:
    # starting there would keep undecodable frames. Times in 100 ms frames.
    shown = [0, 100, 400, 200, 300, 500, 600, 700, 800, 900]
    sync = [1, 3, 7]
    track = Trk(10, shown=shown, sync=sync, ctts_version=1)
    built = build(tmp_path / "open.mp4", [track])
    with open(built.path, "rb") as f:
        clip = camm_mp4.read_clip_source(f, "open.mp4")
    assert clip.keyframes() == (0.0, 0.6)
    _plan, data = clip_of(built.path, 0.15, 1.0)
    _, samples = read_back(data)
    assert samples[0] == built.samples[0][6:]


def test_chunks_are_cut_and_rebuilt(tmp_path: Path) -> None:
    # 4 samples per chunk, interleaved with audio; sync every 3rd sample. The clip 0.25–1.45 s
    # starts at sample 3 (shown 0.3, sync) and ends with sample 13 (ends 1.4): chunks cut on
    # both ends, the audio between them left out of the mdat.
    video = Trk(20, per_chunk=4, sync=list(range(1, 21, 3)))
    audio = Trk(20, handler=b"soun", size=50, per_chunk=4)
    built = build(tmp_path / "chunks.mp4", [video, audio])
    plan, data = clip_of(built.path, 0.25, 1.45)
    info, samples = read_back(data)
    assert samples[0] == built.samples[0][3:14]
    assert [t.handler for t in info.tracks] == ["vide", "camm"]
    assert plan.dropped == ("soun",)
    stsc = boxes(data)["moov/trak/mdia/minf/stbl/stsc"][0]
    (count,) = struct.unpack_from(">I", stsc, 4)
    entries = [struct.unpack_from(">III", stsc, 8 + 12 * i) for i in range(count)]
    assert entries == [(1, 1, 1), (2, 4, 1), (4, 2, 1)]  # 1 + 4 + 4 + 2 samples
    assert plan.video_tracks[0].chunk_count == 4
    assert plan.size == len(data)
    assert b"".join(built.samples[1]) not in data


def test_a_second_video_track_is_cut_to_the_clip_with_an_empty_edit(tmp_path: Path) -> None:
    first = Trk(30, sync=list(range(1, 31, 5)))  # keyframes every 0.5 s
    second = Trk(30, sync=list(range(1, 31, 3)), size=300)  # every 0.3 s
    built = build(tmp_path / "two.mp4", [first, second])
    _plan, data = clip_of(built.path, 0.5, 2.0)
    info, samples = read_back(data)
    assert samples[0] == built.samples[0][5:20]
    # the second track's first clean start at or after 0.5 s is shown at 0.6 s: 100 ms later
    assert samples[1] == built.samples[1][6:20]
    assert info.tracks[1].edits == (mp4.Edit(100, -1, 1.0), mp4.Edit(1400, 0, 1.0))
    assert info.movie is not None and info.movie.duration == 1500


def test_a_delayed_video_track_is_placed_by_its_edit_list(tmp_path: Path) -> None:
    # the video starts 0.5 s into the movie (an empty edit): its keyframes are at 0.5, 1.0 …
    track = Trk(20, sync=[1, 6, 11, 16], edits=[(500, -1), (2000, 0)])
    built = build(tmp_path / "late.mp4", [track])
    with open(built.path, "rb") as f:
        clip = camm_mp4.read_clip_source(f, "late.mp4")
    assert clip.keyframes() == (0.5, 1.0, 1.5, 2.0)
    assert clip.end_s() == pytest.approx(2.5)
    _plan, data = clip_of(built.path, 0.9, 2.5)
    info, samples = read_back(data)
    assert samples[0] == built.samples[0][5:]
    assert info.tracks[0].edits == (mp4.Edit(1500, 0, 1.0),)
    # points are rebased to the clip's start, 1.0 s of movie time
    camm_points = camm.camm_track(io.BytesIO(data), "clip").points
    assert camm_points[0].time_s == pytest.approx(0.0)
    assert camm_points[0].lat == pytest.approx(48 + 10e-5)


def test_per_sample_extras_are_left_out(tmp_path: Path) -> None:
    sdtp = full_box(b"sdtp", bytes(12))
    built = build(tmp_path / "sdtp.mp4", [Trk(12, extra_stbl=sdtp)])
    _, data = clip_of(built.path, 0.3, 1.0)
    parsed = boxes(data)
    assert "moov/trak/mdia/minf/stbl/sdtp" not in parsed
    assert "moov/trak/mdia/minf/stbl/stss" not in parsed  # the source had none: all sync
    assert read_back(data)[1][0] == built.samples[0][3:10]


def test_an_edit_list_a_clip_cannot_follow(tmp_path: Path) -> None:
    track = Trk(12, edits=[(500, 0), (500, 700)])
    built = build(tmp_path / "edits.mp4", [track])
    with open(built.path, "rb") as f, pytest.raises(ItemError) as caught:
        camm_mp4.read_clip_source(f, "edits.mp4")
    assert caught.value.reason == "trim_unsupported"
    assert "edits.mp4" in str(caught.value)


def test_empty_windows_and_windows_without_points(tmp_path: Path) -> None:
    built = build(tmp_path / "e.mp4", [Trk(12)])
    with pytest.raises(ItemError) as caught:
        clip_of(built.path, 1.5, 3.0)  # after the last frame
    assert caught.value.reason == "empty_clip"
    with pytest.raises(ItemError) as caught:
        clip_of(built.path, 0.2, 0.5, points(0.8, 1.2, 0.1))
    assert caught.value.reason == "no_video_gps"


def test_same_window_same_bytes_other_window_other_bytes(tmp_path: Path) -> None:
    built = build(tmp_path / "d.mp4", [gop_video(40)])
    a1, d1 = clip_of(built.path, 0.4, 2.0)
    a2, d2 = clip_of(built.path, 0.4, 2.0)
    b, d3 = clip_of(built.path, 0.8, 2.0)
    assert d1 == d2 and d1 != d3
    with open(built.path, "rb") as f:
        stream = CammStream(a1, f)
        assert md5_of(stream) == md5_of(CammStream(a2, f)) != md5_of(CammStream(b, f))
        # a resumed upload reads from the middle: the same bytes as a read from the start
        stream.seek(len(d1) // 2)
        assert stream.read() == d1[len(d1) // 2 :]


def test_forced_co64(tmp_path: Path) -> None:
    built = build(tmp_path / "w.mp4", [gop_video()])
    plan, data = clip_of(built.path, 0.4, 1.6, force_co64=True)
    assert plan.co64 and "moov/trak/mdia/minf/stbl/co64" in boxes(data)
    assert read_back(data)[1][0] == built.samples[0][4:16]


@needs_corpus
def test_gopro_max_clip(tmp_path: Path) -> None:
    """max-heromode: 315 frames of 3003/90000 s, a keyframe every 10th. The clip 3.0–7.2 s
    starts at frame 90 (3.003 s) and keeps the 125 frames that end by 7.2 s; audio, timecode
    and the GoPro metadata tracks are left out; the CAMM track holds the GPS points of those
    4.17 s, rebased to 0."""
    vt = read_video_track(MAX)
    with open(MAX, "rb") as f:
        clip = camm_mp4.read_clip_source(f, MAX.name, info=vt.info)
        assert len(clip.keyframes()) == 32 and clip.keyframes()[9] == pytest.approx(3.003)
        plan = camm_mp4.layout_clip(clip, vt.timed.points, 3.0, 7.2)
        data = CammStream(plan, f).read()
        source_frames = [
            mp4.read_sample(f, "max", s) for s in mp4.iter_samples(f, "max", vt.info.tracks[0])
        ]
    info, samples = read_back(data)
    assert samples[0] == source_frames[90:215]
    video = info.tracks[0]
    assert video.duration == 125 * 3003 and video.edits == (mp4.Edit(375375, 0, 1.0),)
    assert info.movie is not None and info.movie.duration == 375375
    assert [t.handler for t in info.tracks] == ["vide", "camm"]
    stss = boxes(data)["moov/trak/mdia/minf/stbl/stss"][0]
    assert list(struct.unpack_from(">13I", stss, 8)) == list(range(1, 126, 10))
    got = camm.camm_track(io.BytesIO(data), "clip").points
    want = [p for p in vt.timed.points if 3.003 - 1e-6 <= p.time_s < 7.1738]
    assert len(got) == len(want) > 60
    for g, w in zip(got, want, strict=True):
        assert g.time_s == pytest.approx(w.time_s - 3.003, abs=1e-4)
        assert (g.lat, g.lon) == pytest.approx((w.lat, w.lon), abs=1e-7)
