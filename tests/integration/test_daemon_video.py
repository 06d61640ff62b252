"""Dashcam and action-camera video through the running daemon (issue #4, points 4 and 5).

The real GoPro MAX recording of the corpus, dropped into a watched folder, becomes one
``mly_camm_video`` cluster on the sandbox, and the bytes the sandbox received are a CAMM MP4
whose GPS track is the recording's (191 points). A copy cut short, as a dashcam leaves a file
when the power drops, is quarantined with that reason and never uploaded.
"""

from __future__ import annotations

import io
import shutil
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from daemon.config import load_config
from daemon.geo.track import TrackFix, locate
from daemon.media.camm import camm_track
from daemon.media.video import read_video_track
from daemon.sandbox import Sandbox
from tests.conftest import CORPUS
from tests.e2e.harness import wait_until
from tests.integration.test_service import TOKEN, counts, make_config, running, status

MAX = CORPUS / "video" / "gpmfparser__max-heromode.mp4"


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    with Sandbox(tmp_path / "sandbox", TOKEN) as s:
        yield s


def test_a_gopro_video_becomes_one_camm_cluster(tmp_path: Path, sandbox: Sandbox) -> None:
    if not MAX.exists():
        pytest.skip("corpus video missing")
    cfg = make_config(tmp_path, sandbox)
    with running(cfg):
        shutil.copy(MAX, tmp_path / "card" / "GX010001.MP4")
        wait_until(lambda: counts(cfg)["done"] == 1, 120, "the video to be uploaded")
    [cluster] = sandbox.clusters()
    assert cluster["file_type"] == "mly_camm_video"
    key = cluster["session_key"]
    assert key.startswith("mly_tools_") and key.endswith(".mp4")
    with urllib.request.urlopen(f"{sandbox.url}/_sandbox/sessions/{key}", timeout=30) as r:
        uploaded = r.read()
    telemetry = camm_track(io.BytesIO(uploaded), key)
    assert telemetry is not None and telemetry.timed is not None
    original = read_video_track(MAX)
    got, want = telemetry.timed.points, original.points
    assert len(got) == len(want) == 191
    assert all(
        abs(a.lat - b.lat) < 1e-6 and abs(a.lon - b.lon) < 1e-6
        for a, b in zip(got, want, strict=True)
    )
    # The card's file is untouched and was not copied into the spool.
    assert (tmp_path / "card" / "GX010001.MP4").read_bytes() == MAX.read_bytes()
    assert [p for p in cfg.state.spool_dir.rglob("*") if p.is_file()] == []


def test_a_power_cut_recording_is_quarantined(tmp_path: Path, sandbox: Sandbox) -> None:
    if not MAX.exists():
        pytest.skip("corpus video missing")
    cfg = make_config(tmp_path, sandbox)
    data = MAX.read_bytes()
    with running(cfg):
        (tmp_path / "card" / "CUT_0001.MP4").write_bytes(data[: len(data) * 2 // 3])
        wait_until(lambda: counts(cfg)["quarantined"] == 1, 60, "the cut video quarantined")
        [row] = status(cfg)["not_uploaded"]
    assert row["reason"] == "truncated_mp4"
    assert "CUT_0001.MP4" in row["detail"]
    assert sandbox.clusters() == []


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_frames_mode_uploads_an_image_sequence_on_the_track(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    """``video = "frames"``: the video is sampled every 3 m into geotagged JPEGs that become
    one image sequence; each frame carries the track's position at its time."""
    if not MAX.exists():
        pytest.skip("corpus video missing")
    card = tmp_path / "card"
    card.mkdir()
    config = tmp_path / "frames.toml"
    config.write_text(
        f"""[state]
dir = "{tmp_path / "state"}"
[[watch]]
path = "{card}"
video = "frames"
video_sample_distance = 3.0
[mapillary]
upload_endpoint = "{sandbox.upload_endpoint}"
graph_endpoint = "{sandbox.graph_endpoint}"
[process]
time_zone = "UTC"
batch_quiet_seconds = 1
""",
        encoding="utf-8",
    )
    cfg = load_config(config, env={"MAPILLARY_TOKEN": TOKEN})
    with running(cfg):
        shutil.copy(MAX, card / "GX010002.MP4")
        wait_until(lambda: counts(cfg)["sampled"] == 1, 120, "the video to be sampled")
        wait_until(
            lambda: counts(cfg)["done"] >= 2 and counts(cfg)["queued"] == 0, 120, "frames uploaded"
        )
    clusters = sandbox.clusters()
    assert [c["file_type"] for c in clusters] == ["mly_bundle_manifest"]
    images = clusters[0]["images"]
    assert len(images) == counts(cfg)["done"] >= 2
    track = read_video_track(MAX).track
    for img in images:
        d = img["description"]
        assert d["MAPFilename"].startswith("GX010002_")
        when = datetime.strptime(d["MAPCaptureTime"] + "+0000", "%Y_%m_%d_%H_%M_%S_%f%z")
        fix = locate(track, when, tolerance_s=0.01)
        assert isinstance(fix, TrackFix)
        assert abs(fix.lat - d["MAPLatitude"]) < 1e-5 and abs(fix.lon - d["MAPLongitude"]) < 1e-5
