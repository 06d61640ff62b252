"""daemon.media.mp4: box reader, sample tables, truncation and location, on corpus and built files.

The helpers at the top (:func:`box`, :func:`full_box`, :class:`TrackSpec`, :func:`make_mp4`)
write small but complete MP4 files; the GPMF/CAMM/BlackVue tests and the fuzz test use them
too.
"""

from __future__ import annotations

import io
import re
import struct
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon.errors import CorruptMediaError, ItemError
from daemon.media import mp4

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
VIDEO = CORPUS / "video"
needs_corpus = pytest.mark.skipif(not VIDEO.is_dir(), reason=f"no video corpus at {VIDEO}")
MAC_EPOCH = datetime(1904, 1, 1, tzinfo=UTC)

# --- building MP4 files --------------------------------------------------------------------


def box(box_type: bytes, payload: bytes = b"", *, large: bool = False) -> bytes:
    """A box; ``large`` writes the 64-bit largesize form."""
    if large:
        return struct.pack(">I4sQ", 1, box_type, 16 + len(payload)) + payload
    return struct.pack(">I4s", 8 + len(payload), box_type) + payload


def full_box(box_type: bytes, payload: bytes, version: int = 0, flags: int = 0) -> bytes:
    return box(box_type, bytes([version]) + flags.to_bytes(3, "big") + payload)


def mac_seconds(when: datetime | None) -> int:
    return 0 if when is None else int((when - MAC_EPOCH).total_seconds())


@dataclass
class TrackSpec:
    """One track to write: its samples (bytes) and their durations in ``timescale`` ticks."""

    samples: Sequence[bytes]
    durations: Sequence[int]
    handler: bytes = b"vide"
    formats: Sequence[bytes] = (b"avc1",)
    timescale: int = 1000
    per_chunk: int = 1
    co64: bool = False
    stz2_bits: int | None = None
    fixed_size: bool = False
    sync: Sequence[int] | None = None
    edits: Sequence[tuple[int, int]] = ()  # (segment duration in movie ticks, media time)
    descriptions: Sequence[int] | None = None  # per chunk, 1-based; default all 1
    stts_runs: bool = True


def _stts(durations: Sequence[int], runs: bool) -> bytes:
    entries: list[tuple[int, int]] = []
    for d in durations:
        if runs and entries and entries[-1][1] == d:
            entries[-1] = (entries[-1][0] + 1, d)
        else:
            entries.append((1, d))
    body = struct.pack(">I", len(entries)) + b"".join(struct.pack(">II", *e) for e in entries)
    return full_box(b"stts", body)


def _stsz(spec: TrackSpec) -> bytes:
    sizes = [len(s) for s in spec.samples]
    if spec.stz2_bits is not None:
        bits = spec.stz2_bits
        if bits == 16:
            packed = b"".join(struct.pack(">H", s) for s in sizes)
        elif bits == 8:
            packed = bytes(sizes)
        else:
            padded = [*sizes, 0] if len(sizes) % 2 else sizes
            packed = bytes((padded[i] << 4) | padded[i + 1] for i in range(0, len(padded), 2))
        return full_box(
            b"stz2", b"\x00\x00\x00" + bytes([bits]) + struct.pack(">I", len(sizes)) + packed
        )
    if spec.fixed_size:
        assert len(set(sizes)) == 1
        return full_box(b"stsz", struct.pack(">II", sizes[0], len(sizes)))
    return full_box(
        b"stsz", struct.pack(">II", 0, len(sizes)) + b"".join(struct.pack(">I", s) for s in sizes)
    )


def _chunks(spec: TrackSpec) -> list[list[bytes]]:
    return [
        list(spec.samples[i : i + spec.per_chunk])
        for i in range(0, len(spec.samples), spec.per_chunk)
    ]


def _stsc(spec: TrackSpec) -> bytes:
    chunks = _chunks(spec)
    descriptions = spec.descriptions or [1] * len(chunks)
    entries: list[tuple[int, int, int]] = []
    for number, (chunk, description) in enumerate(zip(chunks, descriptions, strict=True), start=1):
        if not entries or entries[-1][1:] != (len(chunk), description):
            entries.append((number, len(chunk), description))
    body = struct.pack(">I", len(entries)) + b"".join(struct.pack(">III", *e) for e in entries)
    return full_box(b"stsc", body)


