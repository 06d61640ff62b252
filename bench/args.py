"""Command-line options every side-by-side bench shares."""

from __future__ import annotations

import argparse
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
