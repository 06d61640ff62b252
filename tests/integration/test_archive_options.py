"""The backup's options and URL expiry against the in-process sandbox (Graph API + CDN).

WebP conversion, a tar per sequence (including a run SIGKILLed while packing, in a child
process) and signed URLs the CDN refuses as expired. Files are checked with Pillow, tarfile and
(when installed) exiftool, not with the daemon's own readers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import piexif
import pytest
from PIL import Image

from daemon.archive.index import index_path
from daemon.archive.job import RunResult
from daemon.archive.runner import run_backup
from daemon.config import load_config
from daemon.sandbox import Sandbox
from daemon.sandbox.app import Request
from daemon.sandbox.graph_archive import ArchiveApi, ArchiveWorld, install, seed_user
from daemon.sandbox.replies import Reply
from tests.conftest import REPO, ManualClock
from tests.e2e.test_backup_e2e import check_exif, exiftool

TOKEN = "archive-options-token"
USER = "alice"
CDN = "GET /cdn/{cdn_path}"


@dataclass
class Env:
    root: Path
    sandbox: Sandbox
    api: ArchiveApi
    world: ArchiveWorld
    ids: list[str]

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    def write_config(self, **backup: Any) -> None:
        settings = {
            "dir": str(self.archive),
            "username": USER,
            "require_clock_sync": False,
            "min_free_mb": 0,
            "workers": 4,
            "max_requests_per_second": 500.0,
            "retries": 3,
            "timeout_seconds": 10.0,
            **backup,
        }
        lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
        state = self.root / "state"
        self.config.write_text(f'[state]\ndir = "{state}"\n\n[backup]\n{lines}\n', "utf-8")

    def env(self) -> dict[str, str]:
        return {"MAPILLARY_TOKEN": TOKEN, "MAPILLARY_GRAPH_API_ENDPOINT": self.sandbox.url}

    def run(self) -> RunResult:
        """One backup run in this process."""
        return run_backup(load_config(self.config, env=self.env()))

    def requests(self, route: str) -> int:
        snap = self.sandbox.app.stats.snapshot()["requests"]
        assert isinstance(snap, dict)
        return int(snap.get(route, 0))

    def index_rows(self, sql: str) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(index_path(self.root / "state", self.archive))
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()


@pytest.fixture
def make_env(tmp_path: Path) -> Iterator[Any]:
    sandboxes: list[Sandbox] = []

    def make(sequences: int = 3, per_sequence: int = 8, **install_args: Any) -> Env:
        world = ArchiveWorld()
        ids = seed_user(
            world, USER, sequences=sequences, images_per_sequence=per_sequence, seed=7, pano_every=2
        )
        sb = Sandbox(tmp_path / "sandbox", TOKEN, username=USER).start()
        sandboxes.append(sb)
        api = install(sb, world, **install_args)
        return Env(tmp_path, sb, api, world, ids)

    yield make
    for sb in sandboxes:
        sb.stop()


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# --- WebP ---------------------------------------------------------------------------------------


def test_webp_files_decode_and_keep_the_restored_metadata(make_env: Any) -> None:
    env = make_env(sequences=2, per_sequence=6)
    for image_id in env.ids[::5]:  # served with an EXIF IFD that runs past its segment
        env.world.art[image_id] = replace(env.world.art[image_id], corrupt_exif=True)
    env.write_config(format="webp", webp_quality=80)
    first = env.run()
    assert first.result == "ok" and first.downloaded == len(env.ids)

    files = files_under(env.archive)
    images = [p for p in files if p.suffix != ".geojson"]
    assert {p.suffix for p in images} == {".webp"}
    assert sorted(p.stem for p in images) == sorted(env.ids)
    for p in images:
        record = env.world.images[p.stem]
        with Image.open(p) as im:
            assert im.format == "WEBP"
            im.load()  # every pixel decodes
            art = env.world.art[p.stem]
            assert im.size == (art.width, art.height)
            exif = piexif.load(im.info["exif"])
            xmp = im.info.get("xmp", b"")
        # The restored EXIF, as the JPEG would carry it (even where the served one was corrupt).
        assert exif["0th"][piexif.ImageIFD.Artist] == USER.encode()
        assert exif["0th"].get(piexif.ImageIFD.Make) == (
            record["make"].encode() if "make" in record else None
        )
        assert piexif.GPSIFD.GPSLatitude in exif["GPS"]
        assert exif["Exif"][piexif.ExifIFD.SubSecTimeOriginal] == (
            str(record["captured_at"] % 1000).zfill(3).encode()
        )
        assert (b'GPano:ProjectionType="equirectangular"' in xmp) == bool(record["is_pano"])
    if shutil.which("exiftool") is not None:  # an independent reader of the WebP EXIF/XMP
        tags = exiftool(images)
        for image_id in env.ids:
            check_exif(env.world.images[image_id], tags[image_id])

    # The sidecars and the index name the .webp files.
    features = [
        f for p in files if p.suffix == ".geojson" for f in json.loads(p.read_text())["features"]
    ]
    assert sorted(f["properties"]["file"] for f in features) == sorted(f"{i}.webp" for i in env.ids)
    paths = [r[0] for r in env.index_rows("SELECT path FROM images")]
    assert len(paths) == len(env.ids) and all(p.endswith(".webp") for p in paths)

    before = {p: p.stat().st_mtime_ns for p in files}
    cdn_before = env.requests(CDN)
    second = env.run()
    assert second.result == "ok" and second.downloaded == 0 and second.listed == len(env.ids)
    assert env.requests(CDN) == cdn_before
    assert {p: p.stat().st_mtime_ns for p in files_under(env.archive)} == before


# --- a tar per sequence ---------------------------------------------------------------------------


def expected_tars(env: Env) -> dict[Path, list[str]]:
    """Each sequence's tar (``<user>/<date>/<sequence>.tar``) → its sorted member names."""
    out: dict[Path, list[str]] = {}
    for seq, ids in env.world.sequences.items():
        (day,) = {  # the UTC capture date; these drives do not cross midnight
            datetime.fromtimestamp(env.world.images[i]["captured_at"] / 1000, UTC).date()
            for i in ids
        }
        folder = env.archive / USER / day.isoformat()
        members = [f"{seq}/{i}.jpg" for i in ids] + [f"{seq}/{seq}.geojson"]
        out[folder / f"{seq}.tar"] = sorted(members)
    return out


