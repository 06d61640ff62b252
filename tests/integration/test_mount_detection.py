"""Mount detection with real mounts (issue #7, point 3): the service runs in-process; the test
mounts a "card" under a temporary mount root and the card is scanned whole within 5 s, its
images uploaded to the sandbox. The card's files exist before the mount (a bind mount of a
filled tmpfs), so no filesystem event can announce them: only the mount detection can.

Needs root (or CAP_SYS_ADMIN) for mount(8); skipped with the reason otherwise.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from daemon import synth
from daemon.config import Config, load_config
from daemon.sandbox import Sandbox
from daemon.status import report
from daemon.store.queue import Queue
from tests.e2e.harness import wait_until
from tests.integration.test_service import running

TOKEN = "mount-test-token-7c2b"


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, timeout=20)


def _umount(point: Path) -> None:
    subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=20)


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[list[Path]]:
    """Mount points made by the test, unmounted (lazily) afterwards whatever happens."""
    probe = tmp_path / "probe"
    probe.mkdir()
    try:
        _mount("-t", "tmpfs", "-o", "size=1m", "probe", str(probe))
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"mount(8) not permitted here ({exc}); needs root or CAP_SYS_ADMIN")
    _umount(probe)
    made: list[Path] = []
    yield made
    for point in reversed(made):
        _umount(point)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    with Sandbox(tmp_path / "sandbox", TOKEN) as s:
        yield s


def make_config(tmp: Path, sandbox: Sandbox) -> Config:
    cfg = tmp / "config.toml"
    cfg.write_text(
        f"""[state]
dir = "{tmp / "state"}"
[mapillary]
upload_endpoint = "{sandbox.upload_endpoint}"
graph_endpoint = "{sandbox.graph_endpoint}"
[process]
time_zone = "UTC"
batch_quiet_seconds = 1
[scan]
interval_seconds = 600
[upload]
retry_base_seconds = 0.1
retry_cap_seconds = 0.5
[mounts]
# Long: a card seen within 5 s was seen through the kernel's change signal, not this timer.
rescan_seconds = 600
[[mount_root]]
path = "{tmp / "media"}/*"
require = "camera"
ingest = "copy"
# A camera mounted facing right: the card's images must be processed with this root's options.
offset_angle = 90
""",
        encoding="utf-8",
    )
    return load_config(cfg, env={"MAPILLARY_TOKEN": TOKEN})


def done(cfg: Config) -> int:
    q = Queue.open(cfg.state.database)
    try:
        return int(report(q)["items"]["done"])
    finally:
        q.close()


def events(logs: list[dict[str, Any]], name: str, **fields: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name and all(e.get(k) == v for k, v in fields.items())]


def test_a_card_mounted_under_a_mount_root_is_scanned_whole_and_uploaded(
    tmp_path: Path, sandbox: Sandbox, mounts: list[Path]
) -> None:
    cfg = make_config(tmp_path, sandbox)
    media = tmp_path / "media"
    card, stick, stage = media / "CARD1", media / "STICK", tmp_path / "stage"
    for d in (card, stick, stage):
        d.mkdir(parents=True)
    _mount("-t", "tmpfs", "-o", "size=16m", "mapillaryd-test-stage", str(stage))
    mounts.append(stage)
    frames = synth.write_drive(stage / "DCIM" / "100GOPRO", 4)  # written before the mount

    with capture_logs() as logs, running(cfg):
        # A USB stick with no camera folders: noticed, and left alone.
        _mount("-t", "tmpfs", "-o", "size=1m", "mapillaryd-test-stick", str(stick))
        mounts.append(stick)
        (stick / "notes.jpg").write_bytes(b"not a camera's")
        # The card: its files are there the instant it is mounted.
        _mount("--bind", str(stage), str(card))
        mounts.append(card)
        wait_until(
            lambda: events(logs, "scan_found", root=str(card)), 5, "the new card to be scanned"
        )
        assert events(logs, "card_mounted", point=str(card))
        wait_until(lambda: events(logs, "card_ignored", point=str(stick)), 5, "the stick seen")
        wait_until(lambda: done(cfg) == 4, 60, "the card's 4 images to be uploaded")

        # Pulled: no longer watched, nothing lost; plugged in again: nothing uploaded twice.
        _umount(card)
        wait_until(lambda: events(logs, "card_unmounted", point=str(card)), 5, "the unmount")
        _mount("--bind", str(stage), str(card))
        wait_until(
            lambda: len(events(logs, "card_mounted", point=str(card))) == 2, 5, "the re-insertion"
        )
        synth.write_drive(card / "DCIM" / "101GOPRO", 2, prefix="NEW_", seed=7)
        wait_until(lambda: done(cfg) == 6, 60, "the 2 new images on the re-inserted card")
    assert len(sandbox.clusters()) == 2
    headings = sorted(
        round(i["description"]["MAPCompassHeading"]["TrueHeading"], 3)
        for i in sandbox.clusters()[0]["images"]
    )
    assert headings == sorted(round((f.heading + 90) % 360, 3) for f in frames)
    assert sum(len(c["images"]) for c in sandbox.clusters()) == 6
    assert not any(e.get("root") == str(stick) for e in events(logs, "scan_found"))
