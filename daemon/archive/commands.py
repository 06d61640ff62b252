"""The archive's commands: ``backup run|status``, ``download``, ``sequences USER``.

:func:`add_commands` adds them to the ``mapillaryd`` parser; :func:`dispatch` runs one and
returns its exit code (None when the command is not one of these). Exit codes: 0 done, 1 the
run failed or some images failed (listed with their reason, and in ``--failed-file``), 2 bad
arguments, 4 the token was rejected or is missing.

What they do is :mod:`daemon.archive.actions`, imported only when one of them runs: building
the parser must stay cheap, as every ``mapillaryd`` command (``run`` at boot) builds it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from daemon import logsetup
from daemon.cli_args import config_arg
from daemon.config import load_config

COMMANDS = ("backup", "download", "sequences")


def add_commands(sub: Any) -> None:
    """Add ``backup``, ``download`` and ``sequences`` to ``sub`` (argparse subparsers)."""
    p = sub.add_parser("backup", help="the archive backup of your Mapillary imagery: run or status")
    bsub = p.add_subparsers(dest="backup_command", required=True, metavar="ACTION")
    r = bsub.add_parser("run", help="run the backup now (as scheduled in [backup])")
    config_arg(r)
    r.add_argument("--json", action="store_true", help="print the result as JSON")
    r.add_argument("--failed-file", type=Path, help="write the ids of images that failed here")
    s = bsub.add_parser("status", help="last and next run, counts, the failure reason if any")
    config_arg(s)
    s.add_argument("--json", action="store_true")

    d = sub.add_parser(
        "download",
        help="download chosen images, sequences or an area into the archive layout",
        description="One-shot download of images by id, sequence or bounding box, with EXIF "
        "restored, into <output>/<user>/<date>/<sequence>/<id>.jpg. Images already archived "
        "there are skipped.",
    )
    config_arg(d)
    d.add_argument(
        "--sequence", action="append", default=[], help="sequence id(s), comma-separated"
    )
    d.add_argument("--image", action="append", default=[], help="image id(s), comma-separated")
    d.add_argument("--image-file", type=Path, help="a file of image ids, one per line (# comments)")
    d.add_argument("--bbox", help="west,south,east,north (a search; at most 2000 images)")
    d.add_argument("--username", help="with --bbox: only this user's images")
    d.add_argument("--filter", choices=("360", "regular"), help="only panoramas / only the others")
    d.add_argument("--failed-file", type=Path, help="write the ids that failed here (feed it back)")
    d.add_argument(
        "--dry-run", action="store_true", help="print counts and bytes, download nothing"
    )
    d.add_argument("--output", type=Path, help="the archive folder (default: [backup] dir)")
    d.add_argument("--quality", choices=("256", "1024", "2048", "original"))
    d.add_argument("--webp", action="store_true", help="convert to WebP")
    d.add_argument("--tar", action="store_true", help="pack each finished sequence into a tar")
    d.add_argument("--workers", type=int, help="parallel downloads")
    d.add_argument("--json", action="store_true", help="print the result as JSON")

    q = sub.add_parser("sequences", help="list a user's sequences, newest first, by capture day")
    config_arg(q)
    q.add_argument("user", help="the Mapillary username")
    q.add_argument("--filter", choices=("all", "360", "regular"), default="all")
    q.add_argument("--output", type=Path, help="also write the list to this file")
    q.add_argument("--json", action="store_true")


def dispatch(args: argparse.Namespace) -> int | None:
    """Run the command in ``args`` if it is one of ours; its exit code, else None."""
    if args.command not in COMMANDS:
        return None
    cfg = load_config(args.config)
    logsetup.configure(cfg.log.level, cfg.log.format)  # logs to stderr: stdout is for results
    # Imported here, not at the top: the archive stack (apscheduler among it) is start-up cost.
    from daemon.archive.actions import run_command

    return run_command(cfg, args)