def _stco(spec: TrackSpec, offsets: Sequence[int]) -> bytes:
    if spec.co64:
        return full_box(
            b"co64",
            struct.pack(">I", len(offsets)) + b"".join(struct.pack(">Q", o) for o in offsets),
        )
    return full_box(
        b"stco", struct.pack(">I", len(offsets)) + b"".join(struct.pack(">I", o) for o in offsets)
    )


def _trak(spec: TrackSpec, number: int, offsets: Sequence[int], creation: int) -> bytes:
    entries = b"".join(box(f, b"\x00" * 6 + struct.pack(">H", 1)) for f in spec.formats)
    stsd = full_box(b"stsd", struct.pack(">I", len(spec.formats)) + entries)
    tables = (
        stsd
        + _stts(spec.durations, spec.stts_runs)
        + _stsc(spec)
        + _stsz(spec)
        + _stco(spec, offsets)
    )
    if spec.sync is not None:
        tables += full_box(
            b"stss",
            struct.pack(">I", len(spec.sync)) + b"".join(struct.pack(">I", n) for n in spec.sync),
        )
    duration = sum(spec.durations)
    mdhd = full_box(
        b"mdhd", struct.pack(">IIIIHH", creation, creation, spec.timescale, duration, 0x55C4, 0)
    )
    hdlr = full_box(b"hdlr", b"\x00" * 4 + spec.handler + b"\x00" * 12 + b"Test handler\x00")
    minf = box(
        b"minf", box(b"dinf", full_box(b"dref", struct.pack(">I", 0))) + box(b"stbl", tables)
    )
    tkhd = full_box(
        b"tkhd", struct.pack(">IIIII", creation, creation, number, 0, duration) + b"\x00" * 60
    )
    edts = b""
    if spec.edits:
        elst = struct.pack(">I", len(spec.edits)) + b"".join(
            struct.pack(">IiHH", d, t, 1, 0) for d, t in spec.edits
        )
        edts = box(b"edts", full_box(b"elst", elst))
    return box(b"trak", tkhd + edts + box(b"mdia", mdhd + hdlr + minf))


