"""The commands people use on the queue: ``queue list|retry|forget``, ``pause``, ``resume``.

:func:`add_commands` adds them to the CLI's subparsers; :func:`dispatch` runs one (or returns
None for a command that is not one of these). They work on the queue database whether or not the
daemon runs: a running daemon notices a pause, a resume or a retry at its next step.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from daemon import control
from daemon.cli_args import config_arg
from daemon.clock import SYSTEM_CLOCK
from daemon.config import Config, load_config
from daemon.store.queue import ItemState, Queue

COMMANDS = ("queue", "pause", "resume")


def add_commands(sub: Any) -> None:
    """Add ``queue``, ``pause`` and ``resume`` to ``sub`` (an ``add_subparsers()`` result)."""
    q = sub.add_parser("queue", help="list the queue, retry failed uploads now, forget files")
    qsub = q.add_subparsers(dest="queue_command", required=True, metavar="ACTION")
    p = qsub.add_parser("list", help="items, most recently changed first")
    config_arg(p)
    p.add_argument(
        "--state",
        action="append",
        choices=[s.value for s in ItemState],
        default=[],
        help="only items in this state (repeatable)",
    )
    p.add_argument("--limit", type=int, default=50, help="at most this many (0: all)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = qsub.add_parser(
        "retry",
        help="retry now: waiting uploads become due, failed ones get another try",
    )
    config_arg(p)
    p.add_argument("items", nargs="*", type=int, metavar="ID", help="only these items")
    p = qsub.add_parser(
        "forget",
        help="never upload these files and stop listing them (not for uploaded files)",
    )
    config_arg(p)
    p.add_argument("items", nargs="+", metavar="ID|SHA256", help="item ids or sha256 prefixes")

    p = sub.add_parser("pause", help="pause uploads (the ones in flight finish)")
    config_arg(p)
    p = sub.add_parser("resume", help="let paused uploads go on")
    config_arg(p)


def dispatch(args: argparse.Namespace) -> int | None:
    """Run the command in ``args`` if it is one of this module's; else return None."""
    if args.command not in COMMANDS:
        return None
    cfg = load_config(args.config)
    if args.command == "pause":
        return cmd_pause(cfg)
    if args.command == "resume":
        return cmd_resume(cfg)
    if not cfg.state.database.exists():
        print("no queue yet: the daemon never ran")
        return 0
    if args.queue_command == "list":
        return cmd_list(cfg, args.state, args.limit or None, as_json=args.json)
    if args.queue_command == "retry":
        return cmd_retry(cfg, args.items or None)
    if args.queue_command == "forget":
        return cmd_forget(cfg, args.items)
    raise AssertionError(args.queue_command)


def _open(cfg: Config) -> Queue:
    return Queue.open(cfg.state.database)


def cmd_pause(cfg: Config) -> int:
    q = _open(cfg)
    try:
        if control.pause(q, SYSTEM_CLOCK.now(), "command line"):
            print("uploads paused; the ones in flight finish. `mapillaryd resume` lets them go on.")
        else:
            since = (control.pause_state(q) or {}).get("since", "?")
            print(f"uploads were already paused (since {since})")
    finally:
        q.close()
    return 0


def cmd_resume(cfg: Config) -> int:
    q = _open(cfg)
    try:
        print("uploads resumed" if control.resume(q) else "uploads were not paused")
    finally:
        q.close()
    return 0


def cmd_list(cfg: Config, states: list[str], limit: int | None, *, as_json: bool) -> int:
    q = _open(cfg)
    try:
        rows = control.list_items(q, states, limit)
    finally:
        q.close()
    if as_json:
        json.dump([vars(r) for r in rows], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"{'id':>6} {'state':<11} {'reason':<22} {'tries':>5} {'next try':<20} path")
    for r in rows:
        due = (
            datetime.fromtimestamp(r.next_attempt_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
            if r.next_attempt_at > SYSTEM_CLOCK.now().timestamp()
            else ""
        )
        print(f"{r.id:>6} {r.state:<11} {r.reason or '':<22} {r.attempts:>5} {due:<20} {r.path}")
        if r.detail:
            print(f"{'':>6} {'':<11} {r.detail}")
    if not rows:
        print("(no items)")
    return 0


def cmd_retry(cfg: Config, items: list[int] | None) -> int:
    q = _open(cfg)
    try:
        result = control.retry_now(q, SYSTEM_CLOCK.now().timestamp(), items)
    finally:
        q.close()
    print(
        f"{result.made_due} waiting upload(s) due now; {result.requeued} failed file(s) "
        f"given another try ({result.sequences} sequence(s) reopened, "
        f"{result.new_sequences} new)"
    )
    for item_id, why in result.skipped:
        print(f"item {item_id}: not retried: {why}", file=sys.stderr)
    return 1 if items and result.skipped else 0


def cmd_forget(cfg: Config, refs: list[str]) -> int:
    q = _open(cfg)
    try:
        result = control.forget(q, refs, SYSTEM_CLOCK.now().timestamp(), cfg.state.spool_dir)
    finally:
        q.close()
    if result.forgotten:
        ids = ", ".join(map(str, result.forgotten))
        print(f"forgotten: {ids} (never uploaded; found again, they are not taken again)")
    for ref, why in result.refused:
        print(f"{ref}: not forgotten: {why}", file=sys.stderr)
    return 1 if result.refused else 0
