"""``mapillaryd doctor``: each check's finding from plain facts (pure), and the command itself
against the sandbox on 127.0.0.1 (token valid via /me, endpoint reachable) and against a
closed port and a rejected token."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.doctor import Facts, Finding, diagnose, render
from daemon.sandbox import Sandbox

TOKEN = "doctor-test-token-4411"
GOOD = dict(
    platform="linux",
    inotify_watches=524288,
    inotify_instances=512,
    state_dir="/var/lib/mapillaryd",
    clock_synced=True,
    clock_source="timedatectl",
    tools={"ffmpeg": "/usr/bin/ffmpeg", "ffprobe": "/usr/bin/ffprobe", "exiftool": None},
    free_bytes=50_000_000_000,
    min_free_bytes=200_000_000,
    me={"id": "1", "username": "ana"},
    upload_endpoint="https://rupload.example",
)


def by_check(findings: list[Finding]) -> dict[str, Finding]:
    return {f.check: f for f in findings}


def test_a_healthy_machine_has_no_problem() -> None:
    findings = diagnose(Facts(**GOOD))  # type: ignore[arg-type]
    assert [f.level for f in findings if f.level != "ok"] == []
    assert by_check(findings)["token"].message == "valid: user ana (1)"
    assert render(findings).endswith("0 problem(s), 0 warning(s)")


@pytest.mark.parametrize(
    ("change", "check", "level", "fix_part"),
    [
        ({"inotify_watches": 8192}, "inotify watches", "warn", "max_user_watches=524288"),
        ({"state_fs_type": "tmpfs"}, "state directory", "fail", "[state] dir"),
        ({"state_writable": False}, "state directory", "fail", "chown"),
        ({"root_read_only": True}, "state directory", "warn", "Overlay"),
        ({"clock_synced": False}, "clock", "warn", "set-ntp true"),
        ({"tools": {"ffmpeg": None}}, "ffmpeg", "warn", "apt install ffmpeg"),
        ({"free_bytes": 100_000_000}, "free space", "fail", "min_free_mb"),
        ({"free_bytes": 1_000_000_000}, "free space", "warn", "in_place"),
        ({"token_problem": "no token: set …", "me": None}, "token", "fail", "mapillaryd auth"),
        ({"me": None, "me_rejected": True, "me_error": "401"}, "token", "fail", "auth"),
        ({"me": None, "me_error": "ConnectError"}, "token", "warn", "network"),
        ({"upload_error": "certificate is not yet valid"}, "upload endpoint", "warn", "clock"),
    ],
)
def test_each_finding_names_its_fix(
    change: dict[str, object], check: str, level: str, fix_part: str
) -> None:
    finding = by_check(diagnose(Facts(**{**GOOD, **change})))[check]  # type: ignore[arg-type]
    assert finding.level == level
    assert fix_part in finding.fix


def test_tmpfs_is_fine_when_allowed_and_macos_skips_inotify() -> None:
    facts = Facts(**{**GOOD, "state_fs_type": "tmpfs", "allow_tmpfs": True})  # type: ignore[arg-type]
    assert by_check(diagnose(facts))["state directory"].level == "ok"
    facts = Facts(**{**GOOD, "platform": "darwin", "inotify_watches": 1})  # type: ignore[arg-type]
    assert not any(f.check.startswith("inotify") for f in diagnose(facts))


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    with Sandbox(tmp_path / "sandbox", TOKEN) as s:
        yield s


def doctor(tmp_path: Path, upload: str, graph: str, token: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'[state]\ndir = "{tmp_path / "state"}"\n'
        f'[mapillary]\nupload_endpoint = "{upload}"\ngraph_endpoint = "{graph}"\n',
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAPILLARY")}
    return subprocess.run(
        [sys.executable, "-m", "daemon", "doctor", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "MAPILLARY_TOKEN": token},
    )


def test_doctor_checks_the_token_and_endpoint_against_the_sandbox(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    out = doctor(tmp_path, sandbox.upload_endpoint, sandbox.graph_endpoint, TOKEN)
    assert "ok    token: valid: user" in out.stdout, out.stdout + out.stderr
    assert f"ok    upload endpoint: {sandbox.upload_endpoint} reachable" in out.stdout
    assert TOKEN not in out.stdout + out.stderr

    out = doctor(tmp_path, "http://127.0.0.1:9", sandbox.graph_endpoint, "wrong-token-0")
    assert out.returncode == 1
    assert "FAIL  token: rejected by Mapillary" in out.stdout
    assert "WARN  upload endpoint: http://127.0.0.1:9: ConnectError" in out.stdout
    assert "wrong-token-0" not in out.stdout