def make_mp4(
    tracks: Sequence[TrackSpec],
    *,
    movie_timescale: int = 1000,
    moov_first: bool = False,
    moov_extra: bytes = b"",
    top_extra: bytes = b"",
    creation: datetime | None = datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
    mdat_open_ended: bool = False,
    brand: bytes = b"isom",
) -> bytes:
    """A complete MP4: ``ftyp``, ``top_extra``, then ``moov`` and ``mdat`` in either order.

    ``moov_extra`` is appended inside ``moov`` (``udta``, ``meta`` …). ``mdat_open_ended``
    writes the mdat with size 0 ("to the end of the file", only valid when it comes last).
    """
    ftyp = box(b"ftyp", brand + b"\x00\x00\x02\x00" + brand + b"mp41")
    created = mac_seconds(creation)
    data = b"".join(b"".join(s) for spec in tracks for s in [spec.samples])

    def moov(mdat_data_offset: int) -> bytes:
        traks = b""
        pos = mdat_data_offset
        for number, spec in enumerate(tracks, start=1):
            offsets = []
            for chunk in _chunks(spec):
                offsets.append(pos)
                pos += sum(len(s) for s in chunk)
            traks += _trak(spec, number, offsets, created)
        duration = max(
            (sum(t.durations) * movie_timescale // t.timescale for t in tracks), default=0
        )
        mvhd = full_box(
            b"mvhd",
            struct.pack(">IIII", created, created, movie_timescale, duration) + b"\x00" * 80,
        )
        return box(b"moov", mvhd + traks + moov_extra)

    mdat_header = 8
    if moov_first:
        moov_size = len(moov(0))
        body = moov(len(ftyp) + len(top_extra) + moov_size + mdat_header)
        mdat = struct.pack(">I4s", 0 if mdat_open_ended else 8 + len(data), b"mdat") + data
        return ftyp + top_extra + body + mdat
    mdat = box(b"mdat", data)
    return ftyp + top_extra + mdat + moov(len(ftyp) + len(top_extra) + mdat_header)


def udta_text(box_type: bytes, text: str) -> bytes:
    """A QuickTime international-text udta item (``©xyz``, ``©mak`` …)."""
    raw = text.encode()
    return box(box_type, struct.pack(">HH", len(raw), 0x15C7) + raw)


def apple_keys(items: dict[str, str], *, quicktime_style: bool = True) -> bytes:
    """``meta`` with ``hdlr mdta``, ``keys`` and ``ilst`` (UTF-8 values)."""
    keys = b"".join(struct.pack(">I4s", 8 + len(k.encode()), b"mdta") + k.encode() for k in items)
    keys_box = full_box(b"keys", struct.pack(">I", len(items)) + keys)
    ilst = b"".join(
        box(struct.pack(">I", i), box(b"data", struct.pack(">II", 1, 0) + v.encode()))
        for i, v in enumerate(items.values(), start=1)
    )
    hdlr = full_box(b"hdlr", b"\x00" * 4 + b"mdta" + b"\x00" * 12 + b"\x00")
    payload = hdlr + keys_box + box(b"ilst", ilst)
    return box(b"meta", payload if quicktime_style else b"\x00\x00\x00\x00" + payload)


def probe_bytes(data: bytes, name: str = "test.mp4", **kwargs: bool) -> mp4.Mp4Info:
    return mp4.probe(io.BytesIO(data), name, **kwargs)


def samples_of(data: bytes, track: int = 0) -> list[mp4.Sample]:
    f = io.BytesIO(data)
    info = mp4.probe(f, "test.mp4")
    return list(mp4.iter_samples(f, "test.mp4", info.tracks[track]))


def simple_track(count: int = 5, **kwargs: object) -> TrackSpec:
    samples = [bytes([i % 256]) * (10 + i) for i in range(count)]
    return TrackSpec(samples=samples, durations=[100] * count, **kwargs)  # type: ignore[arg-type]


# --- corpus --------------------------------------------------------------------------------

#: (handler, formats, sample count) of every track, and the location tag, per corpus video.
CORPUS_EXPECTED: dict[str, tuple[list[tuple[str, tuple[str, ...], int]], str | None]] = {
    "gpmfparser__max-heromode.mp4": (
        [
            ("vide", ("avc1",), 315),
            ("soun", ("mp4a",), 493),
            ("tmcd", ("tmcd",), 1),
            ("meta", ("gpmd",), 11),
            ("meta", ("fdsc",), 821),
        ],
        "+33.1268-117.3273/",
    ),
    "gpmfparser__karma.mp4": (
        [
            ("vide", ("avc1",), 362),
            ("soun", ("mp4a",), 566),
            ("tmcd", ("tmcd",), 1),
            ("meta", ("gpmd",), 13),
            ("meta", ("fdsc",), 943),
        ],
        None,
    ),
    "mde__with-gps.mov": (
        [
            ("soun", ("mp4a",), 175),
            ("vide", ("avc1",), 120),
            ("meta", ("mebx",), 101),
            ("meta", ("mebx",), 1),
        ],
        "+32.0929+034.8620+028.516/",
    ),
    "mde__with-gps.mp4": ([("vide", ("avc1",), 3), ("soun", ("mp4a",), 8)], "+51.4169-000.0806/"),
    "mde__ftyp3gp5.mp4": ([("vide", ("avc1",), 39), ("soun", ("mp4a",), 62)], "+00.0000+000.0000/"),
    "mde__sample.3gp": ([("soun", ("samr",), 50), ("vide", ("mp4v",), 74)], None),
    "exiftool__QuickTime.mov": ([("vide", ("jpeg",), 149), ("soun", ("raw ",), 39112)], None),
}


@needs_corpus
@pytest.mark.parametrize("file_name", sorted(CORPUS_EXPECTED))
def test_corpus_layout(file_name: str) -> None:
    tracks, location = CORPUS_EXPECTED[file_name]
    with open(VIDEO / file_name, "rb") as f:
        info = mp4.probe(f, file_name)
    assert info.has_moov and info.truncated is None
    assert [(t.handler, t.formats, t.sample_count) for t in info.tracks] == tracks
    assert (info.location.text if info.location else None) == location
    assert info.movie is not None and info.movie.timescale > 0


@needs_corpus
def test_corpus_tags_and_times() -> None:
    with open(VIDEO / "mde__with-gps.mov", "rb") as f:
        info = mp4.probe(f, "with-gps.mov")
    assert info.tags == {
        "make": "Apple",
        "model": "iPhone 6",
        "software": "12.3",
        "creationdate": "2019-07-24T11:25:40+0300",
    }
    assert info.location == mp4.Location(
        32.0929,
        34.862,
        28.516,
        "keys com.apple.quicktime.location.ISO6709",
        "+32.0929+034.8620+028.516/",
    )
    assert info.movie is not None
    assert info.movie.creation_time == datetime(2019, 7, 24, 8, 25, 57, tzinfo=UTC)
    assert info.major_brand == "qt  "
    with open(VIDEO / "gpmfparser__max-heromode.mp4", "rb") as f:
        info = mp4.probe(f, "max")
        gpmd = info.tracks_with_format("gpmd")[0]
        samples = list(mp4.iter_samples(f, "max", gpmd))
    assert [s.decode_time for s in samples] == [i * 1001 for i in range(11)]
    assert [s.time_s for s in samples] == [i * 1001 / 1000 for i in range(11)]
    assert samples[-1].duration_s == 0.533
    assert {b.type for b in info.udta} >= {b"FIRM", b"GPMF", b"\xa9xyz"}


@needs_corpus
def test_stripped_media_is_not_called_truncated() -> None:
    """ExifTool's QuickTime.mov keeps a moov whose media was removed (an empty mdat, no chunk
    offsets): the layout reads, walking the samples is a named error, not a truncation."""
    name = "exiftool__QuickTime.mov"
    with open(VIDEO / name, "rb") as f:
        info = mp4.probe(f, name)
        with pytest.raises(CorruptMediaError, match="place only 0 of its 149 samples") as err:
            list(mp4.iter_samples(f, name, info.tracks[0]))
    assert err.value.reason == "corrupt_media"


# --- truncation ----------------------------------------------------------------------------


@needs_corpus
@pytest.mark.parametrize(
    ("cut", "words"),
    [
        (10, "box 'ftyp' at offset 0 declares 20 bytes"),
        (24, "the file ends inside a box header at offset 20"),
        (1_000, "box 'mdat' at offset 20 declares 3638590 bytes"),
        (2_000_000, "no 'moov' box"),
        (
            3_638_610,
            "writes when it stops; top-level boxes: 'ftyp', 'mdat')",
        ),
        (3_638_620, "the 'moov' index is incomplete"),
        (3_670_000, "box 'moov' at offset 3638610 declares 42150 bytes"),
        (3_680_759, "(1 byte(s) missing)"),
    ],
)
def test_truncated_copies_of_max_heromode(cut: int, words: str) -> None:
    data = (VIDEO / "gpmfparser__max-heromode.mp4").read_bytes()[:cut]
    with pytest.raises(CorruptMediaError) as err:
        probe_bytes(data, "cut.mp4")
    assert err.value.reason == mp4.TRUNCATED
    assert str(err.value).startswith("cut.mp4: ")
    assert words in str(err.value)
    info = probe_bytes(data, "cut.mp4", allow_truncated=True)
    assert info.truncated is not None and words in info.truncated
    assert not info.has_moov


def test_truncated_mdat_after_moov() -> None:
    """moov first (a recorder that writes its index up front): a cut inside mdat shows as the
    mdat size running past the end, or, with an open-ended mdat, as chunks past the end."""
    spec = simple_track(20)
    whole = make_mp4([spec], moov_first=True)
    assert len(samples_of(whole)) == 20
    with pytest.raises(CorruptMediaError, match=r"box 'mdat' at offset .* declares") as err:
        probe_bytes(whole[:-50])
    assert err.value.reason == mp4.TRUNCATED
    info = probe_bytes(whole[:-50], allow_truncated=True)
    assert info.has_moov and len(info.tracks) == 1  # the index is still readable

    open_ended = make_mp4([spec], moov_first=True, mdat_open_ended=True)
    assert probe_bytes(open_ended).truncated is None
    with pytest.raises(
        CorruptMediaError, match=r"track 1 \(vide\) has a chunk at offset \d+, past the end"
    ) as err:
        probe_bytes(open_ended[:-120])
    assert err.value.reason == mp4.TRUNCATED
    # a cut that leaves every chunk start in the file is found when the sample is read
    f = io.BytesIO(open_ended[:-5])
    info = mp4.probe(f, "cut.mp4")
    last = list(mp4.iter_samples(f, "cut.mp4", info.tracks[0]))[-1]
    with pytest.raises(CorruptMediaError, match="5 byte\\(s\\) short") as err:
        mp4.read_sample(f, "cut.mp4", last)
    assert err.value.reason == mp4.TRUNCATED


# --- boxes ---------------------------------------------------------------------------------


def test_largesize_uuid_and_zero_padding() -> None:
    extra = box(b"free", b"x" * 5, large=True) + box(b"uuid", bytes(16) + b"abc")
    data = make_mp4([simple_track(3)], top_extra=extra)
    info = probe_bytes(data + b"\x00\x00\x00")  # trailing zero padding is not a truncation
    kinds = [(b.type, b.header_size, b.size) for b in info.top_level]
    assert kinds[1] == (b"free", 16, 21)
    assert kinds[2] == (b"uuid", 24, 27)
    assert [s.size for s in samples_of(data)] == [10, 11, 12]
    with pytest.raises(CorruptMediaError, match="ends inside a box header") as err:
        probe_bytes(data + b"\x00\x01\x00")  # non-zero trailing bytes are a cut header
    assert err.value.reason == mp4.TRUNCATED


def test_top_level_size_zero_runs_to_end() -> None:
    data = make_mp4([simple_track(4)], moov_first=True, mdat_open_ended=True)
    info = probe_bytes(data)
    mdat = info.top_level[-1]
    assert mdat.type == b"mdat" and mdat.open_ended and mdat.end == len(data)


def test_quicktime_terminator_and_meta_styles() -> None:
    udta = box(b"udta", udta_text(b"\xa9xyz", "+46.0569+014.5058/") + b"\x00\x00\x00\x00")
    for quicktime_style in (True, False):
        meta = apple_keys(
            {"com.apple.quicktime.make": "Maker", "com.apple.quicktime.model": "Cam 1"},
            quicktime_style=quicktime_style,
        )
        info = probe_bytes(make_mp4([simple_track(2)], moov_extra=udta + meta))
        assert info.tags == {"make": "Maker", "model": "Cam 1"}
        assert info.location == mp4.Location(
            46.0569, 14.5058, None, "udta ©xyz", "+46.0569+014.5058/"
        )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+32.0929+034.8620+028.516/", (32.0929, 34.862, 28.516)),
        ("-33.8688+151.2093/", (-33.8688, 151.2093, None)),
        ("+4603.414+01430.348/", (46 + 3.414 / 60, 14 + 30.348 / 60, None)),
        (
            "+460324.8+0143020.9-012.5CRSWGS_84/",
            (46 + 3 / 60 + 24.8 / 3600, 14 + 30 / 60 + 20.9 / 3600, -12.5),
        ),
        ("+00.0000+000.0000/", (0.0, 0.0, None)),
        ("+91.0000+000.0000/", None),
        ("+46.0+14.0/", None),  # a 2-digit longitude is not ISO 6709
        ("nonsense", None),
        ("+4699.0+01430.0/", None),  # 99 minutes
    ],
)
def test_iso6709(text: str, expected: tuple[float, float, float | None] | None) -> None:
    got = mp4.parse_iso6709(text)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


