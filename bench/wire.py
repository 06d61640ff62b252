"""``python -m bench wire``: the upload itself, with 10 % of the upload bodies cut part-way.

Three contenders send photos to a fresh sandbox each (``python -m daemon.sandbox --faults``, a
separate process on 127.0.0.1, the same seeded spec: ``cut`` of the upload POSTs), in one run:

* **mapillaryd** — the daemon ingests and processes the card with no token first (uploads held,
  not timed), then is restarted with the token: timed from that start until the queue shows
  every frame done (its sequence has a cluster id); its CPU from ``wait4`` (start-up included).
* **mapillary_tools 0.14.7** — ``process`` first (not timed), then ``upload`` timed from start
  to exit; CPU from ``wait4``.
* **curl** — the very bytes mapillaryd uploaded (read back from its sandbox), one raw
  ``POST /upload/<key>`` each (``Offset: 0``, Content-Length, no ``Expect``, a connection each),
  4 in parallel in one ``curl --parallel`` process; a cut transfer is resumed the way the
  protocol allows (a ``GET`` of the offset, a ``POST`` of the rest, again with curl) until every
  upload answered 200. Timed from the first curl's start to the last one's end; CPU is every
  curl process's.

Figures, per contender: **wire ÷ payload** — every byte the sandbox read from the client's
sockets (request lines, headers, chunk framing, bodies) over the bytes the finished sessions
hold: a cut is a link that breaks at that byte. What had already arrived in the server's socket
buffer beyond the cut is shown apart (**unread**): on loopback that is megabytes, an artefact of
the test link (on a real uplink it is about one bandwidth-delay product); **CPU s per GB** of
payload; **MB/s** of payload over the wall time. Goals (issue #5 point 5): mapillaryd's wire ÷
payload ≤ 1.02, its CPU/GB ≤ 0.5× mapillary_tools', its MB/s ≥ 0.9× curl's.

Each contender's clock starts from the same state: after an ``os.sync()`` (the steps before it
wrote up to ~1 GB: spool copies, the previous sandbox's sessions, the bytes for curl) and with
its input files read once, so in the page cache. mapillary_tools' had just been read by its
``process``; curl's copies and mapillaryd's spool were on disk only (this VM reclaims cold
page cache): curl took 3–4 s instead of 1.7–2 s.

The photos are noise-filled JPEGs of about ``--image-kb`` (a dashcam frame's size), each with
its own EXIF (time, position), so each one is distinct content.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import math
import os
import random
import re
import shutil
import sqlite3
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import piexif
from PIL import Image

from bench.args import add_run_options, run_in_workdir
from bench.contenders import (
    MAPILLARY_TOOLS,
    MAPILLARYD,
    ContenderError,
    base_env,
    mapillaryd_command,
    write_daemon_config,
)
from bench.proc import Child, Exit
from bench.sandbox import TOKEN, SandboxProcess
from bench.verify import VerificationError, check_clusters
from daemon import synth
from daemon.store.queue import ItemState, Queue

CURL = "curl"
POLL_S = 0.02
GOAL_OVERHEAD = 1.02
GOAL_CPU_VS_MT = 0.5
GOAL_WALL_VS_CURL = 0.9
_CURL_LINE = re.compile(r"^(\d{3}) (\S+)$")


@dataclass(frozen=True)
class WireResult:
    """One contender's figures."""

    contender: str
    images: int
    payload_bytes: int
    wire_bytes: int
    unread_bytes: int
    body_bytes: int
    requests: int
    cuts: int
    wall_s: float
    cpu_s: float

    @property
    def overhead(self) -> float:
        return self.wire_bytes / self.payload_bytes

    @property
    def cpu_per_gb(self) -> float:
        return self.cpu_s / (self.payload_bytes / 1e9)

    @property
    def mb_per_s(self) -> float:
        return self.payload_bytes / 1e6 / self.wall_s

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(overhead=self.overhead, cpu_per_gb=self.cpu_per_gb, mb_per_s=self.mb_per_s)
        return out


