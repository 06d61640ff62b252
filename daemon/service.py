"""The composition root: builds every part from the config and runs them until told to stop.

Threads, each with its own queue connection:

* the **coordinator** (the caller's thread): watch events and scans → settle → hand ready files
  to ingest; closes quiet batches and cuts them into sequences;
* one **ingest** thread: hash, copy off the card, read metadata, record;
* ``max_parallel_uploads`` **image uploaders** and one **finisher** (manifests, finish_upload).

Stopping (SIGTERM/SIGINT set the ``stop`` event): no new work is claimed, in-flight units end or
are released, threads are joined, and leases left behind are freed at the next start anyway.
A failure on one file is logged and recorded; it never stops the loop.
"""

from __future__ import annotations

import os
import queue as queue_mod
import random
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import structlog

from daemon import mounts, sdnotify, spool
from daemon.clock import SYSTEM_CLOCK, Clock
from daemon.config import Config, WatchConfig
from daemon.credentials import TokenSource
from daemon.ingest import Ingester
from daemon.logsetup import REDACTOR
from daemon.process import WAITING_FOR_TRACK, cut_batch, video_track_options
from daemon.retry import Policy
from daemon.store.queue import Queue
from daemon.upload import Endpoints, Uploader, Upstream
from daemon.watch import Settler, Watcher, is_candidate, is_track_file, scan, stat_file

log = structlog.get_logger(__name__)

TICK_SECONDS = 0.25


