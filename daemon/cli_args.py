"""Argument definitions every ``mapillaryd`` subcommand module shares."""

from __future__ import annotations

import argparse
from pathlib import Path


def config_arg(p: argparse.ArgumentParser) -> None:
    """``-c/--config FILE``: the TOML configuration (None: the default location)."""
    p.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        help="the TOML configuration (default: $MAPILLARYD_CONFIG or the platform config dir)",
    )