# --- the photos ----------------------------------------------------------------------------------


def noise_jpeg(target_bytes: int, seed: int) -> bytes:
    """A JPEG of random pixels of about ``target_bytes`` (noise does not compress: ~0.7 B/px)."""
    rng = random.Random(seed)
    side = max(64, int(math.sqrt(target_bytes / 0.76)))
    pixels = rng.randbytes(side * side * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), pixels).save(out, "JPEG", quality=85)
    return out.getvalue()


def write_photos(folder: Path, count: int, size_kb: int, seed: int) -> list[Path]:
    """``count`` distinct geotagged photos along a drive, sharing one noise picture."""
    folder.mkdir(parents=True, exist_ok=True)
    base = noise_jpeg(size_kb * 1024, seed)
    start = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    paths = []
    for i, (t, lat, lon, alt, hd) in enumerate(synth.drive_points(count, start=start, seed=seed)):
        exif = synth.exif_bytes(time=t, lat=lat, lon=lon, alt=alt, heading=hd)
        out = io.BytesIO()
        piexif.insert(exif, base, out)
        path = folder / f"IMG_{i:05d}.jpg"
        path.write_bytes(out.getvalue())
        paths.append(path)
    return paths


# --- mapillaryd ----------------------------------------------------------------------------------


def _counts(conn: sqlite3.Connection) -> dict[str, int]:
    try:
        return Queue(conn).counts()
    except sqlite3.OperationalError:
        return {}


def _wait_for(child: Child, db: Path, state: str, n: int, timeout: float) -> float:
    """Poll the daemon's queue every ``POLL_S`` until ``n`` items are in ``state``; the
    monotonic time then (at most ``POLL_S`` late: one read-only connection, kept open)."""
    deadline = time.monotonic() + timeout
    conn: sqlite3.Connection | None = None
    try:
        while True:
            if conn is None and db.exists():
                with contextlib.suppress(sqlite3.OperationalError):
                    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)
                    conn.row_factory = sqlite3.Row
            counts = _counts(conn) if conn is not None else {}
            if counts.get(state, 0) >= n:
                return time.monotonic()
            if child.exit is not None:
                raise ContenderError(f"mapillaryd exited early:\n{child.tail()}")
            if time.monotonic() > deadline:
                raise ContenderError(f"mapillaryd: not {n} items {state} in {timeout:g}s: {counts}")
            time.sleep(POLL_S)
    finally:
        if conn is not None:
            conn.close()


def run_mapillaryd(photos: list[Path], work: Path, spec: str, timeout: float) -> WireResult:
    work.mkdir(parents=True)
    card = work / "card" / "DCIM" / "100WIRE"
    card.mkdir(parents=True)
    for p in photos:
        shutil.copy2(p, card / p.name)
    cfg = write_daemon_config(work, work / "card")
    db = work / "state" / "queue.sqlite3"
    env = base_env(work / "home")
    with SandboxProcess(work / "sandbox", env, faults=spec) as sandbox:
        env.update(
            MAPILLARY_UPLOAD_ENDPOINT=sandbox.upload_endpoint,
            MAPILLARY_GRAPH_API_ENDPOINT=sandbox.graph_endpoint,
        )
        argv = [*mapillaryd_command(), "run", "--config", str(cfg)]
        prep = Child(argv, env=env, log=work / "prepare.log")  # no token: uploads held
        try:
            _wait_for(prep, db, ItemState.QUEUED, len(photos), timeout)
        finally:
            prep.stop()
        _ready_to_time(sorted(p for p in (work / "state" / "spool").rglob("*") if p.is_file()))
        child = Child(argv, env={**env, "MAPILLARY_TOKEN": TOKEN}, log=work / "upload.log")
        try:
            done = _wait_for(child, db, ItemState.DONE, len(photos), timeout)
        finally:
            ended = child.stop()
        if ended.code != 0:
            raise ContenderError(f"mapillaryd exited with {ended.code}:\n{child.tail()}")
        return _result(MAPILLARYD, sandbox, photos, done - child.started, ended.cpu_s)


