"""The ``mapillaryd`` command as a user runs it: exit codes, messages, output formats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def mapillaryd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MAPILLARY")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "daemon", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        check=False,
    )


def test_check_config_accepts_the_example_and_resolves_it() -> None:
    r = mapillaryd("check-config", "--config", str(REPO / "config.example.toml"))
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout and "/media/pi/DASHCAM" in r.stdout
    assert "mapillary.token_file: cannot read" in r.stdout  # the example names a file not there


def test_check_config_reports_every_problem_and_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[[watch]]\npath = 3\n[upload]\nmax_parallel_uploads = -1\n")
    r = mapillaryd("check-config", "--config", str(cfg))
    assert r.returncode == 2
    assert str(cfg) in r.stderr
    assert "watch[0].path: expected a string" in r.stderr
    assert "upload.max_parallel_uploads: must be at least 1" in r.stderr
    assert "Traceback" not in r.stderr


def test_the_token_from_the_environment_is_used_but_never_printed(tmp_path: Path) -> None:
    r = mapillaryd(
        "check-config",
        "--config",
        str(REPO / "config.example.toml"),
        env={"MAPILLARY_TOKEN": "MLYsecretvalue123"},
    )
    assert r.returncode == 0 and "present" in r.stdout
    assert "MLYsecretvalue123" not in r.stdout + r.stderr


def test_status_before_the_daemon_ever_ran(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[state]\ndir = "{tmp_path / "state"}"\n')
    r = mapillaryd("status", "--json", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["total"] == 0
    r = mapillaryd("status", "--config", str(cfg))
    assert r.returncode == 0 and "total" in r.stdout


def test_an_unusable_state_directory_exits_3_with_the_path(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "queue.sqlite3").write_bytes(b"garbage, not SQLite " * 200)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[state]\ndir = "{state}"\n')
    r = mapillaryd("status", "--config", str(cfg))
    assert r.returncode == 3
    assert "queue.sqlite3" in r.stderr and "Traceback" not in r.stderr


def test_a_missing_explicit_config_is_a_clear_error(tmp_path: Path) -> None:
    r = mapillaryd("run", "--config", str(tmp_path / "nope.toml"))
    assert r.returncode == 2
    assert "nope.toml" in r.stderr and "does not exist" in r.stderr
