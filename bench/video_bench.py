"""``python -m bench video``: memory while streaming a multi-GB CAMM video upload.

A synthetic MP4 of ``--size-gb`` GiB (4 by default) is written **sparse**: its ``moov`` is
real (a 30 fps video track of 1 MiB samples with 64-bit chunk offsets, and a CAMM track with
one type-6 GPS point per second, interleaved with the video in one 64-bit ``mdat``), while the
video samples are holes, so the source costs ~nothing on disk and reads back as zeros.

The sandbox (``python -m daemon.sandbox``) runs in a process of its own
(:class:`bench.sandbox.SandboxProcess`) and writes what it receives to disk. The daemon's real
upload path runs in a **child process** (this module with ``--child``), exactly as
``daemon/upload.py`` chains it: ``read_video_fileobj`` → ``plan_camm_mp4`` → ``CammStream`` →
``md5_of`` → ``UploadService.fetch_offset`` + ``upload``. The child is reaped with
:func:`os.wait4`, whose ``ru_maxrss`` is its peak resident set. A second child does the same
imports, reading and planning but no hashing and no upload: its peak is the baseline.

The bench fails (exit 1) unless the sandbox's session holds exactly the planned size and the
child streamed exactly that many bytes. No timing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.args import in_workdir
from bench.contenders import base_env
from bench.sandbox import TOKEN, SandboxProcess

MiB = 1 << 20
GiB = 1 << 30
FPS = 30
SAMPLE_BYTES = MiB  # one video sample (frame) per chunk
CHILD_TIMEOUT_S = 900.0
#: 2024-05-01 12:00:00 UTC in MP4 time (seconds since 1904-01-01).
MP4_CREATED = 3_797_496_000
EPOCH_START = 1_714_564_800.0  # the same instant, Unix time


class BenchError(Exception):
    """The upload went wrong or the sandbox holds something else than planned."""


# --- the sparse source --------------------------------------------------------------------------


def _box(kind: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _full(kind: bytes, payload: bytes, flags: int = 0) -> bytes:
    return _box(kind, struct.pack(">I", flags) + payload)


def _trak(
    track_id: int,
    handler: bytes,
    fmt: bytes,
    timescale: int,
    sizes: Sequence[int],
    offsets: Sequence[int],
) -> bytes:
    """One track, one sample per chunk, every sample lasting one tick of ``timescale``."""
    n = len(sizes)
    entry = _box(fmt, bytes(6) + struct.pack(">H", 1))
    stbl = _box(
        b"stbl",
        _full(b"stsd", struct.pack(">I", 1) + entry)
        + _full(b"stts", struct.pack(">III", 1, n, 1))
        + _full(b"stsc", struct.pack(">IIII", 1, 1, 1, 1))
        + _full(b"stsz", struct.pack(f">II{n}I", 0, n, *sizes))
        + _full(b"co64", struct.pack(f">I{n}Q", n, *offsets)),
    )
    tkhd = _full(
        b"tkhd", struct.pack(">IIIII", MP4_CREATED, MP4_CREATED, track_id, 0, n) + bytes(60), 3
    )
    mdhd = _full(b"mdhd", struct.pack(">IIIIHH", MP4_CREATED, MP4_CREATED, timescale, n, 0, 0))
    hdlr = _full(b"hdlr", bytes(4) + handler + bytes(12) + b"bench\x00")
    dinf = _box(b"dinf", _full(b"dref", struct.pack(">I", 1) + _full(b"url ", b"", 1)))
    minf = _box(b"minf", dinf + stbl)
    return _box(b"trak", tkhd + _box(b"mdia", mdhd + hdlr + minf))


def _camm_gps(second: int) -> bytes:
    """A CAMM type-6 packet: a point moving north-east at ~12 m/s."""
    lat, lon = 48.137 + second * 1e-4, 11.575 + second * 5e-5
    return struct.pack(
        "<HHdidd7f", 0, 6, EPOCH_START + second, 3, lat, lon, 520.0, 3, 5, 0, 0, 0, 1
    )


@dataclass(frozen=True)
class Source:
    path: Path
    size: int
    frames: int
    gps_points: int
    disk_bytes: int


def write_sparse_video(path: Path, size: int) -> Source:
    """An MP4 of ~``size`` bytes whose video samples are holes (see the module docstring)."""
    frames = max(size // SAMPLE_BYTES, FPS)
    seconds = -(-frames // FPS)
    video_offsets: list[int] = []
    camm_offsets: list[int] = []
    camm_sizes: list[int] = []
    ftyp = _box(b"ftyp", b"isom" + struct.pack(">I", 0x200) + b"isomiso2avc1mp41")
    with open(path, "wb") as out:
        out.write(ftyp)
        mdat_at = out.tell()
        out.write(struct.pack(">I4sQ", 1, b"mdat", 0))  # largesize patched below
        pos = out.tell()
        for frame in range(frames):
            if frame % FPS == 0:  # one GPS sample per second, before that second's frames
                packet = _camm_gps(frame // FPS)
                out.seek(pos)
                out.write(packet)
                camm_offsets.append(pos)
                camm_sizes.append(len(packet))
                pos += len(packet)
            video_offsets.append(pos)
            pos += SAMPLE_BYTES  # a hole
        out.truncate(pos)
        out.seek(pos)
        mvhd = _full(
            b"mvhd",
            struct.pack(">IIII", MP4_CREATED, MP4_CREATED, 1000, seconds * 1000)
            + struct.pack(">IH10x", 0x10000, 0x100)
            + bytes(36 + 24)
            + struct.pack(">I", 3),
        )
        video = _trak(1, b"vide", b"avc1", FPS, [SAMPLE_BYTES] * frames, video_offsets)
        gps = _trak(2, b"camm", b"camm", 1, camm_sizes, camm_offsets)
        out.write(_box(b"moov", mvhd + video + gps))
        out.seek(mdat_at + 8)
        out.write(struct.pack(">Q", pos - mdat_at))
    st = path.stat()
    return Source(path, st.st_size, frames, len(camm_sizes), st.st_blocks * 512)


# --- the child: the daemon's upload path --------------------------------------------------------


def _vm_hwm_kib() -> int:
    """This process's peak RSS so far (``VmHWM``), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def child(mode: str, source: Path, endpoint: str) -> dict[str, Any]:
    """Run the upload path (``upload``) or all but hashing and uploading (``baseline``)."""
    # The same imports in both modes, so the baseline carries the same code.
    from daemon.mapillary.upload_service import UploadService, session_key
    from daemon.media.camm_mp4 import CammStream, md5_of, plan_camm_mp4
    from daemon.media.video import read_video_fileobj

    result: dict[str, Any] = {"mode": mode, "hwm_kib": {"imported": _vm_hwm_kib()}}
    name = str(source)
    with open(source, "rb") as f:
        t0 = time.monotonic()
        vt = read_video_fileobj(f, name)
        plan = plan_camm_mp4(f, name, vt.timed, info=vt.info, make=vt.make, model=vt.model)
        stream = CammStream(plan, f)
        result.update(
            plan_s=time.monotonic() - t0,
            plan_size=plan.size,
            points=len(vt.timed.points),
            source_kind=vt.source,
        )
        result["hwm_kib"]["planned"] = _vm_hwm_kib()
        if mode == "baseline":
            return result
        t1 = time.monotonic()
        md5 = md5_of(stream)
        result["md5_s"] = time.monotonic() - t1
        result["hwm_kib"]["hashed"] = _vm_hwm_kib()
        key = session_key(md5, ".mp4")
        reached = [0]

        def progress(n: int) -> None:
            reached[0] = n

        with UploadService(endpoint, TOKEN) as service:
            t2 = time.monotonic()
            offset = service.fetch_offset(key)
            handle = service.upload(key, stream, offset, on_progress=progress)
            result.update(upload_s=time.monotonic() - t2, offset=offset, handle=handle)
        result.update(key=key, md5=md5, streamed=reached[0] - offset)
        result["hwm_kib"]["uploaded"] = _vm_hwm_kib()
    return result


