"""``mapillaryd doctor``: what on this machine would stop the daemon from doing its job, each
finding with the fix.

Two halves: :func:`gather` reads the facts (sysctl files, the mount table, timedatectl or
adjtimex, ``which``, free space, one ``GET /me``, one request to the upload endpoint) into a
plain :class:`Facts`; :func:`diagnose` turns facts into :class:`Finding` values and is pure.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx

from daemon import diskspace, errors
from daemon.config import Config
from daemon.credentials import TokenSource
from daemon.mapillary.graph import GraphClient

Level = Literal["ok", "warn", "fail"]

#: Below this many inotify watches, a card with many folders or a large drop folder runs out.
MIN_INOTIFY_WATCHES = 65536
MIN_INOTIFY_INSTANCES = 128
#: Free space below which the state disk is a warning (the daemon itself holds below its
#: configured reserve, ``state.min_free_mb``).
LOW_FREE_BYTES = 2_000_000_000
SYSCTL_FILE = "/etc/sysctl.d/60-mapillaryd.conf"


@dataclass(frozen=True)
class Finding:
    check: str
    level: Level
    message: str
    fix: str = ""


@dataclass
class Facts:
    """What :func:`gather` found; None means "could not be determined here"."""

    platform: str = sys.platform
    inotify_watches: int | None = None
    inotify_instances: int | None = None
    state_dir: str = ""
    state_fs_type: str | None = None
    state_writable: bool = True
    root_read_only: bool | None = None
    allow_tmpfs: bool = False
    clock_synced: bool | None = None
    clock_source: str = ""
    tools: dict[str, str | None] = field(default_factory=dict)
    free_bytes: int | None = None
    min_free_bytes: int = 0
    token_problem: str = ""
    me: dict[str, str] | None = None
    me_error: str = ""
    me_rejected: bool = False
    upload_endpoint: str = ""
    upload_error: str = ""
    upload_checked: bool = True


def diagnose(f: Facts) -> list[Finding]:
    """Every check's finding, in a fixed order."""
    return [
        *_inotify(f),
        _state_dir(f),
        _clock(f),
        *_tools(f),
        _space(f),
        _token(f),
        _endpoints(f),
    ]


def _inotify(f: Facts) -> list[Finding]:
    if f.platform != "linux":
        return []
    out = []
    if f.inotify_watches is not None and f.inotify_watches < MIN_INOTIFY_WATCHES:
        out.append(
            Finding(
                "inotify watches",
                "warn",
                f"fs.inotify.max_user_watches is {f.inotify_watches}: a card or drop folder "
                "with many folders exhausts it (watched folders then fall back to slow polling)",
                f"echo fs.inotify.max_user_watches=524288 | sudo tee -a {SYSCTL_FILE} "
                "&& sudo sysctl --system",
            )
        )
    if f.inotify_instances is not None and f.inotify_instances < MIN_INOTIFY_INSTANCES:
        out.append(
            Finding(
                "inotify instances",
                "warn",
                f"fs.inotify.max_user_instances is {f.inotify_instances}",
                f"echo fs.inotify.max_user_instances=512 | sudo tee -a {SYSCTL_FILE} "
                "&& sudo sysctl --system",
            )
        )
    if not out:
        shown = f.inotify_watches if f.inotify_watches is not None else "unknown"
        out.append(Finding("inotify", "ok", f"max_user_watches {shown}"))
    return out


def _state_dir(f: Facts) -> Finding:
    name = "state directory"
    if f.state_fs_type and not f.allow_tmpfs:
        return Finding(
            name,
            "fail",
            f"{f.state_dir} is on {f.state_fs_type}: the queue would vanish at the next power "
            "cut or reboot (a read-only root with a RAM overlay does this)",
            "point [state] dir at a persistent disk (a USB SSD, or a writable partition), "
            'e.g. dir = "/mnt/ssd/mapillaryd"',
        )
    if f.root_read_only and f.state_dir.startswith("/var/"):
        return Finding(
            name,
            "warn",
            "the root file system is mounted read-only; the state dir must be on a writable one",
            "put [state] dir on a persistent writable partition, or disable the read-only "
            "overlay (raspi-config → Performance → Overlay File System)",
        )
    if not f.state_writable:
        return Finding(
            name,
            "fail",
            f"{f.state_dir} cannot be written by this user",
            f"sudo chown -R $(id -un) {f.state_dir}   (or set [state] dir to a folder you own)",
        )
    return Finding(name, "ok", f"{f.state_dir} (persistent, writable)")


