"""Fuzz: seeded random mutations of video files and GPMF/NMEA payloads give a track or an
ItemError — never another exception (struct.error, IndexError, MemoryError, ValueError …),
and never a long stall.

Inputs: every corpus video, the corpus's raw GPMF payloads, and built CAMM and BlackVue files
(none of those exists in the corpus). Mutations aim at the structure: box size fields
(0, 1, 7, 8, ±1, 2³²−1, random), table entry counts, bytes flipped inside ``moov`` and the
KLV/NMEA data, truncation anywhere, ranges deleted or duplicated. The seeds are fixed, so a
failure names a reproducible case.
"""

from __future__ import annotations

import io
import random
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.errors import ItemError
from daemon.media import blackvue, camm, gpmf, mp4
from daemon.media.video import read_video_fileobj
from tests.unit.test_gpmf_camm_blackvue import (
    blackvue_gps,
    blackvue_mp4,
    camm_mp4,
    device,
    drive,
    gpmd_mp4,
    gps5_stream,
)
from tests.unit.test_mp4 import TrackSpec, make_mp4

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
VIDEO = CORPUS / "video"
RAW = VIDEO / "gpmf_raw"
VIDEOS = sorted(p for p in VIDEO.iterdir() if p.is_file()) if VIDEO.is_dir() else []
RAWS = sorted(RAW.glob("*.raw")) if RAW.is_dir() else []
MUTATIONS_PER_VIDEO = 120
MUTATIONS_PER_PAYLOAD = 150
MAX_SECONDS_PER_CASE = 5.0
TABLES = (
    b"stts",
    b"stsz",
    b"stz2",
    b"stsc",
    b"stco",
    b"co64",
    b"stss",
    b"stsd",
    b"elst",
    b"keys",
    b"dref",
)
INTERESTING = (0, 1, 7, 8, 9, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFF8)


def box_offsets(data: bytes) -> list[int]:
    """Offsets of every box header our reader walks (a valid file, before mutation)."""
    f = io.BytesIO(data)
    out: list[int] = []

    def walk(start: int, end: int, parent: mp4.Box | None, depth: int) -> None:
        for b in mp4.iter_boxes(f, "x", start, end, parent=parent):
            out.append(b.offset)
            if depth < 8 and (b.type in mp4.CONTAINERS or b.type in (b"meta", b"free")):
                try:
                    for child in mp4.child_boxes(f, "x", b):
                        out.append(child.offset)
                        if child.type in mp4.CONTAINERS or child.type == b"meta":
                            walk(child.data_offset, child.end, child, depth + 1)
                except ItemError:
                    pass

    walk(0, len(data), None, 0)
    return sorted(set(out))


def structure_ranges(data: bytes) -> list[tuple[int, int]]:
    """Where to flip bytes: every top-level box but a large media data box (in the small
    built files the mdat holds the telemetry samples, so it is fair game)."""
    info = mp4.probe(io.BytesIO(data), "x")
    return [(b.offset, b.end) for b in info.top_level if b.type != b"mdat" or b.size < 1 << 20]


