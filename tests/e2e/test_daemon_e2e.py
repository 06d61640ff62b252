"""The whole product path, real parts only: files on a "card" → ``mapillaryd run`` (a subprocess,
SIGKILLed again and again) → the sandbox on 127.0.0.1.

What it shows (issue #2):
* every corpus JPEG with GPS and time, and every frame of a generated 200-frame drive, ends in a
  cluster exactly once, however often the daemon is killed during ingest and upload;
* each uploaded JPEG's ImageDescription passes mapillary_tools' own validation, and its bytes
  are identical to the original outside the EXIF segment;
* every other file is listed by ``status --json`` with a reason; the daemon never crashes;
* the same files copied again, renamed, into a second watched folder upload nothing new.

Which corpus files have GPS and time is decided by the real mapillary_tools 0.14.7 reader (an
oracle independent of our code); the (0, 0) file is excluded as mapillary_tools excludes it.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from daemon import synth
from daemon.sandbox import Sandbox
from tests.conftest import CORPUS, MT_PYTHON
from tests.e2e.harness import (
    TOKEN,
    Daemon,
    SlowUploads,
    daemon_env,
    strip_exif,
    wait_until,
    write_config,
)

pytestmark = [pytest.mark.slow, pytest.mark.mapillary_tools]

SEED = 20261120
KILLS = 7
INGEST_KILLS = 2
DRIVE_FRAMES = 200

ORACLE = """
import json, os, sys
from pathlib import Path
from mapillary_tools.exif_read import ExifRead
out = {}
for p in sys.argv[1:]:
    try:
        e = ExifRead(Path(p))
        lonlat, t = e.extract_lon_lat(), e.extract_capture_time()
    except Exception:
        lonlat, t = None, None
    out[os.path.basename(p)] = bool(lonlat and t and lonlat != (0.0, 0.0))
print(json.dumps(out))
"""

VALIDATE = """
import json, sys
from mapillary_tools.serializer.description import validate_image_desc
from mapillary_tools import exceptions
bad = {}
for key, desc in json.load(sys.stdin).items():
    full = dict(desc, filename="/x/" + desc.get("MAPFilename", "x.jpg"), filetype="image")
    try:
        validate_image_desc(full)
    except exceptions.MapillaryMetadataValidationError as exc:
        bad[key] = str(exc)