def _ready_to_time(inputs: list[Path]) -> None:
    """Nothing of an earlier step left to write back, and the contender's input files in the
    page cache: the same start for every contender (see the module docstring)."""
    os.sync()
    for path in inputs:
        with path.open("rb") as fh:
            while fh.read(1 << 20):
                pass


# --- mapillary_tools -----------------------------------------------------------------------------


def run_mapillary_tools(
    photos: list[Path], work: Path, spec: str, timeout: float, executable: Path
) -> WireResult:
    work.mkdir(parents=True)
    images = work / "images"
    images.mkdir()
    for p in photos:
        shutil.copy2(p, images / p.name)
    ini = work / "mapillary.ini"
    ini.write_text(f"[sandbox]\nuser_upload_token = {TOKEN}\n", encoding="utf-8")
    env = base_env(work / "home")
    env.update(
        MAPILLARY_CONFIG_PATH=str(ini),
        MAPILLARY_TOOLS_PROMPT_DISABLED="YES",
        MAPILLARY_UPLOAD_HISTORY_PATH=str(work / "history"),
        MAPILLARY_TOOLS_UPLOAD_CACHE_DIR=str(work / "cache"),
    )
    prep = Child([str(executable), "process", str(images)], env=env, log=work / "process.log")
    processed = prep.wait(timeout)
    if processed is None or processed.code != 0:
        prep.stop(timeout=5.0)
        raise ContenderError(f"mapillary_tools process failed:\n{prep.tail()}")
    with SandboxProcess(work / "sandbox", env, faults=spec) as sandbox:
        env.update(
            MAPILLARY_UPLOAD_ENDPOINT=sandbox.upload_endpoint,
            MAPILLARY_GRAPH_API_ENDPOINT=sandbox.graph_endpoint,
        )
        argv = [str(executable), "upload", str(images), "--user_name", "sandbox"]
        _ready_to_time(sorted(images.glob("*.jpg")))
        child = Child(argv, env=env, log=work / "upload.log", cwd=work)
        ended = child.wait(timeout)
        if ended is None:
            child.stop(timeout=5.0)
            raise ContenderError(f"mapillary_tools did not finish in {timeout:g}s")
        if ended.code != 0:
            raise ContenderError(f"mapillary_tools exited with {ended.code}:\n{child.tail()}")
        return _result(MAPILLARY_TOOLS, sandbox, photos, ended.ended - child.started, ended.cpu_s)


def _result(
    who: str, sandbox: SandboxProcess, photos: list[Path], wall: float, cpu: float
) -> WireResult:
    raw = sandbox.raw_stats()
    clusters = sandbox.clusters()
    check_clusters(who, clusters, [p.name for p in photos])
    payload = sum(int(c["size"]) for c in clusters)
    payload += sum(int(i["size"]) for c in clusters for i in c["images"])
    return _figures(who, len(photos), payload, raw, wall, cpu)


def _figures(
    who: str, images: int, payload: int, raw: dict[str, Any], wall: float, cpu: float
) -> WireResult:
    """One contender's figures from its sandbox's raw stats (``/_sandbox/stats``)."""
    return WireResult(
        contender=who,
        images=images,
        payload_bytes=payload,
        wire_bytes=int(raw["wire_bytes_received"]),
        unread_bytes=int(raw["wire_bytes_unread"]),
        body_bytes=int(raw["bytes_received"]),
        requests=sum(n for r, n in raw["requests"].items() if "/_sandbox/" not in r),
        cuts=int(raw.get("faults", {}).get("faults", {}).get("cut", 0)),
        wall_s=wall,
        cpu_s=cpu,
    )


# --- curl ----------------------------------------------------------------------------------------