# --- sample tables -------------------------------------------------------------------------


def expected_samples(spec: TrackSpec, first_offset: int) -> list[tuple[int, int, int, int]]:
    out = []
    offset = first_offset
    t = 0
    for data, duration in zip(spec.samples, spec.durations, strict=True):
        out.append((offset, len(data), t, duration))
        offset += len(data)
        t += duration
    return out


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"per_chunk": 3},
        {"per_chunk": 4, "co64": True},
        {"stz2_bits": 16},
        {"stz2_bits": 8},
        {"stz2_bits": 4, "sample_size": 12},
        {"fixed_size": True, "sample_size": 7, "per_chunk": 2},
        {"stts_runs": False, "per_chunk": 5},
    ],
)
def test_sample_table_variants(options: dict[str, object]) -> None:
    size = options.pop("sample_size", None)
    count = 11
    samples = [bytes([i]) * (size if isinstance(size, int) else 10 + i) for i in range(count)]
    durations = [100 + (i % 3) for i in range(count)]
    spec = TrackSpec(samples=samples, durations=durations, timescale=600, **options)  # type: ignore[arg-type]
    data = make_mp4([spec])
    got = samples_of(data)
    first = data.index(samples[0])
    assert [(s.offset, s.size, s.decode_time, s.duration) for s in got] == expected_samples(
        spec, first
    )
    assert [data[s.offset : s.offset + s.size] for s in got] == list(samples)
    assert got[5].time_s == got[5].decode_time / 600
    assert all(s.is_sync for s in got)


