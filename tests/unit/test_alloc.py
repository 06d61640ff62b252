"""The allocator settings: on Linux with glibc, upload workers reuse their multi-MB buffers
instead of faulting fresh ones in for every photo (counted as minor page faults, in a
subprocess each so the settings of one run do not leak into the other)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from daemon.alloc import tune_for_large_buffers

REPO = Path(__file__).resolve().parents[2]

# Four threads, each like an upload worker: read a photo (~2.1 MB), build its upload copy with
# a new EXIF segment, do some other work, free everything; sizes vary from photo to photo.
PROBE = """
import random, resource, sys, threading
if sys.argv[1] == "tuned":
    from daemon.alloc import tune_for_large_buffers
    assert tune_for_large_buffers()
def work(seed):
    rng = random.Random(seed)
    for _ in range(100):
        data = bytes(rng.randrange(2_000_000, 2_300_000))
        view = memoryview(data)
        upload = b"".join((view[:10], bytes(rng.randrange(500, 60_000)), view[20:]))
        del view, data
        other = bytes(rng.randrange(100_000, 400_000))
        del upload, other
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return int(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_workers_reuse_their_big_buffers() -> None:
    if not tune_for_large_buffers():
        pytest.skip("this Linux has no glibc (musl?): nothing to tune")
    plain, tuned = _faults("plain"), _faults("tuned")
    print(f"minor page faults: {plain} plain, {tuned} tuned")
    assert tuned < 0.7 * plain


def test_elsewhere_it_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert tune_for_large_buffers() is False