def _curl_round(
    work: Path, name: str, env: dict[str, str], blocks: list[list[str]], timeout: float
) -> tuple[dict[str, str], Exit]:
    """One ``curl --parallel`` over ``blocks`` (config lines per transfer): status per URL."""
    config = work / f"{name}.curlrc"
    config.write_text("\nnext\n".join("\n".join(b) for b in blocks) + "\n", encoding="utf-8")
    log = work / f"{name}.log"
    argv = [CURL, "--parallel", "--parallel-max", "4", "-s", "-S", "--config", str(config)]
    child = Child(argv, env=env, log=log)
    ended = child.wait(timeout)
    if ended is None:
        child.stop(timeout=5.0)
        raise ContenderError(f"curl did not finish in {timeout:g}s")
    codes = {}
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _CURL_LINE.match(line.strip())
        if m:
            codes[m.group(2)] = m.group(1)
    return codes, ended


def _block(url: str, headers: dict[str, str], extra: list[str]) -> list[str]:
    lines = [f'url = "{url}"']
    lines += [f'header = "{k}: {v}"' for k, v in headers.items()]
    return [*lines, *extra, 'write-out = "%{http_code} %{url_effective}\\n"']


def run_curl(sources: list[Path], work: Path, spec: str, timeout: float) -> WireResult:
    work.mkdir(parents=True)
    env = base_env(work / "home")
    keys = {f"curl_{i:05d}.jpg": p for i, p in enumerate(sources)}
    sizes = {k: p.stat().st_size for k, p in keys.items()}
    # No Expect: 100-continue round trip; a connection per request, because curl silently
    # sends a request again from byte 0 when a kept-alive connection it reused was cut.
    auth = {"Authorization": f"OAuth {TOKEN}", "Expect": "", "Connection": "close"}
    with SandboxProcess(work / "sandbox", env, faults=spec) as sandbox:
        url = {k: f"{sandbox.upload_endpoint}/{k}" for k in keys}
        pending = {k: (keys[k], 0) for k in keys}  # key → (file to send, offset)
        cpu, rounds = 0.0, 0
        _ready_to_time(sources)
        started = time.monotonic()
        while pending:
            rounds += 1
            if rounds > 50:
                raise ContenderError(f"curl: {len(pending)} uploads still cut after 50 rounds")
            blocks = [
                _block(
                    url[k],
                    {**auth, "Offset": str(off), "X-Entity-Name": k},
                    [f'data-binary = "@{path}"', 'output = "/dev/null"'],
                )
                for k, (path, off) in pending.items()
            ]
            codes, ended = _curl_round(work, f"post{rounds}", env, blocks, timeout)
            cpu += ended.cpu_s
            failed = [k for k in pending if codes.get(url[k]) != "200"]
            if not failed:
                break
            out = work / f"offsets{rounds}"
            out.mkdir()
            blocks = [_block(url[k], auth, [f'output = "{out / k}"']) for k in failed]
            codes, ended = _curl_round(work, f"get{rounds}", env, blocks, timeout)
            cpu += ended.cpu_s
            pending = {}
            for k in failed:
                try:
                    offset = int(json.loads((out / k).read_text())["offset"])
                except (OSError, ValueError, KeyError):
                    offset = -1  # the GET failed too: ask again next round
                if offset < 0:
                    pending[k] = (keys[k], 0)
                    continue
                rest = work / f"rest{rounds}" / k
                rest.parent.mkdir(exist_ok=True)
                rest.write_bytes(keys[k].read_bytes()[offset:])  # the bench's work, not curl's
                pending[k] = (rest, offset)
        wall = time.monotonic() - started
        raw = sandbox.raw_stats()
        for k, p in keys.items():
            if sandbox.session_bytes(k) != p.read_bytes():
                raise VerificationError(f"curl: session {k} does not hold the file's bytes")
        return _figures(CURL, len(keys), sum(sizes.values()), raw, wall, cpu)