print(json.dumps(bad))
"""


def _mt(script: str, *args: str, stdin: str | None = None) -> object:
    if not MT_PYTHON.exists():
        pytest.skip(f"mapillary_tools virtualenv missing at {MT_PYTHON} (make venv-mt)")
    out = subprocess.run(
        [str(MT_PYTHON), "-c", script, *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={"TZ": "UTC", "PATH": "/usr/bin"},
    )
    return json.loads(out.stdout)


def _uploading(items: dict[str, int]) -> bool:
    """True once upload work has started and is not finished."""
    return items["queued"] + items["uploading"] + items["uploaded"] > 0 or items["done"] > 0


def _session_bytes(sandbox: Sandbox, key: str) -> bytes:
    with urllib.request.urlopen(f"{sandbox.url}/_sandbox/sessions/{key}", timeout=10) as r:
        data: bytes = r.read()
        return data


def _stats(sandbox: Sandbox) -> dict[str, object]:
    with urllib.request.urlopen(f"{sandbox.url}/_sandbox/stats", timeout=10) as r:
        result: dict[str, object] = json.loads(r.read())
        return result


def test_card_to_clusters_through_kills_and_duplicates(tmp_path: Path) -> None:
    corpus_jpegs = sorted((CORPUS / "jpeg").glob("*"))
    if not corpus_jpegs:
        pytest.skip("the shared corpus is missing")
    expected_corpus = _mt(ORACLE, *map(str, corpus_jpegs))
    assert isinstance(expected_corpus, dict)
    uploadable = {name for name, ok in expected_corpus.items() if ok}
    assert len(uploadable) >= 10  # the corpus has plenty of geotagged photos

    # Stage the card's content outside the watch folder, so kills hit a real copy-in.
    staging = tmp_path / "staging"
    (staging / "corpus").mkdir(parents=True)
    for p in corpus_jpegs:
        shutil.copy2(p, staging / "corpus" / p.name)
    frames = synth.write_drive(staging / "DCIM" / "100DRIVE", DRIVE_FRAMES, seed=SEED)
    originals = {p.name: p.read_bytes() for p in staging.rglob("*") if p.is_file()}
    expected = uploadable | {f.path.name for f in frames}

    card, second = tmp_path / "card", tmp_path / "second"
    card.mkdir()
    second.mkdir()
    with Sandbox(tmp_path / "sandbox", TOKEN, faults=SlowUploads(0.15)) as sandbox:
        config = write_config(tmp_path, [card, second])
        daemon = Daemon(config, daemon_env(sandbox), tmp_path / "daemon.log")
        daemon.start()
        time.sleep(1.0)
        shutil.copytree(staging, card, dirs_exist_ok=True)

        # Two kills while the card is being ingested, the rest at random moments once uploads
        # are under way (images in flight, manifests, finish_upload).
        rng = random.Random(SEED)
        kill_states = []
        for n in range(KILLS):
            if n >= INGEST_KILLS:
                wait_until(
                    lambda: _uploading(daemon.status()["items"]),
                    timeout=120,
                    what="uploads to be under way",
                )
            time.sleep(rng.uniform(0.0, 1.0) if n >= INGEST_KILLS else rng.uniform(0.3, 1.5))
            kill_states.append(daemon.status()["items"])
            daemon.kill9()
            daemon.start()

        def settled() -> bool:
            items = daemon.status()["items"]
            busy = sum(items[s] for s in ("ingested", "queued", "uploading", "uploaded"))
            return items["done"] == len(expected) and busy == 0

        wait_until(settled, timeout=300, what=f"{len(expected)} images done")
        assert daemon.alive(), "the daemon died"

        # Kills happened while work remained, in ingest and in upload.
        print("queue at each SIGKILL:", kill_states)
        unfinished = [k for k in kill_states if k["done"] < len(expected)]
        assert len(unfinished) >= 5
        assert sum(1 for k in unfinished if _uploading(k)) >= KILLS - INGEST_KILLS - 1

        # --- exactly once, nothing missing, pixels untouched, descriptions valid -------------
        clusters = sandbox.clusters()
        images = [img for c in clusters for img in c["images"]]
        by_name: dict[str, list[dict[str, object]]] = {}
        for img in images:
            by_name.setdefault(str(img["description"]["MAPFilename"]), []).append(img)
        assert set(by_name) == expected, set(by_name) ^ expected
        assert all(len(v) == 1 for v in by_name.values()), {
            k: len(v) for k, v in by_name.items() if len(v) > 1
        }
        for name, [img] in by_name.items():
            uploaded = _session_bytes(sandbox, str(img["session_key"]))
            assert strip_exif(uploaded) == strip_exif(originals[name]), name
        invalid = _mt(
            VALIDATE, stdin=json.dumps({n: i[0]["description"] for n, i in by_name.items()})
        )
        assert invalid == {}
        truth = {f.path.name: f for f in frames}
        for name, [img] in by_name.items():
            if name in truth:
                desc = img["description"]
                assert abs(desc["MAPLatitude"] - truth[name].lat) < 1e-6
                assert abs(desc["MAPLongitude"] - truth[name].lon) < 1e-6

        # --- every other file is reported with a reason -------------------------------------
        rep = daemon.status()
        reported = {Path(r["path"]).name: r for r in rep["not_uploaded"]}
        for name in set(originals) - expected:
            assert name in reported, f"{name} is neither uploaded nor reported"
            assert reported[name]["reason"] and reported[name]["detail"], reported[name]

        # --- the same files again, renamed, in the second folder: nothing new --------------
        posts_before = _stats(sandbox)
        clusters_before = len(clusters)
        for name, data in originals.items():
            (second / f"copy_of_{name}").write_bytes(data)
        seen_before = rep["files_seen"]
        wait_until(
            lambda: daemon.status()["files_seen"] >= seen_before + len(originals),
            timeout=120,
            what="the renamed copies to be seen",
        )
        time.sleep(4)  # a batch window: anything new would be cut and uploaded now
        assert len(sandbox.clusters()) == clusters_before
        assert daemon.status()["items"]["done"] == len(expected)
        after = _stats(sandbox)
        assert after.get("bytes_received") == posts_before.get("bytes_received")

        assert daemon.stop() == 0
    log = (tmp_path / "daemon.log").read_text()
    assert "Traceback" not in log and "_crashed" not in log
    assert TOKEN not in log
