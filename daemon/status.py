"""What the queue says, as data (``status --json``) and as a table for people.

Read straight from the queue database, so it works whether or not the daemon is running.
"""

from __future__ import annotations

import json
from typing import Any

from daemon.store.queue import ItemState, Queue
from daemon.upload import HOLD_KEY

STATE_ORDER = [s.value for s in ItemState]


def report(queue: Queue, *, limit: int | None = None) -> dict[str, Any]:
    """Counts per state, the hold if any, sequences, and every item not uploaded with its reason.

    ``limit`` caps the item list (``None``: all of them).
    """
    counts = queue.counts()
    hold_raw = queue.get_meta(HOLD_KEY)
    items = queue.items_not_done(limit)
    return {
        "items": {state: counts.get(state, 0) for state in STATE_ORDER},
        "total": sum(counts.values()),
        "files_seen": queue.occurrence_count(),
        "sequences": queue.sequence_counts(),
        "clusters": [
            {"sequence": s.id, "cluster_id": s.cluster_id, "images": s.image_count}
            for s in queue.sequences()
            if s.cluster_id
        ],
        "hold": json.loads(hold_raw) if hold_raw else None,
        "processing_notes": queue.batch_notes(),
        "not_uploaded": [
            {
                "path": i.source_path,
                "state": i.state,
                "reason": i.reason or _implicit_reason(i.state),
                "detail": i.detail or "",
                "sha256": i.sha256,
                "attempts": i.attempts,
            }
            for i in items
        ],
    }


def empty_report(note: str) -> dict[str, Any]:
    """The report of a queue that does not exist yet (without creating it)."""
    return {
        "items": dict.fromkeys(STATE_ORDER, 0),
        "total": 0,
        "files_seen": 0,
        "sequences": {},
        "clusters": [],
        "hold": None,
        "processing_notes": [],
        "not_uploaded": [],
        "note": note,
    }


def _implicit_reason(state: str) -> str:
    """Why an item without a recorded reason is not uploaded yet: its state says it."""
    return {
        ItemState.INGESTED: "waiting for its batch to settle",
        ItemState.QUEUED: "waiting for an upload slot",
        ItemState.UPLOADING: "uploading now",
        ItemState.UPLOADED: "waiting for the rest of its sequence",
    }.get(ItemState(state), state)


def render(rep: dict[str, Any], *, max_rows: int = 30) -> str:
    """A plain-text table of ``rep`` for a terminal."""
    lines = []
    if rep["hold"]:
        h = rep["hold"]
        lines.append(f"UPLOADS HELD ({h['reason']}) since {h['since']}: {h['detail']}")
        lines.append("")
    lines.append(f"{'state':<12} {'items':>7}")
    for state, n in rep["items"].items():
        if n:
            lines.append(f"{state:<12} {n:>7}")
    lines.append(f"{'total':<12} {rep['total']:>7}   ({rep['files_seen']} files seen)")
    seqs = rep["sequences"]
    if seqs:
        lines.append("")
        lines.append("sequences: " + ", ".join(f"{n} {s}" for s, n in sorted(seqs.items())))
    notes = rep.get("processing_notes") or []
    if notes:
        lines.append("")
        lines.append("processing notes (recent batches):")
        for n in notes[:5]:
            for text in n["notes"]:
                lines.append(f"  batch {n['batch']} ({n['watch']}): {text}")
    problems = [
        r
        for r in rep["not_uploaded"]
        if r["state"] not in ("queued", "uploading", "uploaded", "ingested") or r["detail"]
    ]
    if problems:
        lines.append("")
        lines.append("needs attention / not uploaded:")
        for r in problems[:max_rows]:
            lines.append(f"  {r['state']:<11} {r['reason']:<24} {r['path']}")
            if r["detail"]:
                lines.append(f"  {'':<11} {r['detail']}")
        if len(problems) > max_rows:
            lines.append(f"  … and {len(problems) - max_rows} more (status --json lists all)")
    return "\n".join(lines)
