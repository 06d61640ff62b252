"""One timed run of each contender against a fresh sandbox of its own.

Both start from a private copy of the same drive (copied before the clock starts, so both read
from a warm page cache), get a ``HOME`` in the run's folder, ``TZ=UTC`` and no proxy variables,
and talk only to their sandbox on 127.0.0.1. Both use their default of 4 parallel image uploads.

* **mapillaryd**: the drive is already on the "card" when ``mapillaryd run`` starts (copy mode,
  ``settle_seconds`` 2 — the minimum —, ``batch_quiet_seconds`` 1). The clock runs from process
  start until the queue database says every frame is ``done``; then it gets SIGTERM. Its CPU is
  from ``wait4`` after it exits, so it includes the (short) shutdown.
* **mapillary_tools**: ``mapillary_tools process_and_upload`` of the folder, timed from process
  start to exit; CPU from ``wait4`` (its process-pool workers included).
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import timeline
from bench.proc import Child, Exit
from bench.sandbox import TOKEN, SandboxProcess
from bench.verify import check_clusters
from daemon.store.queue import ItemState, Queue

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MAPILLARY_TOOLS = REPO / ".venv-mt" / "bin" / "mapillary_tools"
MAPILLARYD = "mapillaryd"
MAPILLARY_TOOLS = "mapillary_tools"
SETTLE_SECONDS = 2.0  # the smallest the config accepts (FAT timestamps have 2 s granularity)
BATCH_QUIET_SECONDS = 1.0
POLL_SECONDS = 0.1  # how often the bench reads the daemon's queue: the wall time's resolution
#: Item states that mean a frame will not be uploaded: the run is wrong, stop waiting.
DEAD_ENDS = frozenset({ItemState.REJECTED, ItemState.QUARANTINED, ItemState.HELD, ItemState.FAILED})


class ContenderError(Exception):
    """A contender failed, timed out or exited early; the message says which and why."""


@dataclass(frozen=True)
class RunResult:
    """The figures of one run of one contender."""

    contender: str
    frames: int
    wall_s: float
    cpu_user_s: float
    cpu_sys_s: float
    exit_code: int
    requests: int
    requests_by_route: dict[str, int]
    bytes_received: int
    clusters: int
    sandbox_cpu_s: float
    #: Seconds from process start to each milestone (see :mod:`bench.timeline`).
    milestones: dict[str, float] = field(default_factory=dict)
    #: Seconds spent in each phase between two milestones, in pipeline order.
    phases: dict[str, float] = field(default_factory=dict)
    #: mapillaryd only: seconds from SIGTERM to exit (not in ``wall_s``, in the CPU).
    shutdown_s: float | None = None

    @property
    def cpu_s(self) -> float:
        return self.cpu_user_s + self.cpu_sys_s

    @property
    def images_per_s(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else float("inf")

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["cpu_s"] = self.cpu_s
        out["images_per_s"] = self.images_per_s
        return out


def base_env(home: Path) -> dict[str, str]:
    """The environment both contenders (and the sandbox) start from: nothing of the user's."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
        "HOME": str(home),
        "TZ": "UTC",
        "LANG": "C.UTF-8",
        "NO_PROXY": "127.0.0.1,localhost",
    }


def mapillaryd_command() -> list[str]:
    """The ``mapillaryd`` console script of this virtualenv (``python -m daemon`` without one)."""
    script = Path(sys.executable).parent / "mapillaryd"
    return [str(script)] if script.exists() else [sys.executable, "-m", "daemon"]


def write_daemon_config(work: Path, card: Path) -> Path:
    """The daemon's config: state under ``work``, the card copied into the spool, UTC cameras."""
    cfg = work / "config.toml"
    cfg.write_text(
        f"""# written by python -m bench
[state]
dir = "{work / "state"}"

[[watch]]
path = "{card}"
ingest = "copy"
settle_seconds = {SETTLE_SECONDS:g}

[process]
time_zone = "UTC"
batch_quiet_seconds = {BATCH_QUIET_SECONDS:g}

[log]
format = "json"
level = "info"
""",
        encoding="utf-8",
    )
    return cfg