def mapillaryd_bytes(work: Path, into: Path) -> list[Path]:
    """The exact image bytes mapillaryd uploaded, read back from its sandbox's session files."""
    clusters = json.loads((work / "clusters.json").read_text())
    into.mkdir(parents=True)
    paths = []
    sessions = work / "sandbox" / "sessions"
    for i, image in enumerate(img for c in clusters for img in c["images"]):
        digest = hashlib.sha256(image["session_key"].encode()).hexdigest()
        path = into / f"{i:05d}.jpg"
        shutil.copyfile(sessions / digest, path)
        paths.append(path)
    return paths


# --- the run -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench wire",
        description="Bytes on the wire, CPU per GB and throughput of the upload, with cut bodies:"
        " mapillaryd, mapillary_tools 0.14.7 and raw curl POSTs on the same sandbox.",
    )
    parser.add_argument("--images", type=int, default=200, help="photos (200)")
    parser.add_argument("--image-kb", type=int, default=2048, help="size of each photo (2048)")
    parser.add_argument("--cut", type=float, default=0.10, help="share of bodies cut (0.10)")
    parser.add_argument("--seed", type=int, default=5, help="seed of the cuts and photos (5)")
    add_run_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.images < 1 or args.image_kb < 16 or not 0 <= args.cut < 1 or args.repeat < 1:
        print("bench wire: bad --images, --image-kb, --cut or --repeat", file=sys.stderr)
        return 2
    if shutil.which(CURL) is None:
        print("bench wire: curl not found", file=sys.stderr)
        return 2
    return run_in_workdir(
        args,
        "bench wire",
        "mapillaryd-wire-",
        lambda mt, root: _bench(args, mt, root),
        (ContenderError, VerificationError),
    )


def _bench(args: argparse.Namespace, mt: Path, root: Path) -> int:
    # A chunked body's length is unknown to the server: its cut falls uniformly within the
    # first `cut_span` bytes, here one photo's size, as a Content-Length body's within it.
    rule = {"routes": ["POST /upload/*"], "cut": args.cut, "cut_span": args.image_kb * 1024}
    spec = json.dumps({"seed": args.seed, "rules": [rule]})
    print(f"writing {args.images} photos of ~{args.image_kb} KiB …", flush=True)
    photos = write_photos(root / "photos", args.images, args.image_kb, args.seed)
    results: list[WireResult] = []
    for i in range(args.repeat):
        run = root / f"run{i + 1}"
        d = run_mapillaryd(photos, run / MAPILLARYD, spec, args.timeout)
        _keep_clusters(run / MAPILLARYD)
        sent = mapillaryd_bytes(run / MAPILLARYD, run / "curl-bytes")
        c = run_curl(sent, run / CURL, spec, args.timeout)
        m = run_mapillary_tools(photos, run / MAPILLARY_TOOLS, spec, args.timeout, mt)
        for r in (d, m, c):
            results.append(r)
            print(
                f"run {i + 1}/{args.repeat} {r.contender:<15} wall {r.wall_s:6.2f} s"
                f"  CPU {r.cpu_s:6.2f} s  wire/payload {r.overhead:.4f}  cuts {r.cuts}",
                flush=True,
            )
        if args.keep is None:
            shutil.rmtree(run, ignore_errors=True)
    table, summary = render(results, args)
    print()
    print(table)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {"summary": summary, "runs": [r.as_json() for r in results], "args": vars(args)}
        args.json.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"\nfigures written to {args.json}")
    return 0


def _keep_clusters(work: Path) -> None:
    """Save the clusters of mapillaryd's sandbox (stopped by now) for :func:`mapillaryd_bytes`."""
    db = sqlite3.connect(work / "sandbox" / "sandbox.sqlite3")
    try:
        rows = db.execute("SELECT session_key, images, size FROM clusters ORDER BY seq").fetchall()
    finally:
        db.close()
    clusters = [{"session_key": k, "images": json.loads(i), "size": s} for k, i, s in rows]
    (work / "clusters.json").write_text(json.dumps(clusters), encoding="utf-8")