def assert_packed(env: Env) -> dict[Path, tuple[int, int]]:
    """One tar per sequence holding exactly its images (decodable) and its sidecar; nothing
    else on disk; the index notes every image as packed. Returns each tar's (inode, mtime)."""
    tars = expected_tars(env)
    assert files_under(env.archive) == sorted(tars)
    assert [p for p in env.archive.rglob("*") if p.is_dir() and not any(p.iterdir())] == []
    for tar_file, members in tars.items():
        with tarfile.open(tar_file) as tf:
            names = tf.getnames()
            assert names == members  # each once, sorted, stable names
            for member in tf.getmembers():
                data = tf.extractfile(member)
                assert data is not None and member.size > 0
                if member.name.endswith(".jpg"):
                    with Image.open(data) as im:
                        im.load()
                else:
                    fc = json.load(data)
                    seq = tar_file.stem
                    assert sorted(f["properties"]["id"] for f in fc["features"]) == sorted(
                        env.world.sequences[seq]
                    )
    assert env.index_rows("SELECT count(*) FROM images WHERE packed IS NULL") == [(0,)]
    assert env.index_rows("SELECT count(*) FROM unfinished") == [(0,)]
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in tars}


def test_tar_per_sequence_is_complete_stable_and_merged_when_images_arrive(make_env: Any) -> None:
    env = make_env(sequences=3, per_sequence=6)
    env.write_config(tar=True)
    first = env.run()
    assert first.result == "ok" and first.downloaded == len(env.ids)
    stamps = assert_packed(env)

    again = env.run()
    assert again.result == "ok" and again.downloaded == 0
    assert assert_packed(env) == stamps  # not rebuilt, not duplicated

    # Two new images in one sequence on the server: only that sequence's tar is rebuilt.
    seq, seq_ids = next(iter(env.world.sequences.items()))
    last = env.world.images[seq_ids[-1]]
    for n in (1, 2):
        record = {**last, "id": str(int(last["id"]) + n), "captured_at": last["captured_at"] + n}
        env.world.add_image(record, env.world.art[last["id"]])
    third = env.run()
    assert third.result == "ok" and third.downloaded == 2
    after = assert_packed(env)
    changed = [p for p in after if after[p] != stamps[p]]
    assert [p.stem for p in changed] == [seq]


CHILD = """
import os, pathlib, runpy, signal, sys, tarfile
import daemon.archive.sidecar, daemon.archive.tarball

point, n = sys.argv[1], int(sys.argv[2])
calls = [0]

def die_on_call(real):
    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return wrapper

if point == "tar-write":  # the n-th member of a tar being written
    tarfile.TarFile.addfile = die_on_call(tarfile.TarFile.addfile)
elif point == "tar-renamed":  # the tar just renamed into place, the folder not removed yet
    daemon.archive.tarball.fsync_dir = die_on_call(daemon.archive.tarball.fsync_dir)
elif point == "folder-removal":  # some of the packed folder's files removed
    real_unlink = pathlib.Path.unlink
    def unlink(self, missing_ok=False):
        if self.suffix in (".jpg", ".geojson"):
            calls[0] += 1
            if calls[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
        return real_unlink(self, missing_ok)
    pathlib.Path.unlink = unlink
elif point == "sidecar":  # the n-th sidecar about to be written
    daemon.archive.sidecar.render = die_on_call(daemon.archive.sidecar.render)
sys.argv = ["mapillaryd", "backup", "run", "--json", "--config", sys.argv[3]]
runpy.run_module("daemon", run_name="__main__")
"""