def run_mapillaryd(drive: Path, names: list[str], work: Path, timeout: float) -> RunResult:
    """Upload ``drive`` with ``mapillaryd run``; raise :class:`ContenderError` on any failure."""
    work.mkdir(parents=True)
    card = work / "card"
    shutil.copytree(drive, card / "DCIM" / "100BENCH")
    cfg = write_daemon_config(work, card)
    env = base_env(work / "home")
    frames = len(names)
    with SandboxProcess(work / "sandbox", env) as sandbox:
        env.update(
            MAPILLARY_TOKEN=TOKEN,
            MAPILLARY_UPLOAD_ENDPOINT=sandbox.upload_endpoint,
            MAPILLARY_GRAPH_API_ENDPOINT=sandbox.graph_endpoint,
        )
        child = Child(
            [*mapillaryd_command(), "run", "--config", str(cfg)],
            env=env,
            log=work / "mapillaryd.log",
        )
        try:
            milestones, done_at = _wait_all_done(
                child, work / "state" / "queue.sqlite3", frames, timeout
            )
        finally:
            term_at = time.monotonic()
            ended = child.stop()
        stats = sandbox.stats()
        clusters = sandbox.clusters()
        sandbox_exit = sandbox.stop()
    if ended.code != 0:
        raise ContenderError(f"mapillaryd exited with {ended.code} after SIGTERM:\n{child.tail()}")
    n_clusters = check_clusters(MAPILLARYD, clusters, names)
    milestones.update(
        timeline.daemon_milestones(child.log, child.started_wall)
    )  # finer than polling
    return _result(
        MAPILLARYD,
        frames,
        done_at - child.started,
        ended,
        stats_requests=stats.requests,
        bytes_received=stats.bytes_received,
        clusters=n_clusters,
        sandbox_exit=sandbox_exit,
        milestones=milestones,
        phases=timeline.phases(milestones, timeline.DAEMON_PHASES),
        shutdown_s=ended.ended - term_at,
    )


def _wait_all_done(
    child: Child, db: Path, frames: int, timeout: float
) -> tuple[dict[str, float], float]:
    """Poll the daemon's queue (read-only) until ``frames`` items are done.

    Returns the milestones (seconds since the daemon started) and the monotonic time the last
    frame was seen done.
    """
    deadline = child.started + timeout
    milestones: dict[str, float] = {}
    conn: sqlite3.Connection | None = None
    counts: dict[str, int] = {}
    try:
        while True:
            now = time.monotonic()
            if child.exit is not None:
                raise ContenderError(
                    f"mapillaryd exited early with {child.exit.code}:\n{child.tail()}"
                )
            if now > deadline:
                raise ContenderError(
                    f"mapillaryd: not every frame done after {timeout:g}s (queue: {counts})"
                )
            if conn is None and db.exists():
                conn = _open_read_only(db)
            if conn is not None:
                try:
                    counts = Queue(conn).counts()
                except sqlite3.OperationalError:  # the schema is still being created
                    counts = {}
                _note_milestones(milestones, counts, frames, now - child.started)
                dead = {s: n for s, n in counts.items() if s in DEAD_ENDS and n}
                if dead:
                    raise ContenderError(
                        f"mapillaryd will not upload every frame: {dead}\n{child.tail()}"
                    )
                if counts.get(ItemState.DONE, 0) >= frames:
                    return milestones, now
            time.sleep(POLL_SECONDS)
    finally:
        if conn is not None:
            conn.close()


def _open_read_only(db: Path) -> sqlite3.Connection | None:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.OperationalError:
        return None
    conn.row_factory = sqlite3.Row
    return conn