def test_sync_samples_and_descriptions() -> None:
    spec = simple_track(
        6, per_chunk=2, sync=[1, 4], formats=(b"avc1", b"avc3"), descriptions=[1, 2, 2]
    )
    got = samples_of(make_mp4([spec]))
    assert [s.is_sync for s in got] == [True, False, False, True, False, False]
    assert [s.description for s in got] == [1, 1, 2, 2, 2, 2]
    info = probe_bytes(make_mp4([spec]))
    assert info.tracks[0].formats == ("avc1", "avc3")


def test_stts_shorter_than_samples_pads_with_zero() -> None:
    """As mapillary_tools: samples past the stts table get duration 0."""
    spec = simple_track(4)
    data = bytearray(make_mp4([spec]))
    stts = data.index(b"stts")
    # 4 runs of 1 collapse to one run of 4 (count 4, delta 100): shorten the run to 2
    assert data[stts + 8 : stts + 20] == struct.pack(">III", 1, 4, 100)
    data[stts + 12 : stts + 16] = struct.pack(">I", 2)
    got = samples_of(bytes(data))
    assert [s.duration for s in got] == [100, 100, 0, 0]
    assert [s.decode_time for s in got] == [0, 100, 200, 200]


def test_big_table_streams_in_bounded_memory() -> None:
    """100 000 samples: the tables are read in blocks, never whole, and memory stays flat."""
    count = 100_000
    spec = TrackSpec(samples=[b"\x01\x02"] * count, durations=[1] * count, per_chunk=7, co64=True)
    data = make_mp4([spec])
    reads: list[int] = []

    class Counting(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            out = super().read(size)
            reads.append(len(out))
            return out

    f = Counting(data)
    info = mp4.probe(f, "big.mp4")
    tracemalloc.start()
    n = 0
    for sample in mp4.iter_samples(f, "big.mp4", info.tracks[0]):
        assert sample.size == 2
        n += 1
    _current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == count
    assert max(reads) <= 4096 * 12  # one table block at most
    assert peak < 200_000  # the stsz table alone is 400 kB


# --- malformed input: a named CorruptMediaError, never another exception -----------------


def patch(data: bytes, marker: bytes, offset: int, value: bytes) -> bytes:
    """Overwrite ``value`` at ``offset`` bytes after the first ``marker`` (a box type)."""
    at = data.index(marker) + offset
    return data[:at] + value + data[at + len(value) :]


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (
            lambda d: patch(d, b"stsz", 12, struct.pack(">I", 1_000_000)),
            "stsz at offset .* announces 1000000 sample sizes",
        ),
        (
            lambda d: patch(d, b"stco", 8, struct.pack(">I", 0xFFFFFFFF)),
            "'stco' at offset .* announces 4294967295 entries",
        ),
        (
            lambda d: patch(d, b"stsc", 12, struct.pack(">I", 2)),
            "first stsc entry starts at chunk 2",
        ),
        (
            lambda d: patch(d, b"stsd", 8, struct.pack(">I", 3)),
            "announces 3 sample entries but holds 1",
        ),
        (lambda d: patch(d, b"mdhd", 16, struct.pack(">I", 0)), "media timescale 0"),
        (lambda d: patch(d, b"mdhd", 4, b"\x07"), "mdhd' at offset .* has unknown version 7"),
        (
            lambda d: patch(d, b"stbl", -4, struct.pack(">I", 4)),
            "declares 4 byte\\(s\\), less than its own 8-byte header",
        ),
        (
            lambda d: patch(d, b"minf", -4, struct.pack(">I", 100_000)),
            "box 'minf' .* running .* past the end of its parent",
        ),
        (
            lambda d: patch(d, b"stco", 8, struct.pack(">I", 1)),
            "chunk tables place only 2 of its 5 samples",
        ),
        (lambda d: patch(d, b"stsz", 8, struct.pack(">I", 0x7FFFFFFF)), None),
    ],
)
def test_malformed_tables(mutate: object, words: str | None) -> None:
    spec = simple_track(5, per_chunk=2)
    data = mutate(make_mp4([spec]))  # type: ignore[operator]
    f = io.BytesIO(data)
    with pytest.raises(CorruptMediaError) as err:
        info = mp4.probe(f, "bad.mp4")
        samples = list(mp4.iter_samples(f, "bad.mp4", info.tracks[0]))
        for s in samples:
            mp4.read_sample(f, "bad.mp4", s)
    assert str(err.value).startswith("bad.mp4: ")
    if words is not None:
        assert re.search(words, str(err.value)), str(err.value)