def run_killed_child(env: Env, point: str, n: int) -> None:
    """``mapillaryd backup run`` in a child process that SIGKILLs itself at ``point``."""
    script = env.root / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script), point, str(n), str(env.config)],
        env={**os.environ, **env.env()},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, f"the child was not killed: {proc.stderr[-2000:]}"


@pytest.mark.parametrize(
    ("point", "n"), [("tar-write", 3), ("tar-renamed", 2), ("folder-removal", 4)]
)
def test_a_run_killed_while_packing_leaves_no_partial_tar_and_is_finished_next_run(
    make_env: Any, point: str, n: int
) -> None:
    env = make_env(sequences=3, per_sequence=5)
    env.write_config(tar=True)
    run_killed_child(env, point, n)
    tars = list(env.archive.rglob("*.tar"))
    for t in tars:  # whatever is under a .tar name is a whole tar
        with tarfile.open(t) as tf:
            assert sorted(tf.getnames()) == expected_tars(env)[t]
    if point == "tar-write":
        assert tars == [] and list(env.archive.rglob(".*.part")), "no partial tar was left"

    resumed = env.run()
    assert resumed.result == "ok" and resumed.downloaded == 0
    stamps = assert_packed(env)  # no .part, no folder, no duplicate member
    again = env.run()
    assert again.result == "ok" and again.downloaded == 0
    assert assert_packed(env) == stamps


def test_tar_set_on_an_existing_archive_packs_its_finished_sequences(make_env: Any) -> None:
    env = make_env(sequences=2, per_sequence=5)
    env.write_config(tar=False)
    assert env.run().downloaded == len(env.ids)
    env.write_config(tar=True)
    assert env.run().downloaded == 0
    assert_packed(env)


def test_a_run_killed_before_its_sidecars_writes_them_on_the_next_run(make_env: Any) -> None:
    env = make_env(sequences=3, per_sequence=5)
    env.write_config()
    run_killed_child(env, "sidecar", 2)  # every image archived, one sidecar of three written
    assert len(list(env.archive.rglob("*.geojson"))) == 1
    resumed = env.run()
    assert resumed.result == "ok" and resumed.downloaded == 0
    sidecars = sorted(env.archive.rglob("*.geojson"))
    assert [p.stem for p in sidecars] == sorted(p.parent.name for p in sidecars) and sorted(
        p.stem for p in sidecars
    ) == sorted(env.world.sequences)
    for p in sidecars:
        ids = [f["properties"]["id"] for f in json.loads(p.read_text())["features"]]
        assert sorted(ids) == sorted(env.world.sequences[p.stem])


# --- expiring URLs ----------------------------------------------------------------------------


class ObjectGets:
    """A fault hook that only records which image ids were asked for by ``GET /{id}``."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def before(self, request: Request) -> Reply | None:
        if request.route == "GET /{object_id}":
            self.ids.append(request.params["object_id"])
        return None


def test_urls_refused_as_expired_are_replaced_by_fresh_ones(make_env: Any) -> None:
    env = make_env(sequences=3, per_sequence=10, expire_every=4)
    gets = ObjectGets()
    env.sandbox.faults = gets
    env.write_config()
    result = env.run()
    assert result.result == "ok" and result.downloaded == len(env.ids) and result.failed == 0
    cdn = env.api.cdn
    assert cdn.expired > 0 and len(cdn.refused_images) == len(env.ids) // 4
    assert cdn.expired == len(cdn.refused_images)  # each refused URL used once, never retried
    assert sorted(set(cdn.refused_images) - set(gets.ids)) == []  # a fresh URL for each
    images = [p for p in files_under(env.archive) if p.suffix == ".jpg"]
    assert sorted(p.stem for p in images) == sorted(env.ids)
    for p in images:
        with Image.open(p) as im:
            im.load()


class AdvanceOnce:
    """Moves the sandbox's clock past the URLs' lifetime at the ``at``-th CDN request."""

    def __init__(self, clock: ManualClock, at: int, seconds: float) -> None:
        self.clock, self.at, self.seconds = clock, at, seconds
        self.cdn_requests = 0

    def before(self, request: Request) -> Reply | None:
        if request.route == CDN:
            self.cdn_requests += 1
            if self.cdn_requests == self.at:
                self.clock.advance(self.seconds)
        return None


def test_urls_expiring_mid_run_by_the_clock_are_fetched_again(make_env: Any) -> None:
    clock = ManualClock()
    env = make_env(sequences=2, per_sequence=10, clock=clock, url_ttl_seconds=600.0)
    # Every URL minted so far (the listing's, a prefetched batch's) expires at the 5th download.
    env.sandbox.faults = AdvanceOnce(clock, at=5, seconds=601.0)
    env.write_config(workers=2)
    result = env.run()
    assert result.result == "ok" and result.downloaded == len(env.ids)
    assert env.api.cdn.expired > 0
    assert sorted(p.stem for p in env.archive.rglob("*.jpg")) == sorted(env.ids)
