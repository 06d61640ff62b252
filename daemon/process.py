"""Cutting a closed batch into sequences and storing the result.

The cut itself is pure (:mod:`daemon.geo.sequence`); this module loads the batch's ingested
items, calls it, names each sequence after its content and writes everything in one transaction.
Because names come from content, repeating a cut after a crash rewrites the same rows.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime

import structlog

from daemon.config import ProcessConfig
from daemon.geo.sequence import Shot, cut_sequences, derive_headings
from daemon.store.queue import Item, ItemState, Queue, Verdict

log = structlog.get_logger(__name__)


def shot_of(item: Item) -> Shot:
    """The pure view of an ingested image that sequence cutting works on."""
    assert item.capture_time is not None and item.lat is not None and item.lon is not None
    return Shot(
        key=str(item.id),
        folder=os.path.dirname(item.source_path),
        filename=os.path.basename(item.source_path),
        time=datetime.fromisoformat(item.capture_time),
        lat=item.lat,
        lon=item.lon,
        heading=item.heading,
        make=item.make,
        model=item.model,
        width=item.width,
        height=item.height,
        size=item.size,
    )


def sequence_id(shas: list[str]) -> str:
    """A stable name for a sequence: a digest of its members' content hashes, in order."""
    return hashlib.sha256("\n".join(shas).encode()).hexdigest()[:32]


def cut_batch(queue: Queue, batch_id: int, cfg: ProcessConfig, now: float) -> int:
    """Cut the ingested images of closed batch ``batch_id`` into sequences; return how many."""
    items = queue.ingested_items(batch_id)
    if not items:
        return 0
    by_key = {str(i.id): i for i in items}
    cuts = cut_sequences(
        (shot_of(i) for i in items),
        cutoff_time=cfg.cutoff_time,
        cutoff_distance=cfg.cutoff_distance,
        max_images=cfg.max_sequence_images,
    )
    sequences = []
    for shots in cuts:
        # The cut may spread identical capture times and fill missing headings (as
        # mapillary_tools does), so what is stored is the cut's view of each shot.
        headings = derive_headings(shots)
        members = [
            (int(s.key), h, s.time.isoformat()) for s, h in zip(shots, headings, strict=True)
        ]
        seq_id = sequence_id([by_key[s.key].sha256 for s in shots])
        sequences.append((seq_id, members))
    placed = {m[0] for _, ms in sequences for m in ms}
    rejected = [
        (i.id, Verdict(ItemState.REJECTED, "not_sequenced", "left out of every sequence"))
        for i in items
        if i.id not in placed
    ]
    queue.assign_sequences(batch_id, sequences, rejected, now)
    log.info("batch_cut", batch=batch_id, images=len(placed), sequences=len(sequences))
    return len(sequences)
