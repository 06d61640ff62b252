"""The ``mapillaryd`` command. The only place that calls ``sys.exit`` or maps errors to exit codes.

Exit codes: 0 success, 1 failure of a one-shot job, 2 configuration or argument problems,
3 unusable state directory, 4 uploads held (token missing or rejected), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import structlog

from daemon import __version__, control_commands, logsetup, service_commands
from daemon.archive import commands as archive_commands
from daemon.cli_args import config_arg
from daemon.config import Config, load_config
from daemon.errors import FatalError
from daemon.process_args import add_process_arguments, request_from

log = structlog.get_logger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mapillaryd",
        description="Watch SD cards and drop folders and upload their imagery to Mapillary.",
    )
    parser.add_argument("--version", action="version", version=f"mapillaryd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the daemon in the foreground")
    config_arg(p)

    p = sub.add_parser("status", help="show the queue: counts per state and what needs attention")
    config_arg(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("check-config", help="validate the configuration and print it resolved")
    config_arg(p)

    p = sub.add_parser(
        "process",
        help="process images into a description file (mapillary_tools process options work)",
        description="Geotag, cut into sequences and validate images, and write a description "
        "file that `mapillary_tools upload --desc_path` accepts. Originals are never modified.",
    )
    add_process_arguments(p)

    p = sub.add_parser(
        "process-and-upload",
        aliases=["process_and_upload"],
        help="process images and upload them through the daemon's queue, then exit",
    )
    add_process_arguments(p)
    config_arg(p)

    p = sub.add_parser("sandbox", help="run a local Mapillary-compatible server (for tests/demos)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--data", type=Path, required=True, help="where it keeps what it receives")
    p.add_argument("--token", required=True, help="the user token it accepts")
    p.add_argument(
        "--faults",
        metavar="SPEC",
        help="inject faults: a JSON/TOML file or the text itself (daemon/sandbox/faults.py)",
    )

    p = sub.add_parser("demo", help="a whole drive through the daemon against the local sandbox")
    p.add_argument("--frames", type=int, default=60, help="frames in the synthetic drive")
    p.add_argument("--keep", type=Path, default=None, help="keep the demo's files in this folder")
    p.add_argument("--timeout", type=float, default=180.0, help="give up after this many seconds")
    control_commands.add_commands(sub)
    archive_commands.add_commands(sub)
    service_commands.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except FatalError as exc:
        print(f"mapillaryd: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    handled = control_commands.dispatch(args)
    if handled is None:
        handled = archive_commands.dispatch(args)
    if handled is None:
        handled = service_commands.dispatch(args)
    if handled is not None:
        return handled
    if args.command == "run":
        signal.signal(signal.SIGTERM, _stopped_while_starting)
        return cmd_run(load_config(args.config))
    if args.command == "status":
        return cmd_status(load_config(args.config), as_json=args.json)
    if args.command == "check-config":
        return cmd_check_config(load_config(args.config))
    if args.command == "process":
        from daemon.oneshot import cmd_process

        cmd_process(request_from(args))
        return 0
    if args.command in ("process-and-upload", "process_and_upload"):
        from daemon.oneshot_upload import cmd_process_and_upload

        return cmd_process_and_upload(load_config(args.config), request_from(args))
    if args.command == "sandbox":
        from daemon.sandbox import serve

        logsetup.configure("info")
        hook = None
        if args.faults:
            from daemon.sandbox.faults import FaultInjector, load_spec

            hook = FaultInjector(load_spec(args.faults))  # a bad spec: ConfigError, exit 2
        serve(args.port, args.data, args.token, host=args.host, faults=hook)
        return 0
    if args.command == "demo":
        from daemon.demo import run_demo

        return run_demo(frames=args.frames, keep=args.keep, timeout=args.timeout)
    raise AssertionError(args.command)


def _stopped_while_starting(_signum: int, _frame: object) -> None:
    """SIGTERM before the daemon runs (config, imports): nothing was started, exit 0."""
    raise SystemExit(0)


def cmd_run(cfg: Config) -> int:
    """Run the daemon until SIGTERM or SIGINT."""
    from daemon import alloc
    from daemon.service import Service

    alloc.tune_for_large_buffers()  # photo after photo in the same memory (daemon/alloc.py)
    logsetup.configure(cfg.log.level, cfg.log.format)
    if not cfg.watches:
        log.warning("no_watch_folders", config=cfg.source, hint="add [[watch]] path = ... entries")
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    Service(cfg).run(stop)
    return 0


def cmd_status(cfg: Config, *, as_json: bool) -> int:
    from daemon.status import empty_report, render, report
    from daemon.store.queue import Queue

    if not cfg.state.database.exists():
        rep = empty_report("no queue yet: the daemon never ran", cfg)
    else:
        q = Queue.open(cfg.state.database)
        try:
            rep = report(q, cfg=cfg)
        finally:
            q.close()
    if as_json:
        json.dump(rep, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(render(rep))
    return 0


def cmd_check_config(cfg: Config) -> int:
    from daemon.credentials import TokenSource

    print(f"configuration: {cfg.source}: OK")
    print(f"state dir:     {cfg.state.dir}")
    print(f"spool dir:     {cfg.state.spool_dir}")
    print(f"upload to:     {cfg.mapillary.upload_endpoint}")
    print(f"graph API:     {cfg.mapillary.graph_endpoint}")
    tokens = TokenSource(cfg.mapillary)
    print(f"token:         {'present' if tokens.current() else tokens.problem}")
    for w in cfg.watches:
        exists = "" if w.path.is_dir() else "   (not there now: waiting for it)"
        print(f"watch:         {w.path} [{w.ingest}, settle {w.settle_seconds:g}s]{exists}")
    if not cfg.watches:
        print("watch:         none configured")
    for r in cfg.mounts.roots if cfg.mounts.enabled else ():
        labels = f", or labels {', '.join(r.labels)}" if r.labels else ""
        print(f"cards:         mounted at {r.pattern} [{r.require}{labels}, {r.watch.ingest}]")
    if not cfg.mounts.enabled:
        print("cards:         mount detection off ([mounts] enabled = false)")
    return 0