def mutate_video(
    data: bytes, rng: random.Random, boxes: list[int], ranges: list[tuple[int, int]]
) -> tuple[bytes, str]:
    out = bytearray(data)
    kind = rng.choice(["size", "size", "count", "flip", "flip", "truncate", "splice"])
    if kind == "size":
        at = rng.choice(boxes)
        (old,) = struct.unpack_from(">I", out, at)
        value = rng.choice([*INTERESTING, old + 1, max(old - 1, 0), rng.randrange(1 << 32)])
        struct.pack_into(">I", out, at, value & 0xFFFFFFFF)
        return bytes(out), f"size at {at}: {old} -> {value}"
    if kind == "count":
        spots = [i for t in TABLES for i in _find_all(data, t)]
        if spots:
            at = rng.choice(spots) + 8  # type, version/flags, then the count
            if at + 4 <= len(out):
                value = rng.choice([*INTERESTING, rng.randrange(1 << 16)])
                struct.pack_into(">I", out, at, value)
                return bytes(out), f"count at {at} -> {value}"
        kind = "flip"
    if kind == "flip":
        start, end = rng.choice(ranges)
        changes = []
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(start, end)
            out[at] = rng.randrange(256)
            changes.append(at)
        return bytes(out), f"bytes flipped at {changes}"
    if kind == "truncate":
        cut = rng.randrange(len(data))
        return bytes(out[:cut]), f"cut at {cut}"
    start, end = rng.choice(ranges)
    a = rng.randrange(start, end)
    b = min(end, a + rng.randint(1, 64))
    if rng.random() < 0.5:
        return bytes(out[:a] + out[b:]), f"deleted {a}..{b}"
    return bytes(out[:b] + out[a:b] + out[b:]), f"duplicated {a}..{b}"


def _find_all(data: bytes, needle: bytes) -> list[int]:
    found, at = [], data.find(needle)
    while at >= 0:
        found.append(at)
        at = data.find(needle, at + 1)
    return found


def check(case: str, action: Callable[[], object]) -> str:
    """Run ``action``; only a result or an ItemError is acceptable, within the time bound."""
    started = time.monotonic()
    try:
        action()
        outcome = "ok"
    except ItemError as exc:
        outcome = exc.reason
    except Exception as exc:  # the point of the test: report which input broke the contract
        pytest.fail(f"{case}: {type(exc).__name__}: {exc}")
    elapsed = time.monotonic() - started
    assert elapsed < MAX_SECONDS_PER_CASE, f"{case}: took {elapsed:.1f} s"
    return outcome


def built_videos() -> dict[str, bytes]:
    """Files the corpus lacks: a GPS5 GoPro, a CAMM and a BlackVue video (built)."""
    rows = drive(8)
    gopro = gpmd_mp4(
        [device("Hero8 Black", gps5_stream(rows[:4])), device("Hero8 Black", gps5_stream(rows[4:]))]
    )
    camm_samples = [camm.encode_min_gps(la, lo, al) for la, lo, al, _s in rows]
    camm_file = camm_mp4(camm_samples, [500] * len(rows), edits=[(300, -1)])
    gps, _ = blackvue_gps(count=6)
    return {
        "built-gopro.mp4": gopro,
        "built-camm.mp4": camm_file,
        "built-blackvue.mp4": blackvue_mp4(gps),
    }


def fuzz_video(name: str, data: bytes, seed: int, rounds: int) -> dict[str, int]:
    rng = random.Random(seed)
    boxes = box_offsets(data)
    ranges = structure_ranges(data)
    outcomes: dict[str, int] = {}
    for i in range(rounds):
        mutated, what = mutate_video(data, rng, boxes, ranges)
        case = f"{name} seed {seed} mutation {i} ({what})"
        outcome = check(case, lambda m=mutated: read_video_fileobj(io.BytesIO(m), name))  # type: ignore[misc]
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


@pytest.mark.skipif(not VIDEOS, reason=f"no video corpus at {VIDEO}")
@pytest.mark.parametrize("path", VIDEOS, ids=[p.name for p in VIDEOS])
def test_fuzz_corpus_videos(path: Path) -> None:
    outcomes = fuzz_video(
        path.name, path.read_bytes(), seed=sum(path.name.encode()), rounds=MUTATIONS_PER_VIDEO
    )
    assert sum(outcomes.values()) == MUTATIONS_PER_VIDEO
    print(path.name, outcomes)


@pytest.mark.parametrize("name", ["built-gopro.mp4", "built-camm.mp4", "built-blackvue.mp4"])
def test_fuzz_built_videos(name: str) -> None:
    data = built_videos()[name]
    read_video_fileobj(io.BytesIO(data), name)  # the unmutated file reads
    outcomes = fuzz_video(name, data, seed=len(name), rounds=MUTATIONS_PER_VIDEO)
    print(name, outcomes)


