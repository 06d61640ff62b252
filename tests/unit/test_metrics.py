"""/metrics text: parsed by prometheus_client's own parser, numbers equal to the status report."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from daemon import control
from daemon.progress import ProgressRegistry
from daemon.status import report
from daemon.store.queue import ItemState, Metadata, NewFile, Placement, Queue, Verdict
from daemon.web.metrics import last_backup_success, render_metrics

NOW = 1_780_000_000.0


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _queue_with_some_of_everything(path: Path) -> Queue:
    q = Queue.open(path)
    items = []
    for i in range(4):
        sha = hashlib.sha256(bytes([i])).hexdigest()
        f = NewFile("/card", f"/card/{i}.jpg", 1000 * (i + 1), 1, sha, "image", f"/card/{i}.jpg")
        item, _ = q.record_file(f, Metadata("2026-06-01T12:00:00+00:00", 46.0, 14.5), NOW)
        items.append(item)
    odd = 'we"ird\\reason'
    f = NewFile("/card", "/card/x.jpg", 7, 1, "f" * 64, "image", "/card/x.jpg")
    q.record_file(f, Verdict(ItemState.REJECTED, odd, "no GPS\nat all"), NOW)
    q.close_quiet_batches(NOW + 100, 10, [])
    [batch] = q.batches_to_cut()
    places = [Placement(i.id, "2026-06-01T12:00:00+00:00", 46.0, 14.5, None, None) for i in items]
    q.assign_sequences(batch, [("seq", places)], [], NOW)
    a = q.claim_item("boot", NOW)
    assert a is not None
    q.item_uploaded(a.id, "k", "h", NOW)
    b = q.claim_item("boot", NOW)
    assert b is not None
    q.item_retry(b.id, NOW + 600, "network", "refused", NOW)
    c = q.claim_item("boot", NOW)
    assert c is not None
    q.item_failed(c.id, Verdict(ItemState.FAILED, "http_400", "bad"), NOW)
    return q


def test_metrics_parse_and_match_the_status_report(tmp_path: Path) -> None:
    q = _queue_with_some_of_everything(tmp_path / "q.sqlite3")
    try:
        control.pause(q, datetime.fromtimestamp(NOW, UTC), "test")
        progress = ProgressRegistry()
        progress.begin(99, "/card/9.jpg", "image", 5000, offset=1000)
        progress.advance(99, 3000)
        live = {"transfers": progress.snapshot(), "upstream_pause_seconds": 0}
        rep = report(q, now=NOW, live=live)
        text = render_metrics(
            rep, control.reason_counts(q), sent_bytes=progress.sent_total, now=NOW
        )
    finally:
        q.close()
    got = _samples(text)
    for state, n in rep["items"].items():
        assert got[("mapillaryd_queue_items", (("state", state),))] == n
    assert rep["items"]["queued"] == 2 and rep["items"]["failed"] == 1
    assert got[("mapillaryd_sequences", (("state", "uploading"),))] == 1
    assert got[("mapillaryd_uploaded_bytes_total", ())] == rep["uploaded_bytes"] == 1000
    assert got[("mapillaryd_upload_sent_bytes_total", ())] == 2000  # resumed bytes not counted
    assert got[("mapillaryd_upload_retries_total", ())] == rep["retries"] == 1
    assert got[("mapillaryd_uploads_in_flight", ())] == 1
    assert got[("mapillaryd_uploads_paused", ())] == 1
    assert got[("mapillaryd_uploads_held", (("reason", "none"),))] == 0
    assert got[("mapillaryd_uploads_waiting", (("reason", "network"),))] == 1
    # failures by reason, the odd reason escaped and read back intact
    by_reason = {
        (dict(labels)["state"], dict(labels)["reason"]): v
        for (name, labels), v in got.items()
        if name == "mapillaryd_items_not_uploaded"
    }
    assert by_reason[("rejected", 'we"ird\\reason')] == 1
    assert by_reason[("failed", "http_400")] == 1
    assert by_reason[("queued", "network")] == 1
    assert sum(by_reason.values()) == len(rep["not_uploaded"]) == rep["total"] == 5
    assert ("mapillaryd_backup_age_seconds", ()) not in got  # no backup configured


def test_backup_age_comes_from_the_backup_summary() -> None:
    rep = {
        "items": {},
        "sequences": {},
        "uploaded_bytes": 0,
        "retries": 0,
        "uploading": [],
        "paused": None,
        "hold": {"reason": "auth_rejected"},
        "waiting": {"by_reason": {}},
        "disk": [{"role": "state", "free_bytes": 123, "total_bytes": 456}],
        "backup": {"configured": True, "last_success": "2026-06-01T00:00:00+00:00"},
    }
    got = _samples(render_metrics(rep, [], sent_bytes=0, now=1_780_272_000.0 + 90))
    assert got[("mapillaryd_backup_last_success_timestamp_seconds", ())] == 1_780_272_000.0
    assert got[("mapillaryd_backup_age_seconds", ())] == 90
    assert got[("mapillaryd_uploads_held", (("reason", "auth_rejected"),))] == 1
    assert got[("mapillaryd_disk_free_bytes", (("role", "state"),))] == 123


def test_last_backup_success_reads_the_shapes_a_summary_may_use() -> None:
    assert last_backup_success({"last_run": 1700000000}) == 1700000000.0
    assert last_backup_success({"last_run": {"finished_at": "2023-11-14T22:13:20+00:00"}}) == (
        1700000000.0
    )
    assert last_backup_success({"last_run": {"result": "failed", "at": 1}}) is None
    assert last_backup_success({"last_run": "2023-11-14T22:13:20"}) is None  # naive: unknown
    assert last_backup_success({"next_run": 5}) is None