# --- the parent ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChildRun:
    result: dict[str, Any]
    wall_s: float
    cpu_s: float
    maxrss_kib: int


def run_child(mode: str, source: Path, endpoint: str, env: dict[str, str], log: Path) -> ChildRun:
    """Spawn the child, reap it with ``wait4`` (bounded), return its JSON line and rusage."""
    argv = [sys.executable, "-m", "bench.video_bench", "--child", mode, str(source), endpoint]
    out = log.with_suffix(".json")
    with log.open("wb") as err, out.open("wb") as stdout:
        started = time.monotonic()
        proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=err, cwd=_ROOT
        )
        deadline = started + CHILD_TIMEOUT_S
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        wall = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise BenchError(f"the {mode} child exited with {proc.returncode}:\n{tail}")
    result = json.loads(out.read_text(encoding="utf-8"))
    return ChildRun(result, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)


_ROOT = Path(__file__).resolve().parents[1]


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def render(meta: dict[str, Any], base: ChildRun, up: ChildRun, received: int) -> str:
    r = up.result
    size = r["plan_size"]
    lines = [
        f"video upload: a sparse {meta['source_bytes'] / GiB:.2f} GiB MP4"
        f" ({meta['frames']} × 1 MiB frames at {FPS} fps, {r['points']} CAMM GPS points;"
        f" {meta['source_disk_bytes'] / MiB:.1f} MiB on disk) → CAMM MP4 → sandbox",
        f"machine: {meta['nproc']} CPUs, {meta['platform']}; Python {meta['python']};"
        f" load average (1 min) {meta['loadavg_start']:.2f} at start,"
        f" {meta['loadavg_end']:.2f} at end",
        "",
        f"  {'child':<34} {'peak RSS MiB':>12} {'wall s':>8} {'CPU s':>7}",
        f"  {'baseline (import, read, plan)':<34} {_mib(base.maxrss_kib):>12}"
        f" {base.wall_s:>8.2f} {base.cpu_s:>7.2f}",
        f"  {'upload (+ md5 pass + upload pass)':<34} {_mib(up.maxrss_kib):>12}"
        f" {up.wall_s:>8.2f} {up.cpu_s:>7.2f}",
        f"  {'difference':<34} {_mib(up.maxrss_kib - base.maxrss_kib):>12}",
        "",
        "  upload child, peak RSS (VmHWM) after each step, MiB: "
        + ", ".join(f"{k} {_mib(v)}" for k, v in r["hwm_kib"].items()),
        "",
        f"  {'step':<34} {'bytes':>15} {'s':>8} {'MB/s':>8}",
        f"  {'read + plan':<34} {'':>15} {r['plan_s']:>8.2f}",
        f"  {'md5_of (1st read of the stream)':<34} {size:>15,} {r['md5_s']:>8.2f}"
        f" {size / r['md5_s'] / 1e6:>8.0f}",
        f"  {'upload (2nd read, HTTP to sandbox)':<34} {r['streamed']:>15,} {r['upload_s']:>8.2f}"
        f" {r['streamed'] / r['upload_s'] / 1e6:>8.0f}",
        f"  {'md5 + upload':<34} {size:>15,} {r['md5_s'] + r['upload_s']:>8.2f}"
        f" {size / (r['md5_s'] + r['upload_s']) / 1e6:>8.0f}",
        "",
        f"  sandbox: bytes received {received:,}; session {r['key']} holds"
        f" {meta['session_bytes']:,} = plan size {size:,}: OK",
        "peak RSS = ru_maxrss from wait4 on the child; MB = 10^6 bytes; the source's video"
        " samples are holes (read back as zeros from no disk), the sandbox writes to disk.",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench video",
        description="Peak RSS of the daemon's upload path streaming a multi-GB CAMM video.",
    )
    parser.add_argument(
        "--size-gb", type=float, default=4.0, help="source size in GiB (4; 0.5 for a quick run)"
    )
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="write figures")
    parser.add_argument(
        "--keep", type=Path, default=None, metavar="DIR", help="work in DIR and keep it"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"] and len(argv) == 4:
        print(json.dumps(child(argv[1], Path(argv[2]), argv[3])), flush=True)
        return 0
    args = build_parser().parse_args(argv)
    if not 0.05 <= args.size_gb <= 64:
        print("bench: --size-gb must be between 0.05 and 64", file=sys.stderr)
        return 2
    size = int(args.size_gb * GiB)
    return in_workdir(
        args.keep,
        "bench",
        "mapillaryd-video-bench-",
        lambda root: _room_for(root, size) or _bench(args, size, root),
        (BenchError,),
    )


def _room_for(root: Path, size: int) -> int:
    """0 when ``root`` has room for the run; else 2, with the message saying why."""
    free = shutil.disk_usage(root).free
    if free >= 2 * size:
        return 0
    print(
        f"bench: {root} has {free / GiB:.1f} GiB free; the sandbox writes the whole"
        f" {size / GiB:.1f} GiB upload to disk, so at least {2 * size / GiB:.1f} GiB"
        " (twice the size) is required. Use a smaller --size-gb or --keep DIR elsewhere.",
        file=sys.stderr,
    )
    return 2


def _bench(args: argparse.Namespace, size: int, root: Path) -> int:
    from daemon.mapillary.upload_service import UploadService

    print(f"writing a sparse {size / GiB:.2f} GiB video …", flush=True)
    src = write_sparse_video(root / "big.mp4", size)
    meta: dict[str, Any] = {
        "source_bytes": src.size,
        "source_disk_bytes": src.disk_bytes,
        "frames": src.frames,
        "nproc": len(os.sched_getaffinity(0)),
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg()[0],
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    env = base_env(root / "home")
    with SandboxProcess(root / "sandbox", env) as sandbox:
        endpoint = sandbox.upload_endpoint
        print("baseline child: import, read the track, plan …", flush=True)
        base = run_child("baseline", src.path, endpoint, env, root / "baseline.log")
        print("upload child: … + md5 + upload …", flush=True)
        up = run_child("upload", src.path, endpoint, env, root / "upload.log")
        r = up.result
        with UploadService(endpoint, TOKEN) as service:
            held = service.fetch_offset(r["key"])
        received = sandbox.stats().bytes_received
    meta["loadavg_end"] = os.getloadavg()[0]
    meta["session_bytes"] = held
    if held != r["plan_size"] or r["streamed"] != r["plan_size"] or r["offset"] != 0:
        raise BenchError(
            f"the sandbox's session {r['key']} holds {held:,} bytes, the child streamed"
            f" {r['streamed']:,} from offset {r['offset']}; the plan is {r['plan_size']:,} bytes"
        )
    print()
    print(render(meta, base, up, received))
    if args.json is not None:
        doc = {
            **meta,
            "sandbox_bytes_received": received,
            "children": {
                c.result["mode"]: {
                    "peak_rss_kib": c.maxrss_kib,
                    "wall_s": c.wall_s,
                    "cpu_s": c.cpu_s,
                    **c.result,
                }
                for c in (base, up)
            },
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
