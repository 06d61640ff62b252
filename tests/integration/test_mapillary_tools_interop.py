"""The real mapillary_tools 0.14.7 uploads a synthetic drive to the sandbox.

This is what keeps the sandbox honest: if the reference client cannot finish an upload against
it, the sandbox does not speak the protocol.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from daemon import synth
from daemon.sandbox import Sandbox

REPO = Path(__file__).resolve().parents[2]
MAPILLARY_TOOLS = REPO / ".venv-mt" / "bin" / "mapillary_tools"
TOKEN = "interop-user-token"
FRAMES = 10
RUN_TIMEOUT_S = 180
MAX_REQUESTS = 3 * FRAMES  # per image GET+POST, manifest GET+POST, /me, finish, logging

pytestmark = [
    pytest.mark.mapillary_tools,
    pytest.mark.slow,
    pytest.mark.skipif(
        not MAPILLARY_TOOLS.exists(),
        reason=f"mapillary_tools 0.14.7 not installed at {MAPILLARY_TOOLS} (run `make venv-mt`)",
    ),
]


@dataclass(frozen=True)
class Run:
    """One ``process_and_upload`` of a synthetic drive against a fresh sandbox."""

    sandbox: Sandbox
    frames: dict[str, synth.Frame]
    result: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp_path = tmp_path_factory.mktemp("interop")
    frames = {f.path.name: f for f in synth.write_drive(tmp_path / "drive", FRAMES)}
    with Sandbox(tmp_path / "sandbox", TOKEN) as sandbox:
        result = run_mapillary_tools(sandbox, tmp_path, tmp_path / "drive")
        yield Run(sandbox, frames, result)


def run_mapillary_tools(
    sandbox: Sandbox, tmp_path: Path, images: Path
) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "mapillary.ini"
    config.write_text(f"[sandbox]\nuser_upload_token = {TOKEN}\n")
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TZ": "UTC",
        "MAPILLARY_UPLOAD_ENDPOINT": sandbox.upload_endpoint,
        "MAPILLARY_GRAPH_API_ENDPOINT": sandbox.graph_endpoint,
        "MAPILLARY_CONFIG_PATH": str(config),
        "MAPILLARY_TOOLS_PROMPT_DISABLED": "YES",
        "MAPILLARY_UPLOAD_HISTORY_PATH": str(tmp_path / "history"),
        "MAPILLARY_TOOLS_UPLOAD_CACHE_DIR": str(tmp_path / "cache"),
        "MAPILLARY_TOOLS_MAX_UPLOAD_RETRIES": "2",  # a broken sandbox fails fast, not in 200 tries
    }
    return subprocess.run(
        [str(MAPILLARY_TOOLS), "process_and_upload", str(images), "--user_name", "sandbox"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def capture_time(description: dict[str, Any]) -> datetime:
    """MAPCaptureTime is UTC without saying so."""
    return datetime.strptime(f"{description['MAPCaptureTime']}Z", "%Y_%m_%d_%H_%M_%S_%f%z")


def test_exits_zero(run: Run) -> None:
    assert run.result.returncode == 0, run.result.stderr[-3000:]


def test_lands_one_bundle_with_every_frame_where_and_when_it_was(run: Run) -> None:
    (cluster,) = run.sandbox.clusters()
    assert cluster["file_type"] == "mly_bundle_manifest"
    assert len(cluster["images"]) == FRAMES
    assert {i["description"]["MAPFilename"] for i in cluster["images"]} == set(run.frames)
    for image in cluster["images"]:
        description = image["description"]
        frame = run.frames[description["MAPFilename"]]
        assert description["MAPLatitude"] == pytest.approx(frame.lat, abs=1e-6)
        assert description["MAPLongitude"] == pytest.approx(frame.lon, abs=1e-6)
        assert abs((capture_time(description) - frame.time).total_seconds()) < 0.002
    times = [capture_time(i["description"]) for i in cluster["images"]]
    assert times == sorted(times)


def test_uploaded_images_keep_their_pixels(run: Run) -> None:
    (cluster,) = run.sandbox.clusters()
    for image in cluster["images"]:
        url = f"{run.sandbox.url}/_sandbox/sessions/{image['session_key']}"
        uploaded = httpx.get(url).content
        assert hashlib.md5(uploaded).hexdigest() == image["md5"]
        original = run.frames[image["description"]["MAPFilename"]].path.read_bytes()
        assert pixels(uploaded) == pixels(original)


def pixels(jpeg: bytes) -> bytes:
    with Image.open(io.BytesIO(jpeg)) as image:
        return image.tobytes()


def test_requests_stay_bounded(run: Run) -> None:
    stats = httpx.get(f"{run.sandbox.url}/_sandbox/stats").json()["requests"]
    requests = {route: n for route, n in stats.items() if "/_sandbox/" not in route}

    assert requests["POST /upload/{session_key}"] == FRAMES + 1  # images + manifest, no retries
    assert requests["POST /finish_upload"] == 1
    assert sum(requests.values()) <= MAX_REQUESTS