def _clock(f: Facts) -> Finding:
    name = "clock"
    if f.clock_synced is None:
        return Finding(name, "ok", "synchronisation not checked on this system")
    if f.clock_synced:
        return Finding(name, "ok", f"synchronised ({f.clock_source})")
    return Finding(
        name,
        "warn",
        f"not synchronised ({f.clock_source}): a Pi without a real-time clock boots at an "
        "old time; captures are placed by GPS/EXIF time, but TLS and schedules need the right "
        "time",
        "sudo timedatectl set-ntp true   (and check that the network reaches an NTP server)",
    )


def _tools(f: Facts) -> list[Finding]:
    uses = {
        "ffmpeg": 'videos cannot be sampled into frames (watch video = "frames"), they wait',
        "ffprobe": "video frames cannot be checked before sampling",
        "exiftool": "optional: only used to inspect files by hand",
    }
    out = []
    for tool, why in uses.items():
        where = f.tools.get(tool)
        if where:
            out.append(Finding(tool, "ok", where))
        else:
            level: Level = "ok" if tool == "exiftool" else "warn"
            pkg = "libimage-exiftool-perl" if tool == "exiftool" else "ffmpeg"
            brew = "exiftool" if tool == "exiftool" else "ffmpeg"
            fix = f"sudo apt install {pkg}   (macOS: brew install {brew})"
            out.append(Finding(tool, level, f"not found: {why}", fix))
    return out


def _space(f: Facts) -> Finding:
    name = "free space"
    if f.free_bytes is None:
        return Finding(name, "warn", f"{f.state_dir}: could not be measured")
    gb = f.free_bytes / 1e9
    if f.free_bytes < f.min_free_bytes:
        return Finding(
            name,
            "fail",
            f"{gb:.2f} GB free under {f.state_dir}: below the reserve, ingest is held",
            "free space there, move [state] spool_dir to a bigger disk, or lower "
            "[state] min_free_mb",
        )
    if f.free_bytes < LOW_FREE_BYTES:
        return Finding(
            name,
            "warn",
            f"{gb:.2f} GB free under {f.state_dir}: a single card's copies may not fit",
            'move [state] spool_dir to a bigger disk, or use ingest = "in_place"',
        )
    return Finding(name, "ok", f"{gb:.1f} GB free under {f.state_dir}")


def _token(f: Facts) -> Finding:
    name = "token"
    if f.token_problem:
        return Finding(name, "fail", f.token_problem, "mapillaryd auth")
    if f.me_rejected:
        return Finding(
            name, "fail", f"rejected by Mapillary: {f.me_error}", "mapillaryd auth  (a new token)"
        )
    if f.me is None and f.me_error.startswith("not checked"):
        return Finding(name, "ok", f.me_error)
    if f.me is None:
        return Finding(
            name,
            "warn",
            f"could not be checked: {f.me_error}",
            "check the network; uploads wait until Mapillary is reachable",
        )
    return Finding(name, "ok", f"valid: user {f.me['username']} ({f.me['id']})")


def _endpoints(f: Facts) -> Finding:
    name = "upload endpoint"
    if not f.upload_checked:
        return Finding(name, "ok", f"{f.upload_endpoint}: not checked (--offline)")
    if f.upload_error:
        hint = (
            "the clock is wrong (a certificate 'not yet valid'): synchronise it first"
            if "not yet valid" in f.upload_error
            else "check the network, DNS and a proxy; MAPILLARY_UPLOAD_ENDPOINT if you set it"
        )
        return Finding(name, "warn", f"{f.upload_endpoint}: {f.upload_error}", hint)
    return Finding(name, "ok", f"{f.upload_endpoint} reachable")


