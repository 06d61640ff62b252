"""The spool: copies of card files waiting for upload, named by content.

A copy is deleted once its item is done (its cluster id is durably recorded); the original on
the card is never touched here. :func:`collect_garbage` at start-up removes what a crash left
behind: half-written temporary copies, and copies no unfinished item needs any more.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


def is_in_spool(spool: Path, path: str) -> bool:
    root = str(spool).rstrip(os.sep) + os.sep
    return os.path.abspath(path).startswith(root)


def release(spool: Path, paths: Iterable[str]) -> int:
    """Delete the spool copies among ``paths`` (others are ignored); return how many went."""
    n = 0
    for path in paths:
        if is_in_spool(spool, path):
            try:
                os.unlink(path)
                n += 1
            except FileNotFoundError:
                pass
    return n


def collect_garbage(spool: Path, needed: Iterable[str]) -> int:
    """Remove temporary copies and copies no path in ``needed`` names; return how many went.

    Copies are matched by file name (``<sha256>.<ext>``, unique by construction), not by full
    path, so a spool reached through another spelling of its path is never mistaken for garbage.
    Call only while no ingest runs (start-up): a temporary copy is always someone's work.
    """
    if not spool.is_dir():
        return 0
    keep = {os.path.basename(p) for p in needed}
    removed = 0
    for path in spool.rglob("*"):
        if path.is_file() and (path.parent.name == "tmp" or path.name not in keep):
            path.unlink(missing_ok=True)
            removed += 1
    if removed:
        log.info("spool_cleaned", files=removed)
    return removed
