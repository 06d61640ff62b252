"""``mapillaryd process-and-upload``: process, record in the daemon's queue, upload, exit.

The processed images are recorded with the daemon's identity rules (content hash), so nothing
already uploaded — by the daemon or an earlier run — goes again, and the daemon's uploaders do
the work: the same resumable protocol, retries, holds and exactly-once guarantees.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from datetime import UTC

from daemon import logsetup
from daemon.clock import SYSTEM_CLOCK
from daemon.config import Config, resolve_time_zone
from daemon.credentials import TokenSource
from daemon.oneshot import Progress, Report, print_summary, run_process
from daemon.process import sequence_id
from daemon.process_args import ProcessRequest
from daemon.retry import Policy
from daemon.store.queue import Metadata, NewFile, Queue
from daemon.throttle import Bandwidth
from daemon.upload import HOLD_KEY, Endpoints, Uploader, Upstream

#: The queue's "watch folder" for images recorded by process-and-upload.
ONESHOT_WATCH = "process-and-upload"


def queue_report(q: Queue, report: Report, hashes: dict[str, str], now: float) -> list[str]:
    """Record the report's sequences in the queue; return the ids of those with new images."""
    by_key = {i.photo.key: i for i in report.inputs}
    seq_ids = []
    for seq in report.outcome.sequences:
        files = []
        for f in seq:
            i, s = by_key[f.key], f.shot
            meta = Metadata(
                capture_time=s.time.astimezone(UTC).isoformat(),
                lat=s.lat,
                lon=s.lon,
                alt=f.alt,
                heading=s.heading,
                make=s.make,
                model=s.model,
                width=s.width,
                height=s.height,
                orientation=f.orientation,
            )
            new = NewFile(
                watch=ONESHOT_WATCH,
                source_path=f.key,
                size=i.size,
                mtime_ns=os.stat(f.key).st_mtime_ns,
                sha256=hashes[f.key],
                kind="image",
                data_path=f.key,
            )
            files.append((new, meta))
        seq_id = sequence_id([hashes[f.key] for f in seq])
        if q.enqueue_sequence(seq_id, ONESHOT_WATCH, files, now):
            seq_ids.append(seq_id)
    return seq_ids


def cmd_process_and_upload(cfg: Config, req: ProcessRequest) -> int:
    """``mapillaryd process-and-upload``: process, queue, upload until done, then exit.

    Exit 0 when every new sequence is on Mapillary, 1 if the server refused some, 4 when
    uploads are held (token missing or rejected).
    """
    report, hashes = run_process(
        req.paths,
        req.options,
        req.time_zone,
        skip_subfolders=req.skip_subfolders,
        with_hash=True,
        csv=req.csv,
        progress=Progress("reading"),
    )
    print_summary(report, verbose=req.verbose)
    q = Queue.open(cfg.state.database)
    try:
        seq_ids = queue_report(q, report, hashes, time.time())
        if not seq_ids:
            print("nothing new to upload: every accepted image is already known", file=sys.stderr)
            return 0
        return _upload_until_done(cfg, q, seq_ids)
    finally:
        q.close()


def _upload_until_done(cfg: Config, q: Queue, seq_ids: list[str]) -> int:
    tokens = TokenSource(cfg.mapillary)
    logsetup.REDACTOR.add(tokens.current())
    upstream = Upstream(SYSTEM_CLOCK, tokens)
    upstream.load_hold(q)
    up, m = cfg.upload, cfg.mapillary
    policy = Policy(up.retry_base_seconds, up.retry_cap_seconds, up.max_retry_after_seconds)
    endpoints = Endpoints(
        m.upload_endpoint, m.graph_endpoint, m.organization_id, up.timeout_seconds
    )
    stop, wake = threading.Event(), threading.Event()
    zone = resolve_time_zone(cfg.process.time_zone)
    # Upload windows are not applied: a one-shot command is someone asking for it now.
    bandwidth = Bandwidth(SYSTEM_CLOCK, up.bandwidth_limit, zone=zone, stop=stop)
    owner = f"oneshot-{os.getpid()}"
    q.release_stale(owner, time.time())

    def work(images: bool, sequences: bool) -> None:
        conn = Queue.open(cfg.state.database)
        worker = Uploader(
            conn, endpoints, upstream, SYSTEM_CLOCK, policy, owner, stop,
            wake=wake, bandwidth=bandwidth,
        )  # fmt: skip
        try:
            worker.run(images=images, sequences=sequences)
        finally:
            conn.close()

    threads = [
        threading.Thread(target=work, args=(True, False), daemon=True)
        for _ in range(up.max_parallel_uploads)
    ] + [threading.Thread(target=work, args=(False, True), daemon=True)]
    for t in threads:
        t.start()
    total = len(seq_ids)
    progress = Progress("uploading sequences")
    try:
        while True:
            states = q.sequence_states(seq_ids)
            finished = [s for s in states.values() if s in ("done", "failed")]
            progress(len(finished), total)
            if len(finished) == total:
                break
            hold = q.get_meta(HOLD_KEY)
            if hold:
                print(f"uploads held: {json.loads(hold)['detail']}", file=sys.stderr)
                return 4
            time.sleep(0.25)
    finally:
        stop.set()
        wake.set()
        for t in threads:
            t.join(timeout=30)
    states = q.sequence_states(seq_ids)
    failed = [s for s, state in states.items() if state == "failed"]
    done = total - len(failed)
    print(f"{done} sequence(s) uploaded, {len(failed)} failed", file=sys.stderr)
    for rep in report_clusters(q, seq_ids):
        print(f"  cluster {rep}", file=sys.stderr)
    return 1 if failed else 0


def report_clusters(q: Queue, seq_ids: list[str]) -> list[str]:
    wanted = set(seq_ids)
    return [
        f"{s.cluster_id} ({s.image_count} images)"
        for s in q.sequences()
        if s.id in wanted and s.cluster_id
    ]