def test_hostile_sample_count_is_refused_not_walked() -> None:
    spec = TrackSpec(samples=[b"ab"] * 3, durations=[1] * 3, fixed_size=True, per_chunk=3)
    data = patch(make_mp4([spec]), b"stsz", 12, struct.pack(">I", 0xFFFFFFF0))
    f = io.BytesIO(data)
    info = mp4.probe(f, "x.mp4")
    assert info.tracks[0].sample_count == 0xFFFFFFF0
    with pytest.raises(CorruptMediaError, match="more than the 67108864 this reader walks"):
        next(mp4.iter_samples(f, "x.mp4", info.tracks[0]))


@pytest.mark.parametrize(
    ("data", "words", "reason"),
    [
        (b"", "empty file", "corrupt_media"),
        (
            b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
            "not an MP4/QuickTime file: the first bytes ff d8",
            "corrupt_media",
        ),
        (b"hello", "not an MP4/QuickTime file", "corrupt_media"),
        (b"\x00\x00\x00\x10ftypisom\x00\x00\x00\x00", "no 'moov' box", "truncated_mp4"),
        (
            struct.pack(">I4sQ", 1, b"mdat", 1 << 62),
            "declares 4611686018427387904 bytes",
            "truncated_mp4",
        ),
    ],
)
def test_not_mp4_or_cut(data: bytes, words: str, reason: str) -> None:
    with pytest.raises(CorruptMediaError, match=words.replace("(", r"\(")) as err:
        probe_bytes(data, "x.mp4")
    assert err.value.reason == reason


