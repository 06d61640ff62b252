"""``python -m bench archive``: the archive backup against mapillary-downloader 0.12, one run.

Both download the same user's archive from the same sandbox (a separate process on 127.0.0.1:
the Graph API read side + CDN of daemon.sandbox, every request delayed by ``--latency-ms``,
50 ms by default, as a distant server would be), each into a fresh folder, one after the other.
Each result is checked: every image of the user on disk exactly once as a complete JPEG.

mapillary-downloader hard-codes ``https://graph.mapillary.com`` as its base URL (it follows
``paging.next`` and the CDN URLs as given, so only the first listing request needs it). It runs
in its own virtualenv (``.venv-dl``, ``make venv-dl``) with a ``sitecustomize.py`` in the
bench's temporary folder that sets ``MapillaryClient.base_url`` to the sandbox's URL; nothing
else of it is changed. It runs with ``--no-webp --no-check-ia --no-tar`` (no cwebp binary, no
network to archive.org, and the same output as ours) and its default worker count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PEER = REPO / ".venv-dl" / "bin" / "python"
TOKEN = "MLY|bench|archive-7e21"
USER = "bench_user"
_SERVING = re.compile(r"archive sandbox serving (http://127\.0\.0\.1:\d+)")
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

SITECUSTOMIZE = '''"""From mapillaryd's bench: mapillary-downloader against the sandbox."""
import os

_BASE = os.environ.get("MAPILLARY_DOWNLOADER_BASE_URL")
if _BASE:
    import mapillary_downloader.client as _client

    _init = _client.MapillaryClient.__init__

    def _patched(self, *args, **kwargs):
        _init(self, *args, **kwargs)
        self.base_url = _BASE

    _client.MapillaryClient.__init__ = _patched