def render(results: list[WireResult], args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The table (medians per contender) and the ratios against the goals."""
    by: dict[str, dict[str, float]] = {}
    for name in (MAPILLARYD, MAPILLARY_TOOLS, CURL):
        rs = [r for r in results if r.contender == name]
        by[name] = {
            "payload_mb": statistics.median(r.payload_bytes / 1e6 for r in rs),
            "wire_mb": statistics.median(r.wire_bytes / 1e6 for r in rs),
            "unread_mb": statistics.median(r.unread_bytes / 1e6 for r in rs),
            "overhead": statistics.median(r.overhead for r in rs),
            "requests": statistics.median(r.requests for r in rs),
            "cuts": statistics.median(r.cuts for r in rs),
            "cpu_s": statistics.median(r.cpu_s for r in rs),
            "cpu_per_gb": statistics.median(r.cpu_per_gb for r in rs),
            "wall_s": statistics.median(r.wall_s for r in rs),
            "mb_per_s": statistics.median(r.mb_per_s for r in rs),
        }
    d, m, c = by[MAPILLARYD], by[MAPILLARY_TOOLS], by[CURL]
    ratios = {
        "overhead": d["overhead"],
        "cpu_per_gb_vs_mapillary_tools": d["cpu_per_gb"] / m["cpu_per_gb"],
        "throughput_vs_curl": d["mb_per_s"] / c["mb_per_s"],
    }
    head = (
        f"{'contender':<16}{'payload MB':>11}{'wire MB':>9}{'wire/payload':>13}{'unread MB':>10}"
        f"{'requests':>9}"
        f"{'cuts':>6}{'CPU s':>8}{'CPU s/GB':>9}{'wall s':>8}{'MB/s':>8}"
    )
    lines = [
        f"{args.images} photos of ~{args.image_kb} KiB, {args.cut:.0%} of upload bodies cut"
        f" (seed {args.seed}), {args.repeat} run(s), medians; sandbox in its own process",
        head,
        "-" * len(head),
    ]
    for name, f in by.items():
        lines.append(
            f"{name:<16}{f['payload_mb']:>11.1f}{f['wire_mb']:>9.1f}{f['overhead']:>13.4f}"
            f"{f['unread_mb']:>10.1f}{f['requests']:>9.0f}{f['cuts']:>6.0f}{f['cpu_s']:>8.2f}{f['cpu_per_gb']:>9.2f}"
            f"{f['wall_s']:>8.2f}{f['mb_per_s']:>8.1f}"
        )
    lines += [
        "wire: bytes the sandbox read (request lines, headers, framing, bodies); unread: bytes"
        " already in its socket buffer when it cut a body (loopback buffers hold megabytes; on a"
        " real uplink about one bandwidth-delay product), not in wire",
        "",
        f"mapillaryd wire ÷ payload        {ratios['overhead']:.4f}"
        f"   (goal ≤ {GOAL_OVERHEAD}) {_ok(ratios['overhead'] <= GOAL_OVERHEAD)}",
        f"mapillaryd CPU/GB ÷ mapillary_tools {ratios['cpu_per_gb_vs_mapillary_tools']:.3f}"
        f"   (goal ≤ {GOAL_CPU_VS_MT}) "
        f"{_ok(ratios['cpu_per_gb_vs_mapillary_tools'] <= GOAL_CPU_VS_MT)}",
        f"mapillaryd MB/s ÷ curl           {ratios['throughput_vs_curl']:.3f}"
        f"   (goal ≥ {GOAL_WALL_VS_CURL}) {_ok(ratios['throughput_vs_curl'] >= GOAL_WALL_VS_CURL)}",
    ]
    return "\n".join(lines), {"contenders": by, "ratios": ratios, "nproc": os.cpu_count()}


def _ok(met: bool) -> str:
    return "met" if met else "MISSED"
