"""The one-shot archive commands (``sequences``, ``download``) against the in-process sandbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.sandbox import Sandbox
from daemon.sandbox.graph_archive import ArchiveWorld, install, seed_user

TOKEN = "archive-cmd-token"
USER = "bob"


@pytest.fixture
def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    world = ArchiveWorld()
    seed_user(world, USER, sequences=4, images_per_sequence=20, seed=3, pano_every=2)
    with Sandbox(tmp_path / "sb", TOKEN, username=USER) as sb:
        install(sb, world)
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'[state]\ndir = "{tmp_path / "state"}"\n', encoding="utf-8")
        env = dict(os.environ, MAPILLARY_TOKEN=TOKEN, MAPILLARY_GRAPH_API_ENDPOINT=sb.url)

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            argv = [sys.executable, "-m", "daemon", *args, "--config", str(cfg)]
            return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)

        yield world, run, tmp_path / "out"


def test_sequences_lists_each_sequence_once_with_the_filter(setup) -> None:  # type: ignore[no-untyped-def]
    world, run, _ = setup
    out = run("sequences", USER, "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert sorted(r["sequence"] for r in rows) == sorted(world.sequences)
    panos = json.loads(run("sequences", USER, "--filter", "360", "--json").stdout)
    assert {r["sequence"] for r in panos} == {
        s for s, ids in world.sequences.items() if world.images[ids[0]]["is_pano"]
    }


def test_download_by_sequence_filter_dry_run_and_failed_file(setup) -> None:  # type: ignore[no-untyped-def]
    world, run, out = setup
    seqs = list(world.sequences)
    dry = run("download", "--sequence", ",".join(seqs), "--output", str(out), "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["to_download"] == 80 and plan["estimated_bytes"] > 0
    assert not out.exists() or not list(out.rglob("*.jpg"))

    got = run(
        "download", "--sequence", seqs[1], "--filter", "regular", "--output", str(out), "--json"
    )
    result = json.loads(got.stdout)
    expected = [i for i in world.sequences[seqs[1]] if not world.images[i]["is_pano"]]
    assert result["downloaded"] == len(expected)
    assert sorted(p.stem for p in out.rglob("*.jpg")) == sorted(expected)

    gone = world.sequences[seqs[0]][0]
    ids_file = out.parent / "ids.txt"
    ids_file.write_text(f"# two images\n{gone}\n{world.sequences[seqs[0]][1]}\n", encoding="utf-8")
    world.delete_image(gone)
    failed = out.parent / "failed.txt"
    again = run(
        "download",
        "--image-file",
        str(ids_file),
        "--output",
        str(out),
        "--failed-file",
        str(failed),
        "--json",
    )
    assert again.returncode == 0, again.stderr  # a deleted id is not found, not a failure
    assert json.loads(again.stdout)["downloaded"] == 1
    assert failed.read_text() == ""
    bad = run("download", "--image", "../x", "--output", str(out))
    assert bad.returncode == 2 and "not an image or sequence id" in bad.stderr