'''


def serve(data: str, sequences: int, per_sequence: int, latency_ms: float) -> None:
    """The sandbox child: seed the user, serve until killed."""
    import signal
    import threading

    from daemon.sandbox import Sandbox
    from daemon.sandbox.graph_archive import ArchiveFaults, ArchiveWorld, install, seed_user

    world = ArchiveWorld()
    seed_user(
        world,
        USER,
        sequences=sequences,
        images_per_sequence=per_sequence,
        seed=7,
        size=(320, 240),
        corrupt_exif_rate=0.0,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with Sandbox(Path(data), TOKEN, username=USER) as sb:
        install(sb, world, url_ttl_seconds=3600)
        sb.faults = ArchiveFaults(latency_s=latency_ms / 1000.0)
        print(f"archive sandbox serving {sb.url}", flush=True)
        stop.wait()


def _stats(url: str) -> dict[str, int]:
    with _DIRECT.open(f"{url}/_sandbox/stats", timeout=30) as r:
        requests: dict[str, int] = json.load(r)["requests"]
    return {k: v for k, v in requests.items() if "/_sandbox/" not in k}


def _verify(folder: Path, expected: int) -> int:
    files = [p for p in folder.rglob("*.jpg") if p.is_file() and p.name != "__ia_thumb__.jpg"]
    names = [p.stem for p in files]
    if len(names) != len(set(names)) or len(names) != expected:
        raise RuntimeError(
            f"{folder}: {len(names)} files ({len(set(names))} distinct), expected {expected}"
        )
    for p in files:
        with Image.open(p) as im:
            im.verify()
    return len(files)


def _run(argv: list[str], env: dict[str, str], log: Path, timeout: float) -> float:
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{argv[:4]} exited {proc.returncode}:\n{tail}")
    return elapsed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench archive", description=__doc__)
    parser.add_argument("--sequences", type=int, default=3)
    parser.add_argument("--per-sequence", type=int, default=200, help="images per sequence (200)")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", type=Path, help="keep the work folder here")
    args = parser.parse_args(argv)
    if not PEER.exists():
        print(f"bench archive: {PEER} not found (run `make venv-dl`)", file=sys.stderr)
        return 2
    root = args.keep or Path(tempfile.mkdtemp(prefix="mapillaryd-archive-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    total = args.sequences * args.per_sequence
    env = dict(os.environ, NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    env.pop("MAPILLARYD_CONFIG", None)
    log = root / "sandbox.log"
    data = str(root / "sandbox")
    code = (
        "from bench.archive import serve;"
        f" serve({data!r}, {args.sequences}, {args.per_sequence}, {args.latency_ms})"
    )
    sandbox = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        url = ""
        deadline = time.monotonic() + 120
        while not url and time.monotonic() < deadline:
            found = _SERVING.search(log.read_text(errors="replace"))
            url = found.group(1) if found else ""
            if sandbox.poll() is not None:
                raise RuntimeError(f"the sandbox died:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
        print(
            f"sandbox {url}: {total} images of {USER} in {args.sequences} sequences,"
            f" {args.latency_ms:g} ms latency per request",
            flush=True,
        )
        results: dict[str, dict[str, Any]] = {}

        # mapillaryd: its defaults (4 workers, 50 requests/s), the [backup] of a fresh config.
        ours = root / "mapillaryd"
        cfg = root / "mapillaryd.toml"
        cfg.write_text(
            f'[state]\ndir = "{ours / "state"}"\n[log]\nformat = "json"\n[backup]\n'
            f'dir = "{ours / "archive"}"\nusername = "{USER}"\nrequire_clock_sync = false\n'
            "min_free_mb = 0\n",
            encoding="utf-8",
        )
        before = _stats(url)
        wall = _run(
            [sys.executable, "-m", "daemon", "backup", "run", "--json", "--config", str(cfg)],
            dict(env, MAPILLARY_TOKEN=TOKEN, MAPILLARY_GRAPH_API_ENDPOINT=url),
            root / "mapillaryd.log",
            args.timeout,
        )
        after = _stats(url)
        results["mapillaryd"] = {
            "wall_s": wall,
            "images": _verify(ours / "archive", total),
            "requests": sum(after.values()) - sum(before.values()),
        }

        # mapillary-downloader 0.12, pointed at the sandbox by a sitecustomize (see above).
        peer = root / "mapillary_downloader"
        shim = root / "shim"
        shim.mkdir(exist_ok=True)
        (shim / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
        peer_env = dict(
            env,
            MAPILLARY_TOKEN=TOKEN,
            MAPILLARY_DOWNLOADER_BASE_URL=url,
            PYTHONPATH=str(shim),
            XDG_CACHE_HOME=str(peer / "cache"),
        )
        before = _stats(url)
        wall = _run(
            [
                str(PEER),
                "-m",
                "mapillary_downloader",
                "--no-webp",
                "--no-check-ia",
                "--no-tar",
                "--output",
                str(peer / "out"),
                "--quality",
                "original",
                USER,
            ],
            peer_env,
            root / "mapillary_downloader.log",
            args.timeout,
        )
        after = _stats(url)
        results["mapillary-downloader 0.12"] = {
            "wall_s": wall,
            "images": _verify(peer / "out", total),
            "requests": sum(after.values()) - sum(before.values()),
        }
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=30)
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)

    print()
    print(
        "mapillary-downloader runs with a sitecustomize.py (in the bench's temp folder) that sets"
    )
    print(
        "its hard-coded base URL https://graph.mapillary.com to the sandbox; nothing else changed."
    )
    print(f"{'contender':<28}{'wall s':>9}{'images':>8}{'images/s':>10}{'requests':>10}")
    for name, r in results.items():
        r["images_per_s"] = r["images"] / r["wall_s"]
        print(
            f"{name:<28}{r['wall_s']:>9.2f}{r['images']:>8}{r['images_per_s']:>10.1f}{r['requests']:>10}"
        )
    ratio = (
        results["mapillaryd"]["images_per_s"] / results["mapillary-downloader 0.12"]["images_per_s"]
    )
    print(f"mapillaryd ÷ mapillary-downloader: {ratio:.2f}× images/s (goal ≥ 1.5×)")
    if args.json is not None:
        meta = {
            "platform": platform.platform(),
            "nproc": os.cpu_count(),
            "latency_ms": args.latency_ms,
        }
        args.json.write_text(
            json.dumps({"meta": meta, "results": results, "ratio": ratio}, indent=2)
        )
    return 0
