"""``mapillaryd auth`` against the sandbox's ``/me``: a checked token lands in a 0600 file, a
rejected one is refused, mapillary_tools' profile file (written by the real mapillary_tools
0.14.7) is imported, and a running daemon whose uploads are held for a bad token resumes as
soon as ``auth`` rewrites its token file, without a restart."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon import auth, synth
from daemon.config import load_config
from daemon.sandbox import Sandbox
from daemon.service import Service
from daemon.status import report
from daemon.store.queue import Queue
from tests.conftest import MT_PYTHON
from tests.e2e.harness import wait_until

TOKEN = "auth-test-token-31f7a2"


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    with Sandbox(tmp_path / "sandbox", TOKEN) as s:
        yield s


def write_config(tmp: Path, sandbox: Sandbox, token_file: Path) -> Path:
    (tmp / "card").mkdir(exist_ok=True)
    cfg = tmp / "config.toml"
    cfg.write_text(
        f"""[state]
dir = "{tmp / "state"}"
[[watch]]
path = "{tmp / "card"}"
[mapillary]
upload_endpoint = "{sandbox.upload_endpoint}"
graph_endpoint = "{sandbox.graph_endpoint}"
token_file = "{token_file}"
[process]
time_zone = "UTC"
batch_quiet_seconds = 1
[upload]
retry_base_seconds = 0.1
retry_cap_seconds = 0.5
""",
        encoding="utf-8",
    )
    return cfg


def run_auth(
    cfg: Path, *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MAPILLARY")}
    return subprocess.run(
        [sys.executable, "-m", "daemon", "auth", "--config", str(cfg), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
    )


def test_a_valid_token_is_checked_and_stored_0600_a_rejected_one_is_not(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    token_file = tmp_path / "secrets" / "token"
    cfg = write_config(tmp_path, sandbox, token_file)
    out = run_auth(cfg, stdin="not-the-token\n")
    assert out.returncode == 4, out.stderr
    assert "rejected the token" in out.stderr and not token_file.exists()
    out = run_auth(cfg, stdin=TOKEN + "\n")
    assert out.returncode == 0, out.stderr
    assert "token valid: user" in out.stdout
    assert token_file.read_text() == TOKEN + "\n"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert TOKEN not in out.stdout + out.stderr
    # --token-file overrides the configured place.
    other = tmp_path / "other-token"
    assert run_auth(cfg, "--token-file", str(other), "--token", TOKEN).returncode == 0
    assert other.read_text().strip() == TOKEN


@pytest.mark.mapillary_tools
def test_the_profile_mapillary_tools_wrote_is_imported(tmp_path: Path, sandbox: Sandbox) -> None:
    if not MT_PYTHON.exists():
        pytest.skip(f"mapillary_tools' virtualenv is not at {MT_PYTHON} (make venv-mt)")
    profiles = tmp_path / "mt" / "configs" / "profiles"
    script = (
        "import sys; from mapillary_tools import config\n"
        "config.update_config('car', {'user_upload_token': sys.argv[1],"
        " 'MAPSettingsUsername': 'driver', 'MAPSettingsUserKey': '42'}, sys.argv[2])\n"
        "config.update_config('other', {'user_upload_token': 'x-y-z'}, sys.argv[2])\n"
    )
    subprocess.run([str(MT_PYTHON), "-c", script, TOKEN, str(profiles)], check=True, timeout=120)
    parsed = auth.parse_profiles(profiles.read_text(), str(profiles))
    assert parsed["car"].token == TOKEN and parsed["car"].username == "driver"
    assert TOKEN not in repr(parsed["car"])
    token_file = tmp_path / "token"
    cfg = write_config(tmp_path, sandbox, token_file)
    env = {"MAPILLARY_CONFIG_PATH": str(profiles)}
    out = run_auth(cfg, "--from-mapillary-tools", env=env)
    assert out.returncode == 4 and "several profiles (car, other)" in out.stderr
    out = run_auth(cfg, "--from-mapillary-tools", "car", env=env)
    assert out.returncode == 0, out.stderr
    assert "profile 'car'" in out.stdout and token_file.read_text().strip() == TOKEN


def test_the_default_profile_path_is_mapillary_tools_own(tmp_path: Path) -> None:
    assert auth.mapillary_tools_config_path({}, Path("/home/u")) == Path(
        "/home/u/.config/mapillary/configs/MLY_5675152195860640_6b02c72e6e3c801e5603ab0495623282"
    )
    assert auth.mapillary_tools_config_path({"MAPILLARY_CONFIG_PATH": "/x"}, Path("/h")) == Path(
        "/x"
    )
    with pytest.raises(auth.AuthFailed, match="no profile 'nope'"):
        auth.choose_profile(auth.parse_profiles("[a]\nuser_upload_token = t\n"), "nope", "f")
    with pytest.raises(auth.AuthFailed, match="not a mapillary_tools profile file"):
        auth.parse_profiles("user_upload_token = t\n", "f")


def test_held_uploads_resume_when_auth_rewrites_the_token_file(
    tmp_path: Path, sandbox: Sandbox
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("revoked-token-0000\n")
    cfg_path = write_config(tmp_path, sandbox, token_file)
    cfg = load_config(cfg_path, env={})

    def rep() -> dict[str, object]:
        q = Queue.open(cfg.state.database)
        try:
            return report(q)
        finally:
            q.close()

    service, stop, ready = Service(cfg), threading.Event(), threading.Event()
    t = threading.Thread(target=service.run, args=(stop,), kwargs={"on_ready": ready.set})
    t.start()
    try:
        assert ready.wait(10)
        synth.write_drive(tmp_path / "card" / "DCIM", 3)
        wait_until(lambda: rep()["hold"] is not None, 60, "uploads to be held")
        out = run_auth(cfg_path, stdin=TOKEN + "\n")  # the user fixes it; the daemon runs on
        assert out.returncode == 0, out.stderr
        wait_until(lambda: rep()["items"]["done"] == 3, 60, "the held uploads to resume")  # type: ignore[index]
        assert rep()["hold"] is None
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive()