def test_unreadable_file_is_an_item_error() -> None:
    class Broken(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            raise OSError(5, "Input/output error")

    with pytest.raises(ItemError, match=r"x\.mp4: cannot read: Input/output error") as err:
        mp4.probe(Broken(make_mp4([simple_track(2)])), "x.mp4")
    assert err.value.reason == "unreadable"


def test_large_leaf_payload_is_refused() -> None:
    huge = box(b"hdlr", b"\x00" * 5000)  # an hdlr beyond the 4096-byte limit for a header box
    data = make_mp4([simple_track(2)])
    mdia = data.index(b"mdia") + 4
    data = data[:mdia] + huge + data[mdia:]
    # sizes of the enclosing boxes now lie; rebuild by patching trak/mdia/moov sizes
    for marker in (b"moov", b"trak", b"mdia"):
        at = data.index(marker) - 4
        (size,) = struct.unpack_from(">I", data, at)
        data = data[:at] + struct.pack(">I", size + len(huge)) + data[at + 4 :]
    with pytest.raises(CorruptMediaError, match="more than the 4096 bytes this reader accepts"):
        probe_bytes(data)


# --- telemetry anchoring -------------------------------------------------------------------


def test_timed_track_anchors() -> None:
    created = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    points = [mp4.TimedPoint(1.5, 46.0, 14.0), mp4.TimedPoint(0.5, 46.001, 14.0, epoch_s=None)]
    timed = mp4.timed_track(points, "v", movie_creation=created)
    assert timed.clock == "container" and timed.start_time == created
    assert [p.time_s for p in timed.points] == [0.5, 1.5]
    assert timed.track.start == created + timedelta(seconds=0.5)
    assert timed.movie_time(timed.track.end) == 1.5

    with_gps = [mp4.TimedPoint(2.0, 46.0, 14.0, epoch_s=1_700_000_010.0)]
    timed = mp4.timed_track(with_gps, "v", movie_creation=created)
    assert timed.clock == "gps"
    assert timed.start_time == datetime.fromtimestamp(1_700_000_008.0, UTC)

    timed = mp4.timed_track(points, "v", movie_creation=None)
    assert timed.clock == "none" and timed.start_time == datetime(1970, 1, 1, tzinfo=UTC)

    bad = [mp4.TimedPoint(0.0, 95.0, 14.0), mp4.TimedPoint(1.0, float("nan"), 14.0)]
    with pytest.raises(ItemError, match="no usable GPS point") as err:
        mp4.timed_track(bad, "v", movie_creation=None)
    assert err.value.reason == "no_video_gps"
    timed = mp4.timed_track([*bad, *points], "v", movie_creation=None)
    assert timed.track.notes == ("2 point(s) with impossible values dropped",)