def mutate_payload(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    out = bytearray(data)
    kind = rng.choice(["header", "header", "flip", "truncate", "splice"])
    if kind == "header" and len(out) >= 8:
        at = rng.randrange(0, len(out) - 7) & ~3  # KLV headers are 4-byte aligned
        field = rng.choice(["type", "size", "repeat"])
        if field == "type":
            out[at + 4] = rng.choice(b"\x00?bBcdfFGjJlLqQsSU" + bytes([rng.randrange(256)]))
        elif field == "size":
            out[at + 5] = rng.choice([0, 1, 2, 4, 20, 36, 255, rng.randrange(256)])
        else:
            struct.pack_into(
                ">H", out, at + 6, rng.choice([0, 1, 2, 0xFFFF, rng.randrange(1 << 16)])
            )
        return bytes(out), f"{field} of the KLV at {at}"
    if kind in ("flip", "header"):
        at = rng.randrange(len(out))
        out[at] = rng.randrange(256)
        return bytes(out), f"byte {at}"
    if kind == "truncate":
        cut = rng.randrange(len(out))
        return bytes(out[:cut]), f"cut at {cut}"
    a = rng.randrange(len(out))
    b = min(len(out), a + rng.randint(1, 32))
    return bytes(out[:a] + out[b:]), f"deleted {a}..{b}"


def read_payload(data: bytes) -> None:
    items = gpmf.parse_gpmf(data, "payload")
    gps = gpmf.collect_gps([((item,), i * 1.001, 1.001) for i, item in enumerate(items)])
    gpmf.filter_points(gps.points)


@pytest.mark.skipif(not RAWS, reason=f"no GPMF payloads at {RAW}")
@pytest.mark.parametrize("path", RAWS, ids=[p.name for p in RAWS])
def test_fuzz_gpmf_payloads(path: Path) -> None:
    data = path.read_bytes()
    rng = random.Random(len(data))
    outcomes: dict[str, int] = {}
    for i in range(MUTATIONS_PER_PAYLOAD):
        mutated, what = mutate_payload(data, rng)
        outcome = check(f"{path.name} mutation {i} ({what})", lambda m=mutated: read_payload(m))  # type: ignore[misc]
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    print(path.name, outcomes)


def test_fuzz_blackvue_text() -> None:
    data, _ = blackvue_gps(count=20)
    rng = random.Random(7)
    alphabet = b"$*,.0123456789ABCDEFGNSWV[]\r\n\x00\xff"
    for i in range(MUTATIONS_PER_PAYLOAD):
        out = bytearray(data)
        for _ in range(rng.randint(1, 10)):
            out[rng.randrange(len(out))] = rng.choice(alphabet)
        check(f"gps box mutation {i}", lambda m=bytes(out): blackvue.parse_gps_box(m))  # type: ignore[misc]


def test_fuzz_small_random_files() -> None:
    """Short random byte strings, some starting with a plausible box header."""
    rng = random.Random(11)
    for i in range(300):
        body = bytes(rng.randrange(256) for _ in range(rng.randint(0, 80)))
        if i % 2:
            body = (
                struct.pack(
                    ">I4s",
                    rng.choice([0, 1, 8, 16, len(body) + 8]),
                    rng.choice([b"ftyp", b"moov", b"mdat", b"free"]),
                )
                + body
            )
        check(
            f"random file {i} ({body[:16].hex()})",
            lambda d=body: read_video_fileobj(io.BytesIO(d), "r.mp4"),
        )  # type: ignore[misc]
    spec = TrackSpec(samples=[b"x"], durations=[1])
    with pytest.raises(ItemError) as err:  # a well-formed file without GPS, for contrast
        read_video_fileobj(io.BytesIO(make_mp4([spec])), "plain.mp4")
    assert err.value.reason == "no_video_gps"
