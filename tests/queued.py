"""Synthetic frames put straight into a queue as one processed sequence, ready to upload (as
``process-and-upload`` leaves them): for tests of the upload stage alone."""

from __future__ import annotations

import hashlib
from datetime import UTC
from pathlib import Path

from daemon import synth
from daemon.ingest import read_outcome
from daemon.store.queue import Metadata, NewFile, Queue


def queue_frames(q: Queue, folder: Path, n: int, *, seed: int, sequence: str, now: float) -> int:
    """Write ``n`` frames of drive ``seed`` into ``folder`` and queue them as ``sequence``
    (watch ``/frames``); how many were queued."""
    files = []
    for f in synth.write_drive(folder, n, seed=seed):
        meta = read_outcome("image", str(f.path), f.path.name, UTC)
        assert isinstance(meta, Metadata)
        st = f.path.stat()
        sha = hashlib.sha256(f.path.read_bytes()).hexdigest()
        nf = NewFile("/frames", str(f.path), st.st_size, st.st_mtime_ns, sha, "image", str(f.path))
        files.append((nf, meta))
    return q.enqueue_sequence(sequence, "/frames", files, now)
