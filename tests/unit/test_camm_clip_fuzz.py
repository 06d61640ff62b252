"""Fuzz: clips of seeded random mutations of videos give a clip or an ItemError — never another
exception — within the time bound (the mutations and the check of test_video_fuzz).

Inputs: a built video with everything the clip code reads (B-frames with ``ctts``, ``stss``,
an edit list, several samples per chunk, audio between them) and the corpus GoPro MAX video.
Each mutant is read (:func:`camm_mp4.read_clip_source`), its keyframes and end taken, a clip
planned over the middle of it and streamed whole.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest

from daemon.media import camm_mp4
from daemon.media.camm_mp4 import CammStream
from tests.unit.test_camm_clip import MAX, Trk, build, gop_video, points
from tests.unit.test_video_fuzz import box_offsets, check, mutate_video, structure_ranges

POINTS = points(0.0, 12.0, 0.05)


def clip_everything(data: bytes, name: str) -> None:
    f = io.BytesIO(data)
    clip = camm_mp4.read_clip_source(f, name)
    keys, end = clip.keyframes(), clip.end_s()
    start = keys[len(keys) // 2] if keys else 0.0
    plan = camm_mp4.layout_clip(clip, POINTS, start, max(end, start + 0.5))
    CammStream(plan, f).read()


def fuzz(name: str, data: bytes, seed: int, rounds: int) -> dict[str, int]:
    clip_everything(data, name)  # the unmutated file clips
    rng = random.Random(seed)
    boxes, ranges = box_offsets(data), structure_ranges(data)
    outcomes: dict[str, int] = {}
    for i in range(rounds):
        mutated, what = mutate_video(data, rng, boxes, ranges)
        case = f"{name} seed {seed} mutation {i} ({what})"
        outcome = check(case, lambda m=mutated: clip_everything(m, name))  # type: ignore[misc]
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


def test_fuzz_clips_of_a_built_video(tmp_path: Path) -> None:
    video = gop_video(48, per_chunk=3)
    audio = Trk(48, handler=b"soun", size=40, per_chunk=3)
    data = build(tmp_path / "b.mp4", [video, audio]).path.read_bytes()
    outcomes = fuzz("built-b-frames.mp4", data, seed=637, rounds=300)
    assert outcomes.get("ok", 0) > 0 and len(outcomes) > 1
    print(outcomes)


@pytest.mark.skipif(not MAX.is_file(), reason=f"no corpus video at {MAX}")
def test_fuzz_clips_of_the_gopro_max_video() -> None:
    outcomes = fuzz(MAX.name, MAX.read_bytes(), seed=309, rounds=80)
    assert sum(outcomes.values()) == 80
    print(outcomes)
