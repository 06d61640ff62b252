"""Command-line options every side-by-side bench shares."""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.contenders import DEFAULT_MAPILLARY_TOOLS


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """``--repeat``, ``--json``, ``--timeout``, ``--keep`` and ``--mapillary-tools``."""
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per contender, alternating; medians (1)"
    )
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="write figures")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="give up on one run after this many s (600)"
    )
    parser.add_argument(
        "--keep", type=Path, default=None, metavar="DIR", help="work in DIR and keep it"
    )
    parser.add_argument(
        "--mapillary-tools",
        type=Path,
        default=DEFAULT_MAPILLARY_TOOLS,
        metavar="PATH",
        help=f"the mapillary_tools executable (default {DEFAULT_MAPILLARY_TOOLS})",
    )


def run_in_workdir(
    args: argparse.Namespace,
    label: str,
    prefix: str,
    body: Callable[[Path, Path], int],
    failures: tuple[type[Exception], ...],
) -> int:
    """The frame of a side-by-side bench: check ``--mapillary-tools`` exists, make SIGTERM
    unwind like Ctrl-C (children stopped, the temporary folder removed), run
    ``body(mapillary_tools, workdir)`` in ``--keep`` or a temporary folder, and turn one of
    ``failures`` into a message and exit code 1. ``label`` names the bench in messages."""
    mt: Path = args.mapillary_tools
    if not mt.exists():
        print(f"{label}: {mt} not found (run `make venv-mt`)", file=sys.stderr)
        return 2
    return in_workdir(args.keep, label, prefix, lambda root: body(mt, root), failures)


def in_workdir(
    keep: Path | None,
    label: str,
    prefix: str,
    body: Callable[[Path], int],
    failures: tuple[type[Exception], ...],
) -> int:
    """Make SIGTERM unwind like Ctrl-C (children stopped, the temporary folder removed), run
    ``body(workdir)`` in ``keep`` or a temporary folder (removed afterwards), and turn one of
    ``failures`` into a message and exit code 1. ``label`` names the bench in messages."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    root = keep or Path(tempfile.mkdtemp(prefix=prefix))
    root.mkdir(parents=True, exist_ok=True)
    try:
        return body(root)
    except failures as exc:
        print(f"\n{label} FAILED: {exc}", file=sys.stderr)
        if keep:
            print(f"(everything is kept in {root})", file=sys.stderr)
        return 1
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
