"""``python -m bench``: both contenders, the same drive, the table; exit 1 if either is wrong.

``python -m bench process …`` runs the processing-stage bench instead (:mod:`bench.process_bench`),
``python -m bench video …`` the video-upload memory bench (:mod:`bench.video_bench`),
``python -m bench wire …`` bytes on the wire, CPU/GB and throughput with cut bodies
(:mod:`bench.wire`).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.args import add_run_options, run_in_workdir
from bench.contenders import (
    BATCH_QUIET_SECONDS,
    MAPILLARY_TOOLS,
    MAPILLARYD,
    POLL_SECONDS,
    SETTLE_SECONDS,
    ContenderError,
    RunResult,
    run_mapillary_tools,
    run_mapillaryd,
)
from bench.report import render, summarise, write_json
from bench.verify import VerificationError
from daemon import synth

SANDBOX_WHERE = (
    "a separate process per run (python -m daemon.sandbox on 127.0.0.1, fresh data dir);"
    " its CPU is in neither contender's figures (shown apart)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="mapillaryd against mapillary_tools 0.14.7 on the same local sandbox.",
        epilog="`python -m bench process --help`: the processing-stage bench;"
        " `python -m bench video --help`: memory while streaming a multi-GB video upload.",
    )
    parser.add_argument("--frames", type=int, default=1000, help="frames in the drive (1000)")
    add_run_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["process"]:
        from bench.process_bench import main as process_main

        return process_main(argv[1:])
    if argv[:1] == ["archive"]:
        from bench.archive import main as archive_main

        return archive_main(argv[1:])
    if argv[:1] == ["wire"]:
        from bench.wire import main as wire_main

        return wire_main(argv[1:])
    if argv[:1] == ["video"]:
        from bench.video_bench import main as video_main

        return video_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.frames < 1 or args.repeat < 1:
        print("bench: --frames and --repeat must be at least 1", file=sys.stderr)
        return 2
    return run_in_workdir(
        args,
        "bench",
        "mapillaryd-bench-",
        lambda mt, root: _bench(args, mt, root),
        (ContenderError, VerificationError),
    )


def _bench(args: argparse.Namespace, mt: Path, root: Path) -> int:
    frames: int = args.frames
    print(f"writing a {frames}-frame synthetic drive …", flush=True)
    drive = root / "drive"
    names = [f.path.name for f in synth.write_drive(drive, frames)]
    meta = _meta(mt, frames, args.repeat, drive)
    contenders: dict[str, Callable[[Path], RunResult]] = {
        MAPILLARYD: lambda work: run_mapillaryd(drive, names, work, args.timeout),
        MAPILLARY_TOOLS: lambda work: run_mapillary_tools(drive, names, work, args.timeout, mt),
    }
    results: list[RunResult] = []
    for i in range(args.repeat):
        order = [MAPILLARYD, MAPILLARY_TOOLS]
        if i % 2:
            order.reverse()
        for name in order:
            work = root / f"run{i + 1}-{name}"
            r = contenders[name](work)
            results.append(r)
            print(
                f"run {i + 1}/{args.repeat} {name:<15} wall {r.wall_s:7.2f} s  CPU {r.cpu_s:7.2f} s"
                f"  OK: {frames} distinct images in {r.clusters} cluster(s)",
                flush=True,
            )
            if args.keep is None:
                shutil.rmtree(work, ignore_errors=True)
    summaries = summarise(results)
    print()
    print(render(meta, summaries))
    if args.json is not None:
        write_json(args.json, meta, summaries)
        print(f"\nfigures written to {args.json}")
    return 0


def _meta(mt: Path, frames: int, repeat: int, drive: Path) -> dict[str, Any]:
    """The machine, the versions and the settings, for the table and the JSON."""
    return {
        "frames": frames,
        "repeat": repeat,
        "drive_bytes": sum(p.stat().st_size for p in drive.iterdir()),
        "nproc": len(os.sched_getaffinity(0)),
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "mapillary_tools_version": _version([str(mt), "--version"], "mapillary_tools version "),
        "mapillary_tools_python": _version([str(mt.parent / "python"), "--version"], "Python "),
        "sandbox": SANDBOX_WHERE,
        "settle_s": SETTLE_SECONDS,
        "batch_quiet_s": BATCH_QUIET_SECONDS,
        "poll_s": POLL_SECONDS,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _version(argv: list[str], prefix: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    text = (out.stdout or out.stderr).strip()
    return text.removeprefix(prefix) if text else "unknown"
