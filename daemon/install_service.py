"""``mapillaryd install-service`` / ``uninstall-service``: systemd units and the launchd agent.

Planning is pure: :func:`plan_install` / :func:`plan_uninstall` turn an :class:`Install` (the
real paths of this installation: its Python, its config, the folders the daemon must write)
into files to write or remove and commands to run. :func:`execute` performs a plan, and
:func:`describe` prints it for ``--dry-run``. The examples in ``service/`` are these same
renderings with example paths (a test keeps them equal).

Variants:

* ``system``: ``/etc/systemd/system/mapillaryd.service`` running as an ordinary user, with
  ``StateDirectory=``/``LogsDirectory=`` and ``ProtectSystem=strict`` (plus, with
  ``--automount-cards``, a udev rule and a mount unit so a headless Pi mounts cards itself);
* ``user``: ``~/.config/systemd/user/mapillaryd.service`` (``loginctl enable-linger`` keeps it
  running without a login session);
* ``launchd``: ``~/Library/LaunchAgents/org.mapillaryd.agent.plist`` on macOS.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal
from xml.sax.saxutils import escape

Variant = Literal["system", "user", "launchd"]

UNIT_NAME = "mapillaryd.service"
CARD_UNIT_NAME = "mapillaryd-card@.service"
CARD_RULE_NAME = "99-mapillaryd-cards.rules"
LAUNCHD_LABEL = "org.mapillaryd.agent"
WATCHDOG_SEC = 90
_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Install:
    """What a unit needs to know about this installation (absolute paths throughout)."""

    python: str
    config: str
    #: The account the system service runs as (ignored by the user and launchd variants).
    user: str
    home: str
    #: Folders the daemon writes outside its StateDirectory/LogsDirectory: a state dir set in
    #: the config, the spool, watch folders and mount roots (card freeing deletes/moves files).
    writable: tuple[str, ...] = ()
    automount_cards: bool = False


@dataclass(frozen=True)
class PlannedFile:
    path: str
    content: str
    mode: int = 0o644


@dataclass(frozen=True)
class Plan:
    """Files to write (or, uninstalling, to remove) and the commands to run after."""

    variant: Variant
    write: tuple[PlannedFile, ...] = ()
    remove: tuple[str, ...] = ()
    commands: tuple[tuple[str, ...], ...] = ()
    notes: tuple[str, ...] = field(default=())


def default_variant(platform: str, euid: int) -> Variant:
    """launchd on macOS; on Linux the system unit for root, the user unit otherwise."""
    if platform == "darwin":
        return "launchd"
    return "system" if euid == 0 else "user"


def writable_paths(
    state_dirs: Iterable[Path], watches: Iterable[Path], mount_patterns: Iterable[str]
) -> tuple[str, ...]:
    """The folders to list in ``ReadWritePaths=``: state dirs, watch folders, and each mount
    root's fixed part (``/run/media/*/*`` → ``/run/media``), without duplicates or nesting."""
    paths = [str(p) for p in state_dirs] + [str(p) for p in watches]
    for pattern in mount_patterns:
        fixed = []
        for part in PurePosixPath(pattern).parts:
            if _GLOB.search(part):
                break
            fixed.append(part)
        if len(fixed) > 1:
            paths.append(str(PurePosixPath(*fixed)))
    kept: list[str] = []
    for p in sorted(set(paths), key=len):
        if not any(p == k or p.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(p)
    return tuple(sorted(kept))


def _unit_word(text: str) -> str:
    """One word of a unit-file line: ``%`` doubled (specifiers), quoted if it has spaces."""
    text = text.replace("%", "%%")
    if re.search(r"[\s\"'\\]", text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def render_unit(inst: Install, variant: Literal["system", "user"]) -> str:
    """The ``mapillaryd.service`` unit for ``variant``, every line commented."""
    system = variant == "system"
    exec_start = " ".join(
        _unit_word(w) for w in (inst.python, "-m", "daemon", "run", "--config", inst.config)
    )
    rw = " ".join("-" + _unit_word(p) for p in inst.writable)  # "-": a missing path is fine
    who = (
        [
            "# The account it runs as: the owner of the config, the token file and the cards'",
            "# mount points. Never root.",
            f"User={inst.user}",
            "# Cards mounted by udisks/systemd-mount are readable by the plugdev group on Debian.",
            "SupplementaryGroups=plugdev",
        ]
        if system
        else []
    )
    lines = [
        f"# mapillaryd as a systemd {variant} service. Written by `mapillaryd install-service"
        f" --{variant}`;",
        "# edit the config, not this file, and run install-service again after moving things.",
        "[Unit]",
        "# What `systemctl status` shows.",
        "Description=mapillaryd: upload SD cards and drop folders to Mapillary",
        "# Where to read about it.",
        "Documentation=https://github.com/mapillary/mapillary_tools",
        "# Start once file systems are up; the network is NOT waited for: offline is normal in",
        "# a car and uploads simply wait. Never After=time-sync.target either: a Pi offline for",
        "# days would then never start.",
        "After=local-fs.target network.target",
        "# More than 5 failed starts in 10 minutes: give up (systemctl reset-failed to retry).",
        "StartLimitIntervalSec=600",
        "# (the count that goes with StartLimitIntervalSec)",
        "StartLimitBurst=5",
        "",
        "[Service]",
        "# The daemon sends READY=1 once its queue is open and its watchers run.",
        "Type=notify",
        "# Only the daemon's main process may send READY/WATCHDOG/STATUS.",
        "NotifyAccess=main",
        "# The daemon itself, in the foreground (never a shell wrapper: it would eat SIGTERM).",
        f"ExecStart={exec_start}",
        *who,
        "# Its main loop pings the watchdog every WatchdogSec/2; a wedged loop is killed and",
        "# restarted (kill -9 at any instant loses nothing).",
        f"WatchdogSec={WATCHDOG_SEC}",
        "# Restart after a crash, a watchdog kill or a fatal error, not after a clean stop.",
        "Restart=on-failure",
        "# Wait this long between restarts.",
        "RestartSec=10",
        "# Opening the queue and the first scan of a big card can take a while on a Pi.",
        "TimeoutStartSec=120",
        "# SIGTERM: stop claiming work, finish or release uploads in flight, exit 0.",
        "KillSignal=SIGTERM",
        "# The daemon stops within ~20 s (uploads in flight finish or are released, resumable);",
        "# leave it room before SIGKILL.",
        "TimeoutStopSec=60",
        "# Log lines reach the journal at once (JSON with <N> priority prefixes).",
        "Environment=PYTHONUNBUFFERED=1",
        "# $STATE_DIRECTORY: the queue database and spool (must survive reboots: not tmpfs).",
        "StateDirectory=mapillaryd",
        "# Only its owner reads the queue (paths of your photos).",
        "StateDirectoryMode=0700",
        "# $LOGS_DIRECTORY, for log files kept outside the journal.",
        "LogsDirectory=mapillaryd",
        "# Hardening: the whole file system is read-only for it ...",
        "ProtectSystem=strict",
        *(
            [
                "# ... home directories too (the config and token are only read) ...",
                "ProtectHome=read-only",
            ]
            if system
            else []
        ),
        "# ... except what it must write: watch folders, mount roots (a card's files are freed",
        "# after upload when asked to), a state dir set in the config.",
        f"ReadWritePaths={rw}" if rw else "# (nothing outside its StateDirectory here)",
        "# It never needs more privileges than it starts with.",
        "NoNewPrivileges=yes",
        "# Its own /tmp.",
        "PrivateTmp=yes",
        "# No tuning of the kernel, no modules, no cgroup changes.",
        "ProtectKernelTunables=yes",
        "# (kernel modules)",
        "ProtectKernelModules=yes",
        "# (control groups)",
        "ProtectControlGroups=yes",
        "# Sockets: AF_UNIX for the notify socket, IP for Mapillary and the status page.",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "# No realtime scheduling, no personality changes, native system calls only.",
        "RestrictRealtime=yes",
        "# (personality)",
        "LockPersonality=yes",
        "# (native system calls only)",
        "SystemCallArchitectures=native",
        "",
        "[Install]",
        "# Started at boot (system) or with the user's manager (user; enable-linger for a Pi).",
        f"WantedBy={'multi-user.target' if system else 'default.target'}",
    ]
    return "\n".join(lines) + "\n"


def render_card_unit(inst: Install) -> str:
    """The template unit the udev rule pulls in: mounts ``/dev/%I`` with systemd-mount."""
    lines = [
        "# Mounts a card for mapillaryd on a Pi without a desktop automounter. Pulled in by",
        f"# {CARD_RULE_NAME} as mapillaryd-card@<kernel name>.service (udev itself must never",
        "# mount: its RUN programs live in udev's own mount namespace and are killed).",
        "[Unit]",
        "# What `systemctl status` shows.",
        "Description=Mount the card /dev/%I for mapillaryd",
        "# Stop (and unmount) when the card's device goes away.",
        "BindsTo=dev-%i.device",
        "# Only once the device is there.",
        "After=dev-%i.device",
        "",
        "[Service]",
        "# Mounting is one command; the unit stays active while the card is in.",
        "Type=oneshot",
        "# (stays active so that ExecStop runs when the card goes)",
        "RemainAfterExit=yes",
        "# systemd-mount names the mount point after the label: /run/media/system/<LABEL>, one",
        "# of mapillaryd's default mount roots. The card stays readable by everyone; for card",
        f"# freeing add --options=uid={inst.user},gid={inst.user} (vfat/exFAT only).",
        "ExecStart=/usr/bin/systemd-mount --no-block --collect /dev/%I",
        "# Unmount cleanly before the device disappears, when it is stopped by hand.",
        "ExecStop=/usr/bin/systemd-mount --umount /dev/%I",
    ]
    return "\n".join(lines) + "\n"


def render_card_rule() -> str:
    """The udev rule: a USB/SD partition with a file system pulls in the mount unit."""
    return "\n".join(
        [
            "# mapillaryd: mount SD cards and USB card readers on a Pi without a desktop.",
            "# A partition with a file system on USB or an SD/MMC slot (not the boot card:",
            "# mmcblk0) asks systemd for mapillaryd-card@<name>.service, which mounts it.",
            "# A USB disk you mount yourself (/etc/fstab, e.g. the one holding the state dir):",
            '# add ENV{ID_FS_UUID}!="<its UUID>" to the first line so it is left alone.',
            'ACTION=="add", SUBSYSTEM=="block", ENV{DEVTYPE}=="partition", '
            'ENV{ID_FS_USAGE}=="filesystem", ENV{ID_BUS}=="usb", TAG+="systemd", '
            'ENV{SYSTEMD_WANTS}+="mapillaryd-card@%k.service"',
            'ACTION=="add", SUBSYSTEM=="block", ENV{DEVTYPE}=="partition", '
            'ENV{ID_FS_USAGE}=="filesystem", KERNEL=="mmcblk[1-9]p*", TAG+="systemd", '
            'ENV{SYSTEMD_WANTS}+="mapillaryd-card@%k.service"',
            "",
        ]
    )


def render_plist(inst: Install) -> str:
    """The launchd LaunchAgent (a plist, with comments) for macOS."""
    logs = f"{inst.home}/Library/Logs/mapillaryd"

    def s(text: str) -> str:
        return f"<string>{escape(text)}</string>"

    args = "\n".join(
        f"    {s(a)}" for a in (inst.python, "-m", "daemon", "run", "--config", inst.config)
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- mapillaryd as a launchd agent. Written by `mapillaryd install-service`. Removable volumes
     under /Volumes need Full Disk Access for the Python below (System Settings → Privacy &
     Security → Full Disk Access → +, then Cmd-Shift-G and paste its path). -->
<plist version="1.0">
<dict>
  <!-- The job's name: launchctl print gui/$UID/{LAUNCHD_LABEL} -->
  <key>Label</key>
  {s(LAUNCHD_LABEL)}
  <!-- The daemon in the foreground (launchd jobs must not daemonize). -->
  <key>ProgramArguments</key>
  <array>
{args}
  </array>
  <!-- Start at login. -->
  <key>RunAtLoad</key>
  <true/>
  <!-- Start again after a crash, not after a clean stop. -->
  <key>KeepAlive</key>
  <dict>
    <key>SuccessfulExit</key>
    <false/>
  </dict>
  <!-- At most one restart per 30 s. -->
  <key>ThrottleInterval</key>
  <integer>30</integer>
  <!-- SIGTERM first; SIGKILL only after this many seconds (uploads finish or are released). -->
  <key>ExitTimeOut</key>
  <integer>90</integer>
  <!-- A background job: throttled CPU and I/O while you work. -->
  <key>ProcessType</key>
  {s("Background")}
  <!-- (low-priority disk I/O) -->
  <key>LowPriorityIO</key>
  <true/>
  <!-- Unbuffered JSON log lines. -->
  <key>EnvironmentVariables</key>
  <dict>
    <key>PYTHONUNBUFFERED</key>
    {s("1")}
  </dict>
  <!-- Logs (rotate them with newsyslog if you keep the agent for years). -->
  <key>StandardOutPath</key>
  {s(logs + "/mapillaryd.log")}
  <key>StandardErrorPath</key>
  {s(logs + "/mapillaryd.log")}
  <!-- Its working directory. -->
  <key>WorkingDirectory</key>
  {s(inst.home)}
</dict>
</plist>
"""


def unit_dir(variant: Variant, home: str) -> str:
    return {
        "system": "/etc/systemd/system",
        "user": f"{home}/.config/systemd/user",
        "launchd": f"{home}/Library/LaunchAgents",
    }[variant]


def plan_install(inst: Install, variant: Variant, uid: int) -> Plan:
    """What ``install-service`` writes and runs for ``variant``."""
    where = unit_dir(variant, inst.home)
    if variant == "launchd":
        plist = f"{where}/{LAUNCHD_LABEL}.plist"
        return Plan(
            variant,
            write=(PlannedFile(plist, render_plist(inst)),),
            commands=(
                ("mkdir", "-p", f"{inst.home}/Library/Logs/mapillaryd"),
                ("launchctl", "bootstrap", f"gui/{uid}", plist),
            ),
            notes=(
                f"Give {inst.python} Full Disk Access to read cards under /Volumes.",
                f"Logs: {inst.home}/Library/Logs/mapillaryd/mapillaryd.log",
            ),
        )
    ctl = ("systemctl",) if variant == "system" else ("systemctl", "--user")
    files = [PlannedFile(f"{where}/{UNIT_NAME}", render_unit(inst, variant))]
    commands = [(*ctl, "daemon-reload")]
    notes = []
    if variant == "system" and inst.automount_cards:
        files.append(PlannedFile(f"{where}/{CARD_UNIT_NAME}", render_card_unit(inst)))
        files.append(PlannedFile(f"/etc/udev/rules.d/{CARD_RULE_NAME}", render_card_rule()))
        commands.append(("udevadm", "control", "--reload"))
    commands.append((*ctl, "enable", "--now", UNIT_NAME))
    if variant == "user":
        notes.append(f"Without a login session (headless): loginctl enable-linger {inst.user}")
    notes.append(f"Logs: journalctl {' '.join(ctl[1:])} -u mapillaryd -f".replace("  ", " "))
    notes.append(f"Status: {' '.join(ctl)} status mapillaryd; mapillaryd status")
    return Plan(variant, write=tuple(files), commands=tuple(commands), notes=tuple(notes))


def plan_uninstall(home: str, variant: Variant, uid: int) -> Plan:
    """What ``uninstall-service`` removes and runs (the queue and config stay)."""
    where = unit_dir(variant, home)
    if variant == "launchd":
        return Plan(
            variant,
            remove=(f"{where}/{LAUNCHD_LABEL}.plist",),
            commands=(("launchctl", "bootout", f"gui/{uid}/{LAUNCHD_LABEL}"),),
        )
    ctl = ("systemctl",) if variant == "system" else ("systemctl", "--user")
    remove = [f"{where}/{UNIT_NAME}"]
    if variant == "system":
        remove += [f"{where}/{CARD_UNIT_NAME}", f"/etc/udev/rules.d/{CARD_RULE_NAME}"]
    return Plan(
        variant,
        remove=tuple(remove),
        commands=((*ctl, "disable", "--now", UNIT_NAME), (*ctl, "daemon-reload")),
    )


def describe(plan: Plan, installing: bool) -> str:
    """``--dry-run`` output: each file whole under a ``# --- path`` header, then the commands."""
    out = []
    for f in plan.write:
        out.append(f"# --- {f.path} (mode {f.mode:o})")
        out.append(f.content.rstrip("\n"))
    for path in plan.remove:
        out.append(f"# --- remove {path}")
    out.append("# --- then run")
    out += [" ".join(_shell_word(w) for w in cmd) for cmd in plan.commands]
    for note in plan.notes:
        out.append(f"# note: {note}")
    if not installing and not plan.remove:
        out.append("# (nothing to remove)")
    return "\n".join(out) + "\n"


def parse_described(text: str) -> dict[str, str]:
    """The files of a :func:`describe` output, ``{path: content}`` (for checking a dry run)."""
    files: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        m = re.match(r"# --- (/\S+) \(mode [0-7]+\)$", line)
        if m:
            current = m.group(1)
            files[current] = ""
        elif line.startswith("# --- "):
            current = None
        elif current is not None:
            files[current] += line + "\n"
    return files


def _shell_word(word: str) -> str:
    return word if re.fullmatch(r"[\w@%+=:,./-]+", word) else "'" + word.replace("'", "'\\''") + "'"


Runner = Callable[[Sequence[str]], int]


def _run(cmd: Sequence[str]) -> int:
    return subprocess.run(list(cmd), check=False).returncode


def execute(plan: Plan, run: Runner = _run) -> list[str]:
    """Write/remove the plan's files and run its commands in order. Return the problems met
    (a command that failed, a file that could not be removed); an unwritable unit directory
    raises :class:`PermissionError` before anything is run."""
    problems = []
    for f in plan.write:
        path = Path(f.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(f.content, encoding="utf-8")
        tmp.chmod(f.mode)
        os.replace(tmp, path)
    for removed in plan.remove:
        try:
            Path(removed).unlink(missing_ok=True)
        except OSError as exc:
            problems.append(f"{removed}: {exc.strerror}")
    for cmd in plan.commands:
        try:
            code = run(cmd)
        except FileNotFoundError:
            problems.append(f"{cmd[0]}: not found")
            continue
        if code != 0:
            problems.append(f"{' '.join(cmd)}: exit code {code}")
    return problems


#: The installation the examples in ``service/`` are rendered for: pipx on a Raspberry Pi.
EXAMPLE = Install(
    python="/home/pi/.local/share/pipx/venvs/mapillaryd/bin/python",
    config="/home/pi/.config/mapillaryd/config.toml",
    user="pi",
    home="/home/pi",
    writable=("/media", "/run/media"),
    automount_cards=True,
)


def examples(inst: Install = EXAMPLE) -> dict[str, str]:
    """``{file name in service/: content}``: every unit, rule and plist, rendered for ``inst``.
    Regenerate ``service/`` with ``python -c "import daemon.install_service as m;
    m.write_examples()"``."""
    return {
        "mapillaryd.service": render_unit(inst, "system"),
        "mapillaryd-user.service": render_unit(inst, "user"),
        CARD_UNIT_NAME: render_card_unit(inst),
        CARD_RULE_NAME: render_card_rule(),
        f"{LAUNCHD_LABEL}.plist": render_plist(
            Install(
                python="/Users/me/.local/pipx/venvs/mapillaryd/bin/python",
                config="/Users/me/.config/mapillaryd/config.toml",
                user="me",
                home="/Users/me",
            )
        ),
    }


def write_examples(folder: Path | None = None) -> None:
    """Write :func:`examples` into ``folder`` (default: the repository's ``service/``)."""
    folder = folder or Path(__file__).resolve().parents[1] / "service"
    for name, content in examples().items():
        (folder / name).write_text(content, encoding="utf-8")
