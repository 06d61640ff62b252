"""The archive backup end to end: ``mapillaryd backup run`` as a subprocess against the sandbox.

The sandbox (Graph API read side + CDN) runs in this process on 127.0.0.1; the backup is the
real command in a child process, killed with SIGKILL where the test says so. Files are checked
with Pillow and exiftool, not with the daemon's own readers.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from PIL import Image
from timezonefinder import TimezoneFinder

from daemon.sandbox import Sandbox
from daemon.sandbox.graph_archive import ArchiveApi, ArchiveFaults, ArchiveWorld, install, seed_user

TOKEN = "backup-e2e-token-9d41"
USER = "alice"
ZONES = TimezoneFinder()

pytestmark = pytest.mark.slow


class Env:
    def __init__(self, root: Path, sandbox: Sandbox, api: ArchiveApi, archive: Path) -> None:
        self.root, self.sandbox, self.api, self.archive = root, sandbox, api, archive
        self.config = root / "config.toml"

    def write_config(self, **backup: Any) -> None:
        settings = {
            "dir": str(self.archive),
            "username": USER,
            "require_clock_sync": False,
            "min_free_mb": 0,
            "workers": 8,
            "max_requests_per_second": 300.0,
            "page_size": 500,
            "retries": 8,
            "timeout_seconds": 10.0,
            **backup,
        }
        lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
        state = self.root / "state"
        text = f'[state]\ndir = "{state}"\n\n[log]\nformat = "json"\n\n[backup]\n{lines}\n'
        self.config.write_text(text, encoding="utf-8")

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(MAPILLARY_TOKEN=TOKEN, MAPILLARY_GRAPH_API_ENDPOINT=self.sandbox.url)
        env.pop("MAPILLARYD_CONFIG", None)
        return env

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "daemon", *args, "--config", str(self.config)]

    def run(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args), env=self.env(), capture_output=True, text=True, timeout=timeout
        )

    def requests(self) -> dict[str, int]:
        snap = self.sandbox.app.stats.snapshot()["requests"]
        assert isinstance(snap, dict)
        return dict(snap)


@pytest.fixture
def make_env(tmp_path: Path) -> Iterator[Any]:
    sandboxes: list[Sandbox] = []

    def make(world: ArchiveWorld, archive: Path | None = None, **install_args: Any) -> Env:
        sb = Sandbox(tmp_path / "sandbox", TOKEN, username=USER).start()
        sandboxes.append(sb)
        api = install(sb, world, **install_args)
        return Env(tmp_path, sb, api, archive or tmp_path / "archive")

    yield make
    for sb in sandboxes:
        sb.stop()


def archived_files(archive: Path) -> list[Path]:
    return sorted(p for p in archive.rglob("*") if p.is_file() and p.suffix == ".jpg")


def assert_clean_archive(archive: Path, ids: list[str]) -> None:
    """Every id exactly once, as a complete JPEG; nothing partial or empty anywhere."""
    files = archived_files(archive)
    names = [p.stem for p in files]
    assert len(names) == len(set(names)), "an image is archived twice"
    assert sorted(names) == sorted(ids)
    leftovers = [
        p for p in archive.rglob("*") if p.is_file() and p.suffix not in (".jpg", ".geojson")
    ]
    assert leftovers == []
    for p in files:
        assert p.stat().st_size > 0
        with Image.open(p) as im:
            im.load()  # decodes every pixel: a truncated file raises


def exiftool(files: list[Path]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for i in range(0, len(files), 500):
        chunk = files[i : i + 500]
        proc = subprocess.run(
            ["exiftool", "-json", "-n", "-G1", "-a", *map(str, chunk)],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        for entry in json.loads(proc.stdout):
            out[Path(entry["SourceFile"]).stem] = entry
    return out


def unwrap(alt: Any) -> float | None:
    if alt is None:
        return None
    return float(alt - 2**32 if alt >= 2**31 else alt)


def check_exif(record: dict[str, Any], tags: dict[str, Any]) -> None:
    lon, lat = record["geometry"]["coordinates"]
    assert tags["GPS:GPSLatitude"] == pytest.approx(abs(lat), abs=1e-9)
    assert tags["GPS:GPSLatitudeRef"] == ("N" if lat >= 0 else "S")
    assert tags["GPS:GPSLongitude"] == pytest.approx(abs(lon), abs=1e-9)
    assert tags["GPS:GPSLongitudeRef"] == ("E" if lon >= 0 else "W")
    alt = unwrap(record.get("altitude"))
    if alt is None:
        alt = record.get("computed_altitude")
    if alt is None:
        assert "GPS:GPSAltitude" not in tags
    else:
        sign = -1 if tags["GPS:GPSAltitudeRef"] == 1 else 1
        assert sign * tags["GPS:GPSAltitude"] == pytest.approx(alt, abs=1e-3)
    direction = record.get("compass_angle", record.get("computed_compass_angle"))
    if direction is not None:
        assert tags["GPS:GPSImgDirection"] == pytest.approx(direction % 360, abs=1e-3)
        assert tags["GPS:GPSImgDirectionRef"] == "T"
    captured = datetime.fromtimestamp(record["captured_at"] / 1000, UTC)
    offset = tags["ExifIFD:OffsetTimeOriginal"]
    local = datetime.strptime(
        f"{tags['ExifIFD:DateTimeOriginal']}.{str(tags['ExifIFD:SubSecTimeOriginal']).zfill(3)}"
        f"{offset.replace(':', '')}",
        "%Y:%m:%d %H:%M:%S.%f%z",
    )
    assert local == captured
    zone = ZoneInfo(ZONES.timezone_at(lat=lat, lng=lon) or "UTC")
    assert local.utcoffset() == captured.astimezone(zone).utcoffset()
    stamp = str(tags["GPS:GPSTimeStamp"])
    stamp = stamp if "." in stamp else f"{stamp}.0"  # exiftool drops a zero fraction
    gps_time = datetime.strptime(
        f"{tags['GPS:GPSDateStamp']} {stamp}", "%Y:%m:%d %H:%M:%S.%f"
    ).replace(tzinfo=UTC)
    assert abs(gps_time - captured) < timedelta(milliseconds=2)
    for field, tag in (("make", "IFD0:Make"), ("model", "IFD0:Model")):
        assert tags.get(tag) == record.get(field)
    assert tags["IFD0:Artist"] == USER
    if record.get("is_pano"):
        assert tags["XMP-GPano:ProjectionType"] == "equirectangular"
    else:
        assert "XMP-GPano:ProjectionType" not in tags


@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool is not installed")
def test_full_backup_then_incremental_run_downloads_nothing(make_env: Any) -> None:
    world = ArchiveWorld()
    ids = seed_user(world, USER, sequences=5, images_per_sequence=520, seed=11)
    env = make_env(world, url_ttl_seconds=2.0, truncate_pages=True)
    # A token bucket the client should stay under, and (so the test does not depend on how
    # fast this machine is) every 40th Graph request answered 429 whatever the pace.
    faults = ArchiveFaults(fault_rate=0.05, rate=10.0, burst=3.0, seed=5, limit_every=40)
    env.sandbox.faults = faults
    env.write_config()
    assert len(ids) == 2600 and len(world.sequences) == 5
    assert any(not r.get("make") for r in world.images.values())  # omitted fields
    assert any(r.get("is_pano") for r in world.images.values())

    started = time.monotonic()
    first = env.run("backup", "run", "--json")
    elapsed = time.monotonic() - started
    assert first.returncode == 0, first.stderr[-3000:]
    result = json.loads(first.stdout)
    assert result["result"] == "ok" and result["downloaded"] == len(ids)
    assert result["pages"] >= 6  # 2600 images at 500 a page, some pages cut short
    print(f"first run: {elapsed:.1f} s, {result['requests']} requests, faults {faults.counts}")
    assert faults.counts["faults"] > 50 and faults.counts["rate_limited"] > 0
    assert_clean_archive(env.archive, ids)

    tags = exiftool(archived_files(env.archive))
    corrupt = [i for i in ids if env.api.world.art[i].corrupt_exif]
    assert corrupt, "the sandbox served no corrupt EXIF"
    for image_id in ids:
        check_exif(world.images[image_id], tags[image_id])
    sidecars = sorted(env.archive.rglob("*.geojson"))
    features = [f for p in sidecars for f in json.loads(p.read_text())["features"]]
    assert sorted(f["properties"]["id"] for f in features) == sorted(ids)

    before = env.requests()
    second = env.run("backup", "run", "--json")
    assert second.returncode == 0, second.stderr[-3000:]
    again = json.loads(second.stdout)
    after = env.requests()
    assert again["downloaded"] == 0 and again["listed"] == len(ids)
    assert again["pages"] == result["pages"]  # one listing pass, no more
    assert after.get("GET /cdn/{cdn_path}", 0) == before.get("GET /cdn/{cdn_path}", 0)
    assert after.get("GET /{object_id}", 0) == before.get("GET /{object_id}", 0)
    pages_requested = after["GET /images"] - before["GET /images"]
    assert pages_requested <= again["pages"] * 2  # retries of faulted pages only

    status = env.run("backup", "status", "--json")
    summary = json.loads(status.stdout)
    assert summary["last_run"]["result"] == "ok" and summary["counts"]["archived"] == len(ids)
    assert summary["next_run"] and summary["failure"] is None


def test_ten_sigkills_at_random_moments_then_complete(make_env: Any) -> None:
    world = ArchiveWorld()
    ids = seed_user(world, USER, sequences=3, images_per_sequence=250, seed=23)
    env = make_env(world, url_ttl_seconds=30.0)
    env.sandbox.faults = ArchiveFaults(fault_rate=0.02, latency_s=0.02, seed=2)
    env.write_config(workers=2, page_size=100, tar=False)
    rng = random.Random(20261121)
    log = env.root / "runs.log"
    killed = 0
    for kill in range(10):
        before = len(archived_files(env.archive))
        with log.open("ab") as out:
            proc = subprocess.Popen(
                env.argv("backup", "run", "--json"), env=env.env(), stdout=out, stderr=out
            )
        time.sleep(rng.uniform(0.3, 2.0))
        # On a loaded machine the child may not have reached its downloads yet: let it make
        # some progress first, so the kills land in every phase of a run.
        deadline = time.monotonic() + 30
        while len(archived_files(env.archive)) <= before and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        killed += proc.returncode == -signal.SIGKILL
        done = len(archived_files(env.archive))
        print(f"kill {kill + 1}: exit {proc.returncode}, {done} images on disk")
        # A kill may leave a temporary (.<name>.<random>.part, removed by the next run); an
        # archived name is never empty or partial.
        kept = [p for p in env.archive.rglob("*") if p.is_file() and not p.name.startswith(".")]
        assert [p for p in kept if p.stat().st_size == 0] == []
        for p in kept:
            if p.suffix == ".jpg":
                with Image.open(p) as im:
                    im.load()
    assert killed == 10, "a run finished before its kill"
    final = env.run("backup", "run", "--json")
    assert final.returncode == 0, final.stderr[-3000:]
    assert json.loads(final.stdout)["result"] == "ok"
    assert_clean_archive(env.archive, ids)
    summary = json.loads(env.run("backup", "status", "--json").stdout)
    assert summary["counts"]["archived"] == len(ids)


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        timeout=30,
    )
    return proc.returncode == 0


def test_disk_full_fails_loudly_and_resumes_when_space_returns(
    make_env: Any, tmp_path: Path
) -> None:
    small = tmp_path / "small"
    if not _mount_tmpfs(small, "256k"):
        pytest.skip("mounting a tmpfs is not permitted here (needs root)")
    try:
        world = ArchiveWorld()
        ids = seed_user(world, USER, sequences=2, images_per_sequence=150, seed=31)
        env = make_env(world, archive=small / "archive")
        env.write_config(workers=4, page_size=200)
        full = env.run("backup", "run")
        assert full.returncode == 1, full.stdout + full.stderr
        assert "disk full" in full.stderr
        assert 0 < len(archived_files(env.archive)) < len(ids)
        summary = json.loads(env.run("backup", "status", "--json").stdout)
        assert summary["last_run"]["result"] == "failed"
        assert "disk full" in summary["failure"]
        subprocess.run(["mount", "-o", "remount,size=8m", str(small)], check=True, timeout=30)
        resumed = env.run("backup", "run", "--json")
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert json.loads(resumed.stdout)["downloaded"] < len(ids)  # only what was missing
        assert_clean_archive(env.archive, ids)
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True, timeout=30)


def test_revoked_token_is_one_clear_error_without_a_retry_storm(make_env: Any) -> None:
    world = ArchiveWorld()
    seed_user(world, USER, sequences=1, images_per_sequence=50, seed=41)
    env = make_env(world)
    faults = ArchiveFaults()
    faults.revoked = True
    env.sandbox.faults = faults
    env.write_config()
    proc = env.run("backup", "run")
    assert proc.returncode == 4
    errors = [line for line in proc.stderr.splitlines() if line.startswith("mapillaryd:")]
    assert len(errors) == 1 and "token rejected" in errors[0], proc.stderr
    assert TOKEN not in proc.stderr + proc.stdout
    assert faults.counts["auth"] == 1
    summary = json.loads(env.run("backup", "status", "--json").stdout)
    assert summary["failure"].startswith("token rejected")
