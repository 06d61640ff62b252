"""``mapillaryd install-service`` (issue #7, point 5): the dry run's units pass
``systemd-analyze verify`` with no complaint, the plist is plist XML (plistlib round trip and
the DTD's structure), the examples in service/ are the installer's own renderings, and a real
install into a scratch unit directory writes the files and runs the systemctl commands (those
through a recording runner: there is no systemd manager to talk to here)."""

from __future__ import annotations

import os
import plistlib
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from daemon import install_service as inst
from tests.conftest import REPO

RUN_AS = "daemon"  # an ordinary account present on Debian (nobody draws a warning)


def config(tmp_path: Path) -> Path:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f"""[state]
dir = "{tmp_path / "state"}"
[[watch]]
path = "{tmp_path / "drop folder"}"
ingest = "in_place"
[[mount_root]]
path = "/media/*"
[[mount_root]]
path = "/run/media/*/*"
""",
        encoding="utf-8",
    )
    return cfg


def dry_run(*args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "daemon", "install-service", "--dry-run", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def verify(paths: list[Path], *, user: bool, tmp_path: Path) -> str:
    """``systemd-analyze verify`` output; it exits 0 even on unknown keys, so callers assert
    that it printed nothing."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (.ci/run installs the systemd package)")
    env = dict(os.environ)
    cmd = ["systemd-analyze"]
    if user:
        runtime = tmp_path / "xdg-runtime"
        runtime.mkdir(mode=0o700, exist_ok=True)
        env["XDG_RUNTIME_DIR"] = str(runtime)
        cmd.append("--user")
    out = subprocess.run(
        [*cmd, "verify", *map(str, paths)], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout + out.stderr


def files_of(text: str, into: Path) -> dict[str, Path]:
    into.mkdir(exist_ok=True)
    written = {}
    for path, content in inst.parse_described(text).items():
        target = into / Path(path).name
        target.write_text(content, encoding="utf-8")
        written[Path(path).name] = target
    return written


def test_the_system_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    text = dry_run("--system", "--run-as", RUN_AS, "--automount-cards", "-c", str(config(tmp_path)))
    files = files_of(text, tmp_path / "units")
    assert set(files) == {"mapillaryd.service", inst.CARD_UNIT_NAME, inst.CARD_RULE_NAME}
    unit = files["mapillaryd.service"].read_text()
    assert f"ExecStart={sys.executable} -m daemon run --config {tmp_path}/config.toml" in unit
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "Restart=on-failure" in unit
    assert "StateDirectory=mapillaryd" in unit and "LogsDirectory=mapillaryd" in unit
    assert "ProtectSystem=strict" in unit and "NoNewPrivileges=yes" in unit
    # The state dir set in the config, the watch folder (quoted: a space) and both mount roots.
    rw = next(line for line in unit.splitlines() if line.startswith("ReadWritePaths="))
    assert rw == (f'ReadWritePaths=-/media -/run/media -"{tmp_path}/drop folder" -{tmp_path}/state')
    card = tmp_path / "units" / "mapillaryd-card@sda1.service"  # an instance of the template
    shutil.copy(files[inst.CARD_UNIT_NAME], card)
    assert verify([files["mapillaryd.service"], card], user=False, tmp_path=tmp_path) == ""
    # Every directive has a comment line right above it (or above its group).
    lines = unit.splitlines()
    for i, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            assert lines[i - 1].startswith("#"), f"uncommented: {line}"
    rules = files[inst.CARD_RULE_NAME].read_text().splitlines()
    for rule in (r for r in rules if r and not r.startswith("#")):
        assert re.fullmatch(r'(\w+(\{\w+\})?(==|\+=|=)"[^"]*"(, )?)+', rule), rule
    assert "systemctl daemon-reload\nudevadm control --reload\nsystemctl enable --now" in text


def test_the_user_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    text = dry_run("--user", "-c", str(config(tmp_path)))
    files = files_of(text, tmp_path / "units")
    assert list(files) == ["mapillaryd.service"]
    unit = files["mapillaryd.service"].read_text()
    assert "User=" not in unit and "WantedBy=default.target" in unit
    assert verify([files["mapillaryd.service"]], user=True, tmp_path=tmp_path) == ""
    assert "systemctl --user enable --now mapillaryd.service" in text
    assert "loginctl enable-linger" in text


def check_plist_dtd(element: ET.Element) -> None:
    """The structure PropertyList-1.0.dtd allows: <plist version="1.0"> holding one value;
    <dict> alternating <key> and a value; <array> of values; scalars without children."""
    scalars = {"string", "integer", "real", "date", "data", "true", "false"}

    def value(e: ET.Element) -> None:
        if e.tag in scalars:
            assert len(e) == 0, f"<{e.tag}> has children"
            if e.tag in ("true", "false"):
                assert not (e.text or "").strip()
            if e.tag == "integer":
                assert re.fullmatch(r"[+-]?\d+", e.text or ""), e.text
        elif e.tag == "array":
            for child in e:
                value(child)
        elif e.tag == "dict":
            children = list(e)
            assert len(children) % 2 == 0, "a <dict> key without a value"
            keys = children[0::2]
            assert all(k.tag == "key" and len(k) == 0 for k in keys)
            assert len({k.text for k in keys}) == len(keys), "duplicate key"
            for v in children[1::2]:
                value(v)
        else:
            raise AssertionError(f"<{e.tag}> is not a plist element")

    assert element.tag == "plist" and element.get("version") == "1.0"
    assert len(element) == 1
    value(element[0])


def test_the_launchd_plist_is_valid_plist_xml(tmp_path: Path) -> None:
    text = dry_run("--launchd", "-c", str(config(tmp_path)))
    [(path, content)] = inst.parse_described(text).items()
    assert path.endswith(f"/Library/LaunchAgents/{inst.LAUNCHD_LABEL}.plist")
    assert content.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE plist PUBLIC')
    data = plistlib.loads(content.encode())
    assert data["Label"] == inst.LAUNCHD_LABEL
    assert data["ProgramArguments"] == [
        sys.executable,
        "-m",
        "daemon",
        "run",
        "--config",
        str(tmp_path / "config.toml"),
    ]
    assert data["RunAtLoad"] is True and data["KeepAlive"] == {"SuccessfulExit": False}
    assert data["ProcessType"] == "Background"
    assert data["StandardOutPath"].endswith("/Library/Logs/mapillaryd/mapillaryd.log")
    # Round trip: what plistlib writes back reads as the same data.
    assert plistlib.loads(plistlib.dumps(data)) == data
    check_plist_dtd(ET.fromstring(content.encode()))
    assert "launchctl bootstrap gui/" in text


def test_the_examples_in_service_are_the_installers_renderings() -> None:
    for name, content in inst.examples().items():
        path = REPO / "service" / name
        assert path.read_text() == content, f"service/{name} is stale: run write_examples()"
    check_plist_dtd(ET.parse(REPO / "service" / f"{inst.LAUNCHD_LABEL}.plist").getroot())


def test_install_writes_the_unit_and_runs_systemctl_and_uninstall_undoes_it(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    example = inst.Install(sys.executable, str(tmp_path / "c.toml"), "me", str(home))
    ran: list[tuple[str, ...]] = []

    def runner(cmd: object) -> int:
        ran.append(tuple(cmd))  # type: ignore[arg-type]
        return 0

    plan = inst.plan_install(example, "user", 1000)
    assert inst.execute(plan, runner) == []
    unit = home / ".config/systemd/user/mapillaryd.service"
    assert unit.read_text() == inst.render_unit(example, "user")
    assert ran == [
        ("systemctl", "--user", "daemon-reload"),
        ("systemctl", "--user", "enable", "--now", "mapillaryd.service"),
    ]
    ran.clear()
    problems = inst.execute(inst.plan_uninstall(str(home), "user", 1000), lambda c: 1)
    assert not unit.exists()
    assert problems == [
        "systemctl --user disable --now mapillaryd.service: exit code 1",
        "systemctl --user daemon-reload: exit code 1",
    ]


def test_a_system_unit_never_runs_as_root_and_needs_a_config(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "SUDO_USER"}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "daemon",
            "install-service",
            "--system",
            "--run-as",
            "root",
            "--dry-run",
            "-c",
            str(cfg),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 1 and "not root" in out.stderr
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "daemon",
            "install-service",
            "--user",
            "--dry-run",
            "-c",
            str(tmp_path / "missing.toml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1 and "missing.toml: no configuration there" in out.stderr