@dataclass
class _Inflight:
    """Paths handed to ingest and not finished yet (guarded by ``lock``)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    paths: set[str] = field(default_factory=set)

    def add(self, path: str) -> bool:
        with self.lock:
            if path in self.paths:
                return False
            self.paths.add(path)
            return True

    def done(self, path: str) -> None:
        with self.lock:
            self.paths.discard(path)

    def under(self, root: Path) -> bool:
        prefix = str(root).rstrip(os.sep) + os.sep
        with self.lock:
            return any(p.startswith(prefix) for p in self.paths)


class Service:
    """mapillaryd's main job. ``run(stop)`` blocks until ``stop`` is set."""

    def __init__(self, cfg: Config, clock: Clock = SYSTEM_CLOCK) -> None:
        self.cfg, self.clock = cfg, clock
        self.boot_id = uuid.uuid4().hex
        self.tokens = TokenSource(cfg.mapillary)
        self.upstream = Upstream(clock, self.tokens)
        self.settler = Settler()
        self.inflight = _Inflight()
        self.ready: queue_mod.Queue[tuple[str, WatchConfig] | None] = queue_mod.Queue()
        self._threads: list[threading.Thread] = []
        self._next_scan: dict[Path, float] = {}
        self._watched: set[Path] = set()
        self._tracks_seen: dict[str, tuple[int, int]] = {}
        self.wake = threading.Event()
        # systemd's notify socket and watchdog (no-ops when not run by systemd).
        self.notifier = sdnotify.Notifier.from_env(os.environ)
        self.heartbeat = sdnotify.Heartbeat(
            self.notifier,
            sdnotify.watchdog_interval(os.environ, os.getpid()),
            wedge_after=sdnotify.wedge_after(os.environ),
        )
        self._mounts: mounts.MountMonitor | None = None
        self._cards: dict[Path, WatchConfig] = {}

    def open_queue(self) -> Queue:
        return Queue.open(self.cfg.state.database)

    # --- life cycle -----------------------------------------------------------------------

    def run(self, stop: threading.Event, on_ready: Callable[[], None] | None = None) -> None:
        """Run until ``stop`` is set. Raise :class:`daemon.errors.StateError` if the queue
        database cannot be opened."""
        q = self.open_queue()
        self.cfg.state.spool_dir.mkdir(parents=True, exist_ok=True)
        REDACTOR.add(self.tokens.current())
        released = q.release_stale(self.boot_id, self.now())
        spool.collect_garbage(self.cfg.state.spool_dir, q.needed_data_paths())
        self.upstream.load_hold(q)
        log.info(
            "started",
            boot=self.boot_id,
            watches=[str(w.path) for w in self.cfg.watches],
            state=str(self.cfg.state.dir),
            released_leases=released,
        )
        watcher = Watcher()
        watcher.start()
        self._start_workers(stop)
        if self.cfg.mounts.enabled:
            self._mounts = mounts.MountMonitor(self.cfg.mounts)
        self.notifier.ready(sdnotify.queue_status(q))
        if on_ready is not None:
            on_ready()
        try:
            while not stop.is_set():
                self._tick(q, watcher)
                self.heartbeat.tick(self.clock.monotonic(), lambda: sdnotify.queue_status(q))
                stop.wait(TICK_SECONDS)
        finally:
            log.info("stopping")
            self.notifier.stopping()
            if self._mounts is not None:
                self._mounts.close()
            self.ready.put(None)
            watcher.stop()
            self.wake.set()
            for t in self._threads:
                t.join(timeout=30)
            q.close()
            log.info("stopped")

    def now(self) -> float:
        return self.clock.now().timestamp()

    def _start_workers(self, stop: threading.Event) -> None:
        self._spawn("ingest", self._ingest_loop, stop)
        up = self.cfg.upload
        policy = Policy(up.retry_base_seconds, up.retry_cap_seconds, up.max_retry_after_seconds)
        m = self.cfg.mapillary
        endpoints = Endpoints(
            m.upload_endpoint, m.graph_endpoint, m.organization_id, up.timeout_seconds
        )
        for n in range(up.max_parallel_uploads):
            self._spawn(f"upload-{n}", self._upload_loop, stop, endpoints, policy, True, False)
        self._spawn("finisher", self._upload_loop, stop, endpoints, policy, False, True)

    def _spawn(self, name: str, target: Callable[..., None], *args: object) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    # --- coordinator ----------------------------------------------------------------------

    def watches(self) -> list[WatchConfig]:
        """The configured watch folders, then the cards mounted under the mount roots."""
        return [*self.cfg.watches, *self._cards.values()]

    def _update_cards(self, watcher: Watcher, mono: float) -> None:
        """A card mounted under a mount root becomes a watch (scanned whole as it appears);
        an unmounted one stops being watched."""
        if self._mounts is None:
            return
        new, gone = self._mounts.update(mono)
        for card in gone:
            path = Path(card.point)
            if self._cards.pop(path, None) is not None:
                self._watched.discard(path)
                self._next_scan.pop(path, None)
                watcher.forget(path)
        configured = {w.path for w in self.cfg.watches}
        for card in new:
            if card.watch.path not in configured:
                self._cards[card.watch.path] = card.watch

    def _tick(self, q: Queue, watcher: Watcher) -> None:
        mono = self.clock.monotonic()
        self._update_cards(watcher, mono)
        for w in self.watches():
            appeared = w.path not in self._watched and watcher.ensure(w.path, w.recursive)
            if appeared:
                self._watched.add(w.path)
                log.info("watching", root=str(w.path))
            elif w.path in self._watched and not watcher.ensure(w.path, w.recursive):
                self._watched.discard(w.path)
                log.warning("watch_root_gone", root=str(w.path), note="waiting for it to return")
            if appeared or mono >= self._next_scan.get(w.path, 0.0):
                self._scan(q, w, mono)
                jitter = random.uniform(0.75, 1.25)
                self._next_scan[w.path] = mono + self.cfg.scan.interval_seconds * jitter
        self._drain_events(q, watcher, mono)
        for path in self.settler.due(mono, stat_file):
            watch = self._watch_for(path)
            if watch is None:
                continue
            if is_track_file(path):
                self._track_arrived(q, path, watch)
            elif self.inflight.add(path):
                self.ready.put((path, watch))
        busy = [
            str(w.path)
            for w in self.watches()
            if self.settler.busy_under(w.path) or self.inflight.under(w.path)
        ]
        q.close_quiet_batches(self.now(), self.cfg.process.batch_quiet_seconds, busy)
        for batch_id in q.batches_to_cut():
            try:
                cut_batch(q, batch_id, self.cfg, self.now())
                self.wake.set()
            except Exception:
                log.exception("batch_cut_failed", batch=batch_id)

    def _track_arrived(self, q: Queue, path: str, watch: WatchConfig) -> None:
        """A GPS track file appeared or changed: images of this folder that waited for a
        track go back through processing (in a new batch, so with every track now there)."""
        st = stat_file(path)
        if st is None or self._tracks_seen.get(path) == st:
            return
        self._tracks_seen[path] = st
        n = q.requeue_held(str(watch.path), WAITING_FOR_TRACK, self.now())
        n += q.requeue_rejected_videos(str(watch.path), ("no_video_gps",), self.now())
        if n:
            log.info("track_arrived", path=path, images_to_place=n)

    def _scan(self, q: Queue, w: WatchConfig, mono: float, under: Path | None = None) -> None:
        root = under or w.path
        if not root.is_dir():
            return
        found = 0
        for path, st in scan(root, w.recursive):
            if not q.is_known(path, *st):
                self.settler.observe(path, st, mono, w.settle_seconds)
                found += 1
        if found:
            log.info("scan_found", root=str(root), new_files=found)

    def _drain_events(self, q: Queue, watcher: Watcher, mono: float) -> None:
        while True:
            try:
                path, closed = watcher.events.get_nowait()
            except queue_mod.Empty:
                return
            watch = self._watch_for(path)
            if watch is None:
                continue
            if os.path.isdir(path):
                self._scan(q, watch, mono, under=Path(path))
            elif is_candidate(watch.path, path):
                self.settler.observe(path, stat_file(path), mono, watch.settle_seconds, closed)

    def _watch_for(self, path: str) -> WatchConfig | None:
        best: WatchConfig | None = None
        for w in self.watches():
            root = str(w.path).rstrip(os.sep) + os.sep
            if path.startswith(root) and (best is None or len(str(w.path)) > len(str(best.path))):
                best = w
        return best

    # --- workers --------------------------------------------------------------------------

    def _ingest_loop(self, stop: threading.Event) -> None:
        q = self.open_queue()
        ingester = Ingester(q, self.cfg.state.spool_dir, self.clock)
        try:
            while True:
                job = self.ready.get()
                if job is None or stop.is_set():
                    return
                path, watch = job
                try:
                    ingester.ingest(
                        path, watch.path, watch.ingest == "copy", self.cfg.time_zone_for(watch)
                    )
                except OSError as exc:
                    log.error("ingest_failed", path=path, error=str(exc))
                except Exception:
                    log.exception("ingest_crashed", path=path)
                finally:
                    self.inflight.done(path)
        finally:
            q.close()

    def _upload_loop(
        self,
        stop: threading.Event,
        endpoints: Endpoints,
        policy: Policy,
        images: bool,
        sequences: bool,
    ) -> None:
        q = self.open_queue()
        worker = Uploader(
            q,
            endpoints,
            self.upstream,
            self.clock,
            policy,
            self.boot_id,
            stop,
            spool=self.cfg.state.spool_dir,
            wake=self.wake,
            video_options=partial(video_track_options, self.cfg),
        )
        try:
            while not stop.is_set():
                try:
                    worker.run(images=images, sequences=sequences)
                except Exception:
                    log.exception("upload_worker_crashed")
                    stop.wait(5)
        finally:
            q.close()
