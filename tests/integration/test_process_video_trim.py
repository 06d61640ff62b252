"""Processing a batch holding a native video with privacy zones (daemon.process, real queue).

The corpus GoPro MAX walk (10.5 s, 13 m) with a zone: far away (uploaded whole, as before
trimming existed), in the middle (two clips), around everything (refused ``privacy_zone``),
in the middle with a minimum clip length the stretches do not reach (refused), and with an
edit list the clip code cannot follow (a copy of the file with a patched ``elst``: refused
when a zone is involved, uploaded whole when only a parked stretch would be cut).
"""

from __future__ import annotations

import hashlib
import shutil
import struct
from datetime import UTC
from pathlib import Path

import pytest

from daemon.config import Config, load_config
from daemon.geo.video_limits import VideoPoint
from daemon.geo.video_trim import plan_trim
from daemon.ingest import read_outcome
from daemon.media.video import read_video_track
from daemon.process import cut_batch
from daemon.process_videos import trim_options
from daemon.store.queue import Item, Metadata, NewFile, Queue
from tests.conftest import CORPUS

MAX = CORPUS / "video" / "gpmfparser__max-heromode.mp4"
NOW = 1_780_000_000.0

pytestmark = pytest.mark.skipif(
    not MAX.is_file(), reason=f"no corpus video at {MAX} (../shared absent)"
)


def config(tmp: Path, zone: str = "", process: str = "", min_seconds: float = 2) -> Config:
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "config.toml"
    path.write_text(
        f"""[state]
dir = "{tmp / "state"}"
[[watch]]
path = "{tmp / "card"}"
[process]
time_zone = "UTC"
trim_margin_m = 0
trim_margin_seconds = 0.5
trim_min_seconds = {min_seconds}
{process}
{zone}
""",
        encoding="utf-8",
    )
    return load_config(path, env={})


def zone_at(seconds: float, radius: float) -> str:
    p = min(read_video_track(MAX).points, key=lambda q: abs(q.time_s - seconds))
    return f'[[privacy_zone]]\nname = "z"\nlat = {p.lat!r}\nlon = {p.lon!r}\nradius_m = {radius}\n'


def process(tmp: Path, cfg: Config, video: Path = MAX) -> tuple[Queue, list[Item]]:
    card = tmp / "card"
    card.mkdir(exist_ok=True)
    target = card / "GX010004.MP4"
    if not target.exists():
        shutil.copy(video, target)
    queue = Queue.open(cfg.state.database)
    meta = read_outcome("video", str(target), target.name, UTC)
    assert isinstance(meta, Metadata)
    sha = hashlib.sha256(target.read_bytes()).hexdigest()
    f = NewFile(str(card), str(target), target.stat().st_size, 1, sha, "video", str(target))
    queue.record_file(f, meta, NOW)
    queue.close_quiet_batches(NOW + 60, 1, ())
    [batch] = queue.batches_to_cut()
    cut_batch(queue, batch, cfg, NOW + 60)
    items = queue.conn.execute("SELECT * FROM items ORDER BY id").fetchall()
    return queue, [Item.from_row(r) for r in items]


def test_a_far_zone_leaves_the_video_whole(tmp_path: Path) -> None:
    far = '[[privacy_zone]]\nname = "far"\nlat = 33.2\nlon = -117.3\nradius_m = 500\n'
    queue, items = process(tmp_path, config(tmp_path, far))
    [video] = items
    assert (video.state, video.clip) == ("queued", None)
    assert queue.batch_notes() == []


def test_a_zone_in_the_middle_gives_two_clips(tmp_path: Path) -> None:
    queue, items = process(tmp_path, config(tmp_path, zone_at(5.2, 2.0)))
    video, *clips = items
    assert video.state == "trimmed" and video.reason == "trimmed"
    assert video.detail is not None and video.detail.startswith("GX010004.MP4: kept 2 of 2")
    assert [c.state for c in clips] == ["queued", "queued"]
    windows = [c.clip for c in clips]
    assert windows[0] is not None and windows[1] is not None
    assert windows[0][0] == 0.0 and windows[0][1] < 3.78 and windows[1][0] > 6.73
    assert all(c.parent_id == video.id and c.data_path == video.data_path for c in clips)
    assert len({c.sequence_id for c in clips}) == 2
    # each clip starts where its window does: the capture time moves with it
    assert clips[1].capture_time is not None and clips[0].capture_time is not None
    assert clips[1].capture_time > clips[0].capture_time
    assert queue.batch_notes()[0]["notes"] == [video.detail]


def test_a_zone_around_everything_refuses_the_video(tmp_path: Path) -> None:
    _, [video] = process(tmp_path, config(tmp_path, zone_at(5.2, 500.0)))
    assert (video.state, video.reason) == ("rejected", "privacy_zone")
    assert video.detail is not None and 'privacy zone "z"' in video.detail


def test_stretches_shorter_than_the_minimum_refuse_the_video(tmp_path: Path) -> None:
    # the stretches left around the zone are 3.2 s long
    _, [video] = process(tmp_path, config(tmp_path, zone_at(5.2, 2.0), min_seconds=5))
    assert (video.state, video.reason) == ("rejected", "privacy_zone")
    assert "2 stretches too short to upload" in (video.detail or "")


def with_two_edits(tmp: Path) -> Path:
    """A copy of max-heromode whose video edit list plays at rate 2 (patched in place, so
    nothing else moves): a clip cannot follow it."""
    data = bytearray(MAX.read_bytes())
    at = data.index(b"elst")
    version, count = data[at + 4], struct.unpack_from(">I", data, at + 8)[0]
    assert (version, count) == (0, 1)
    struct.pack_into(">hH", data, at + 12 + 8, 2, 0)
    out = tmp / "src" / "edits.mp4"
    out.parent.mkdir()
    out.write_bytes(bytes(data))
    return out


def test_a_video_that_cannot_be_cut(tmp_path: Path) -> None:
    source = with_two_edits(tmp_path)
    cfg = config(tmp_path / "a", zone_at(5.2, 2.0))
    _, [video] = process(tmp_path / "a", cfg, source)
    assert (video.state, video.reason) == ("rejected", "privacy_zone")
    assert video.detail is not None and "cannot be trimmed" in video.detail
    # only parked stretches to cut (none of privacy): uploaded whole
    parked = config(tmp_path / "b", process="trim_parked_seconds = 2\ntrim_parked_radius_m = 5")
    points = [VideoPoint(p.time_s, p.lat, p.lon) for p in read_video_track(source).points]
    rough = plan_trim(points, (), 10.5, trim_options(parked))
    assert rough.cuts and not any(c.reason == "privacy_zone" for c in rough.cuts)
    _, [video] = process(tmp_path / "b", parked, source)
    assert (video.state, video.clip) == ("queued", None)
