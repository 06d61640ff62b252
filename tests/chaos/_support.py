"""Shared by the chaos tests: configs, real mounts (tmpfs, bind), filling a disk, reading the
queue and the sandbox from the outside."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from daemon.sandbox import Sandbox


def write_config(
    root: Path,
    watches: list[dict[str, Any]],
    *,
    state_dir: Path | None = None,
    state: str = "",
    process: str = "",
    upload: str = "",
    tail: str = "",
) -> Path:
    """A daemon config under ``root``: ``watches`` as [[watch]] tables, the state in
    ``state_dir`` (default ``root/state``) with ``state`` lines added to [state], short
    settle/quiet/retry times so a chaos run stays short; ``process``/``upload`` lines are
    added to [process]/[upload]."""
    tables = ""
    for w in watches:
        tables += "\n[[watch]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in w.items())
    cfg = root / "config.toml"
    cfg.write_text(
        f"""[state]
dir = "{state_dir or root / "state"}"
{state}
{tables}
[process]
time_zone = "UTC"
batch_quiet_seconds = 2
{process}

[scan]
interval_seconds = 3

[upload]
retry_base_seconds = 0.2
retry_cap_seconds = 2
{upload}

[log]
format = "json"
level = "info"
{tail}""",
        encoding="utf-8",
    )
    return cfg


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)


def mount_tmpfs(point: Path, size: str) -> None:
    """Mount a fresh tmpfs of ``size`` (``"4m"``) at ``point``; skip the test when mounting is
    not permitted here (not root, no CAP_SYS_ADMIN)."""
    point.mkdir(parents=True, exist_ok=True)
    r = _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point))
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode})")


def bind(src: Path, point: Path) -> None:
    point.mkdir(parents=True, exist_ok=True)
    r = _run("mount", "--bind", str(src), str(point))
    assert r.returncode == 0, r.stderr


def unmount(point: Path) -> None:
    """Lazy unmount: the path is gone at once even while files under it are open (a pulled
    card: what was opened before may still be read from the detached mount, new opens fail)."""
    r = _run("umount", "-l", str(point))
    assert r.returncode == 0, r.stderr


def is_mounted(point: Path) -> bool:
    return os.path.ismount(point)


@contextmanager
def mounted_tmpfs(point: Path, size: str) -> Iterator[Path]:
    mount_tmpfs(point, size)
    try:
        yield point
    finally:
        while is_mounted(point):
            unmount(point)


def fill(path: Path, leave: int) -> Path:
    """Fill the filesystem holding folder ``path`` until about ``leave`` bytes are free (0:
    until the kernel says ENOSPC); return the filler file (delete it to free the space)."""
    filler = path / ".filler"
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    want = max(0, free - leave)
    chunk = b"\0" * (1 << 16)
    with open(filler, "ab") as fh:
        try:
            while want > 0:
                n = fh.write(chunk[: min(len(chunk), want)])
                want -= n
                fh.flush()
            if leave == 0:
                while True:
                    fh.write(chunk)
                    fh.flush()
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return filler


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def queue_counts(db: Path) -> dict[str, int]:
    """Items per state, read straight from the daemon's database (empty before it exists)."""
    rows = query(db, "SELECT state, count(*) FROM items GROUP BY state")
    return {str(s): int(n) for s, n in rows}


def query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of a read-only query on the daemon's queue (it writes meanwhile: WAL lets us read);
    no rows while the daemon has not created its schema yet."""
    if not db.exists():
        return []
    conn = sqlite3.connect(db, timeout=30)
    try:
        return list(conn.execute(sql, args).fetchall())
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        conn.close()


def get_json(sandbox: Sandbox, path: str) -> Any:
    with urllib.request.urlopen(f"{sandbox.url}{path}", timeout=20) as r:
        return json.loads(r.read())


def uploaded_names(sandbox: Sandbox) -> Counter[str]:
    """How many times each image file name is in a cluster on the sandbox."""
    names: Counter[str] = Counter()
    for c in get_json(sandbox, "/_sandbox/clusters"):
        for img in c.get("images", []):
            names[str(img["description"]["MAPFilename"])] += 1
    return names


def video_clusters(sandbox: Sandbox) -> list[dict[str, Any]]:
    return [
        c for c in get_json(sandbox, "/_sandbox/clusters") if c["file_type"] == "mly_camm_video"
    ]