def _note_milestones(
    milestones: dict[str, float], counts: dict[str, int], frames: int, t: float
) -> None:
    """Record the first time the queue showed each stage of the daemon's pipeline."""
    total = sum(counts.values())
    ingested = counts.get(ItemState.INGESTED, 0)
    uploaded = counts.get(ItemState.UPLOADED, 0) + counts.get(ItemState.DONE, 0)
    reached = {
        "first_ingested": total >= 1,
        "all_ingested": total >= frames,
        "all_queued": total >= frames and ingested == 0,
        "all_uploaded": uploaded >= frames,
        "all_done": counts.get(ItemState.DONE, 0) >= frames,
    }
    for name, yes in reached.items():
        if yes and name not in milestones:
            milestones[name] = round(t, 3)


def run_mapillary_tools(
    drive: Path,
    names: list[str],
    work: Path,
    timeout: float,
    executable: Path,
) -> RunResult:
    """Upload ``drive`` with ``mapillary_tools process_and_upload``; raise on any failure."""
    work.mkdir(parents=True)
    images = work / "images"
    shutil.copytree(drive, images)
    ini = work / "mapillary.ini"
    ini.write_text(f"[sandbox]\nuser_upload_token = {TOKEN}\n", encoding="utf-8")
    env = base_env(work / "home")
    frames = len(names)
    with SandboxProcess(work / "sandbox", env) as sandbox:
        env.update(
            MAPILLARY_UPLOAD_ENDPOINT=sandbox.upload_endpoint,
            MAPILLARY_GRAPH_API_ENDPOINT=sandbox.graph_endpoint,
            MAPILLARY_CONFIG_PATH=str(ini),
            MAPILLARY_TOOLS_PROMPT_DISABLED="YES",
            MAPILLARY_UPLOAD_HISTORY_PATH=str(work / "history"),
            MAPILLARY_TOOLS_UPLOAD_CACHE_DIR=str(work / "cache"),
            MAPILLARY_TOOLS_MAX_UPLOAD_RETRIES="2",  # fail fast on a broken run; no effect if OK
        )
        child = Child(
            [str(executable), "process_and_upload", str(images), "--user_name", "sandbox"],
            env=env,
            log=work / "mapillary_tools.log",
            cwd=work,
        )
        try:
            ended = child.wait(timeout)
        finally:
            if child.exit is None:  # timed out, or the bench itself is being interrupted
                child.stop(timeout=5.0)
        if ended is None:
            raise ContenderError(f"mapillary_tools did not finish in {timeout:g}s")
        stats = sandbox.stats()
        clusters = sandbox.clusters()
        sandbox_exit = sandbox.stop()
    if ended.code != 0:
        raise ContenderError(f"mapillary_tools exited with {ended.code}:\n{child.tail()}")
    n_clusters = check_clusters(MAPILLARY_TOOLS, clusters, names)
    wall_s = ended.ended - child.started
    milestones = timeline.mapillary_tools_milestones(child.log, child.started_wall)
    milestones["exit"] = round(wall_s, 3)
    return _result(
        MAPILLARY_TOOLS,
        frames,
        wall_s,
        ended,
        stats_requests=stats.requests,
        bytes_received=stats.bytes_received,
        clusters=n_clusters,
        sandbox_exit=sandbox_exit,
        milestones=milestones,
        phases=timeline.phases(milestones, timeline.MT_PHASES),
    )


def _result(
    contender: str,
    frames: int,
    wall_s: float,
    ended: Exit,
    *,
    stats_requests: dict[str, int],
    bytes_received: int,
    clusters: int,
    sandbox_exit: Exit | None,
    milestones: dict[str, float] | None = None,
    phases: dict[str, float] | None = None,
    shutdown_s: float | None = None,
) -> RunResult:
    return RunResult(
        contender=contender,
        frames=frames,
        wall_s=wall_s,
        cpu_user_s=ended.user_s,
        cpu_sys_s=ended.sys_s,
        exit_code=ended.code,
        requests=sum(stats_requests.values()),
        requests_by_route=dict(sorted(stats_requests.items())),
        bytes_received=bytes_received,
        clusters=clusters,
        sandbox_cpu_s=sandbox_exit.cpu_s if sandbox_exit is not None else float("nan"),
        milestones=milestones or {},
        phases=phases or {},
        shutdown_s=shutdown_s,
    )