def render(findings: list[Finding]) -> str:
    """A plain-text report: one line per finding, its fix indented under it."""
    marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
    lines = []
    for x in findings:
        lines.append(f"{marks[x.level]}  {x.check}: {x.message}")
        if x.fix and x.level != "ok":
            lines.append(f"      fix: {x.fix}")
    fails = sum(x.level == "fail" for x in findings)
    warns = sum(x.level == "warn" for x in findings)
    lines.append(f"{fails} problem(s), {warns} warning(s)")
    return "\n".join(lines)


# --- gathering the facts (I/O) -------------------------------------------------------------


def gather(cfg: Config, timeout: float = 10.0, *, check_network: bool = True) -> Facts:
    """Read every fact :func:`diagnose` needs; network checks bounded by ``timeout`` each
    (skipped with ``check_network=False``: the token and endpoint are then "not checked")."""
    f = Facts()
    f.inotify_watches = _read_int("/proc/sys/fs/inotify/max_user_watches")
    f.inotify_instances = _read_int("/proc/sys/fs/inotify/max_user_instances")
    state = cfg.state.dir
    f.state_dir = str(state)
    f.state_fs_type = diskspace.volatile_fs_type(state)
    f.allow_tmpfs = cfg.state.allow_tmpfs
    existing = state
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    f.state_writable = os.access(existing, os.W_OK)
    with contextlib.suppress(OSError):
        f.root_read_only = bool(os.statvfs("/").f_flag & os.ST_RDONLY)
    f.clock_synced, f.clock_source = clock_synchronised()
    f.tools = {t: shutil.which(t) for t in ("ffmpeg", "ffprobe", "exiftool")}
    with contextlib.suppress(OSError):
        f.free_bytes = diskspace.free_bytes(cfg.state.spool_dir)
    f.min_free_bytes = cfg.state.min_free_bytes
    tokens = TokenSource(cfg.mapillary)
    token = tokens.current()
    f.token_problem = tokens.problem if token is None else ""
    if token is not None and not check_network:
        f.me_error = "not checked (--offline)"
    elif token is not None:
        try:
            with GraphClient(cfg.mapillary.graph_endpoint, token, timeout=timeout) as graph:
                f.me = graph.me()
        except errors.AuthError as exc:
            f.me_rejected, f.me_error = True, str(exc)
        except errors.UploadError as exc:
            f.me_error = str(exc)
    f.upload_endpoint = cfg.mapillary.upload_endpoint
    f.upload_checked = check_network
    if check_network:
        f.upload_error = _reach(cfg.mapillary.upload_endpoint, timeout)
    return f


def _read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


def _reach(url: str, timeout: float) -> str:
    """ "" if ``url`` answered anything over HTTP (with valid TLS), else why not."""
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            client.get(url)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    return ""


def clock_synchronised() -> tuple[bool | None, str]:
    """(synchronised?, how it was found out): timedatectl, else the kernel's adjtimex state,
    else (None, "")."""
    if shutil.which("timedatectl"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                ["timedatectl", "show", "--property=NTPSynchronized", "--value"],
                capture_output=True,
                text=True,
                timeout=5,
            )
            value = out.stdout.strip()
            if out.returncode == 0 and value in ("yes", "no"):
                return value == "yes", "timedatectl"
    if Path("/run/systemd/timesync/synchronized").exists():
        return True, "systemd-timesyncd"
    state = _adjtimex_state()
    if state is not None:
        return state != _TIME_ERROR, "adjtimex"
    return None, ""


_TIME_ERROR = 5


def _adjtimex_state() -> int | None:
    """The kernel clock state from adjtimex(2) with modes = 0 (read only): TIME_ERROR (5)
    means "not synchronised". None where there is no adjtimex (macOS)."""
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name, use_errno=True)
    buf = ctypes.create_string_buffer(512)  # struct timex is ~208 bytes; modes (first) = 0
    result = int(libc.adjtimex(buf))
    return None if result < 0 else result
