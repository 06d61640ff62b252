"""The composition root: builds every part from the config and runs them until told to stop.

Threads, each with its own queue connection:

* the **coordinator** (the caller's thread): watch events and scans → settle → hand ready files
  to ingest; closes quiet batches and cuts them into sequences;
* one **ingest** thread: hash, copy off the card, read metadata, record;
* ``max_parallel_uploads`` **image uploaders** and one **finisher** (manifests, finish_upload).

* one **freer** when a watch frees its card (:mod:`daemon.freeing`).

Stopping (SIGTERM/SIGINT set the ``stop`` event): no new work is claimed, in-flight units end
within :data:`STOP_DEADLINE_SECONDS` or their leases are released, and ``run`` returns (the CLI
exits 0); leases left behind by a kill are freed at the next start anyway.
A failure on one file is logged and recorded; it never stops the loop.

Hard edges handled here (issue #5): each watch root's volume identity (:mod:`daemon.volumes`) is
followed every tick — a card pulled or swapped makes its queued items wait for it
(``source_missing``) and a rescan runs when it is back; a disk too full to ingest holds ingest
with a status (``ingest_hold``) until room returns; a wall-clock jump moves the stored
deadlines with it (:mod:`daemon.walljump`); a state dir on tmpfs is refused unless allowed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import queue as queue_mod
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import structlog

from daemon import archive, diskspace, mounts, notify_hooks, sdnotify, spool, volumes, web
from daemon.clock import SYSTEM_CLOCK, Clock
from daemon.config import Config, WatchConfig, resolve_time_zone
from daemon.credentials import TokenSource
from daemon.diskspace import INGEST_HOLD_KEY, DiskFull
from daemon.errors import StateError
from daemon.freeing import CardFreer, is_moved_aside
from daemon.ingest import Ingester
from daemon.logsetup import REDACTOR
from daemon.process import WAITING_FOR_TRACK, cut_batch, video_track_options
from daemon.progress import PROGRESS
from daemon.retry import Policy
from daemon.store.queue import Queue
from daemon.throttle import Bandwidth
from daemon.upload import Endpoints, Uploader, Upstream
from daemon.walljump import JumpDetector
from daemon.watch import Settler, Watcher, is_candidate, is_track_file, scan, stat_file

log = structlog.get_logger(__name__)

TICK_SECONDS = 0.25
#: After SIGTERM, in-flight uploads get this long to finish before their leases are released
#: (well inside systemd's default TimeoutStopSec of 90 s).
STOP_DEADLINE_SECONDS = 20.0
#: How often a held ingest looks at the disks again, and the freer at the cards.
DISK_RECHECK_SECONDS = 2.0
FREE_INTERVAL_SECONDS = 2.0
CUT_RETRY_SECONDS = 5.0


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
        zone = resolve_time_zone(cfg.process.time_zone)
        self.upstream = Upstream(clock, self.tokens, windows=cfg.upload.windows, zone=zone)
        self.bandwidth = Bandwidth(clock, cfg.upload.bandwidth_limit, zone=zone)
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
        self._card_watches: tuple[WatchConfig, ...] = ()
        self.hooks = notify_hooks.Hooks(cfg.notify)  # webhook / heartbeat URL, if configured
        #: The identities of the volume last seen at each watch root (empty: not there).
        self._volumes: dict[Path, frozenset[str]] = {}
        self._jumps = JumpDetector()
        self._ingest_held = False
        self._state_full = False
        #: Batches whose cut failed on a missing file: the monotonic time to try again.
        self._cut_retry: dict[int, float] = {}

    def open_queue(self) -> Queue:
        return Queue.open(self.cfg.state.database)

    # --- life cycle -----------------------------------------------------------------------

    def run(self, stop: threading.Event, on_ready: Callable[[], None] | None = None) -> None:
        """Run until ``stop`` is set. Raise :class:`daemon.errors.StateError` if the queue
        database cannot be opened."""
        self._refuse_volatile_state()
        q = self.open_queue()
        self.cfg.state.spool_dir.mkdir(parents=True, exist_ok=True)
        REDACTOR.add(self.tokens.current())
        released = q.release_stale(self.boot_id, self.now())
        up = self.cfg.upload
        horizon = 2 * max(up.retry_cap_seconds, up.max_retry_after_seconds) + 60
        clamped = q.clamp_schedule(self.now(), horizon)
        if clamped:
            log.warning("clock_set_back_while_down", deadlines_due_now=clamped)
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
        backup = archive.start_backup_scheduler(self.cfg, stop, self.clock)
        status_page = web.start(
            self.cfg,
            self.open_queue,
            self.clock,
            PROGRESS,
            upstream_pause=self.upstream.pause_remaining,
            on_change=self.wake.set,
            redact=REDACTOR.add,
        )
        if self.cfg.mounts.enabled:
            self._mounts = mounts.MountMonitor(self.cfg.mounts)
        self.notifier.ready(sdnotify.queue_status(q))
        if on_ready is not None:
            on_ready()
        try:
            while not stop.is_set():
                try:
                    self._tick(q, watcher)
                    self._state_full = False
                except DiskFull as exc:  # the queue cannot record anything: wait for room
                    if not self._state_full:
                        log.error("state_disk_full", error=str(exc), note="waiting for room")
                    self._state_full = True
                self.heartbeat.tick(self.clock.monotonic(), lambda: sdnotify.queue_status(q))
                self.hooks.tick(self.clock.monotonic(), lambda: notify_hooks.health_of(q))
                stop.wait(TICK_SECONDS)
        finally:
            log.info("stopping")
            if backup is not None:
                backup.shutdown()
            self.notifier.stopping()
            if self._mounts is not None:
                self._mounts.close()
            self.hooks.close()
            self.ready.put(None)
            watcher.stop()
            if status_page is not None:
                status_page.stop()
            self.wake.set()
            deadline = time.monotonic() + STOP_DEADLINE_SECONDS
            for t in self._threads:
                t.join(timeout=max(0.0, deadline - time.monotonic()))
            late = [t.name for t in self._threads if t.is_alive()]
            released = 0
            with _suppress_full():  # a full state disk: the next start frees them anyway
                released = q.release_owned(self.boot_id, self.now())
            q.close()
            log.info("stopped", unfinished_threads=late, leases_released=released)

    def _refuse_volatile_state(self) -> None:
        """A state or spool dir in RAM loses the queue (and the only copy of pulled cards'
        files) at the next power cut: refuse to start, or only warn with ``allow_tmpfs``."""
        st = self.cfg.state
        for key, path in (("state.dir", st.dir), ("state.spool_dir", st.spool_dir)):
            kind = diskspace.volatile_fs_type(path)
            if kind is None:
                continue
            if not st.allow_tmpfs:
                raise StateError(
                    f"{key}: {path} is on {kind} (RAM): the queue would be lost at the next "
                    "power cut; use persistent storage, or set [state] allow_tmpfs = true"
                )
            log.warning("state_on_tmpfs", key=key, path=str(path), fs=kind)

    def now(self) -> float:
        return self.clock.now().timestamp()

    def _start_workers(self, stop: threading.Event) -> None:
        self.bandwidth.stop = stop  # a worker waiting on the limit wakes when stopping
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
        card_roots = self.cfg.mounts.roots if self.cfg.mounts.enabled else ()
        if any(w.free_card != "off" for w in [*self.cfg.watches, *(r.watch for r in card_roots)]):
            self._spawn("freer", self._free_loop, stop)

    def _spawn(self, name: str, target: Callable[..., None], *args: object) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    # --- coordinator ----------------------------------------------------------------------

    def watches(self) -> list[WatchConfig]:
        """The configured watch folders, then the cards mounted under the mount roots."""
        return [*self.cfg.watches, *self._card_watches]

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
        if new or gone:
            self._card_watches = tuple(self._cards.values())  # read by other threads

    def _tick(self, q: Queue, watcher: Watcher) -> None:
        mono = self.clock.monotonic()
        self.follow_wall_clock(q)
        self._update_cards(watcher, mono)
        for w in self.watches():
            if self._volume_changed(q, w, watcher):
                self._next_scan[w.path] = 0.0
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
            if self._cut_retry.get(batch_id, 0.0) > mono:
                continue
            try:
                self._check_batch_files(q, batch_id)
                cut_batch(q, batch_id, self.cfg, self.now())
                self.wake.set()
                self._cut_retry.pop(batch_id, None)
            except DiskFull:
                raise
            except OSError as exc:  # a file read in place (video, track) is on a pulled card
                if batch_id not in self._cut_retry:
                    log.warning("batch_waits_for_files", batch=batch_id, error=str(exc))
                self._cut_retry[batch_id] = mono + CUT_RETRY_SECONDS
            except Exception:
                log.exception("batch_cut_failed", batch=batch_id)

    def _check_batch_files(self, q: Queue, batch_id: int) -> None:
        """Raise FileNotFoundError if a file of the batch read in place is not there, or its
        card is not the one in the slot (pulled, or swapped for one with the same file names):
        processing it now would refuse it as unreadable, or read another card's video; it
        waits for its card."""
        seen: dict[str, frozenset[str]] = {}
        for path, volume, watch in q.batch_in_place(batch_id):
            ids = seen.setdefault(watch, volumes.identities(Path(watch)))
            if volume not in ids or not os.path.exists(path):
                raise FileNotFoundError(errno.ENOENT, "its card is not there", path)

    def follow_wall_clock(self, q: Queue) -> float | None:
        """Compare the wall clock with the monotonic one; after a jump, move the queue's
        stored deadlines by it. Return the jump in seconds, or None."""
        jump = self._jumps.check(self.now(), self.clock.monotonic())
        if jump is not None:
            moved = q.shift_schedule(jump)
            log.warning("wall_clock_jumped", seconds=round(jump), deadlines_moved=moved)
        return jump

    def _volume_changed(self, q: Queue, w: WatchConfig, watcher: Watcher) -> bool:
        """Follow the volume at ``w``'s root; return True when it changed (pulled, inserted,
        swapped). Items whose bytes were on the old volume wait for it; items waiting for the
        new one are queued again if their files are there."""
        ids = volumes.identities(w.path)
        known = w.path in self._volumes
        before = self._volumes.get(w.path, frozenset())
        self._volumes[w.path] = ids
        # The same volume answers to the same filesystem id even once a marker is written.
        if known and (ids & before or not (ids or before)):
            return False
        if known:
            log.info("volume_changed", root=str(w.path), before=sorted(before), now=sorted(ids))
            watcher.forget(w.path)  # the old watch sits on the old filesystem
            self._watched.discard(w.path)
            if before:
                old = _primary(before)
                n = q.mark_source_missing_under(str(w.path), str(w.path), old, self.now())
                if n:
                    log.warning("card_gone", root=str(w.path), items_waiting=n, volume=old)
        if ids:
            n = q.resume_source_missing(str(w.path), ids, _present, self.now())
            if n:
                log.info("card_back", root=str(w.path), items_resumed=n, volume=_primary(ids))
                self.wake.set()
        return known

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
        if w.path in self._volumes:  # a periodic scan also finds files that came back
            ids = volumes.identities(w.path)
            if q.resume_source_missing(str(w.path), ids, _present, self.now()):
                self.wake.set()
        for path, st in scan(root, w.recursive):
            if w.free_card == "move" and is_moved_aside(w.path, path):
                continue
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
            if watch.free_card == "move" and is_moved_aside(watch.path, path):
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
        st = self.cfg.state
        ingester = Ingester(
            q, st.spool_dir, self.clock, state_dir=st.dir, reserve=st.min_free_bytes
        )
        try:
            while True:
                job = self.ready.get()
                if job is None or stop.is_set():
                    return
                path, watch = job
                try:
                    while not self._ingest_one(q, ingester, path, watch):
                        if not self._wait_for_room(stop):
                            return
                finally:
                    self.inflight.done(path)
        finally:
            q.close()

    def _ingest_one(self, q: Queue, ingester: Ingester, path: str, watch: WatchConfig) -> bool:
        """Ingest one file; return False when a disk is too full (ingest is then held)."""
        try:
            ingester.ingest(
                path,
                watch.path,
                watch.ingest == "copy",
                self.cfg.time_zone_for(watch),
                mark_volume=watch.free_card != "off",
            )
        except DiskFull as exc:
            self._hold_ingest(q, exc)
            return False
        except OSError as exc:
            log.error("ingest_failed", path=path, error=str(exc))
        except Exception:
            log.exception("ingest_crashed", path=path)
        if self._ingest_held:
            self._ingest_held = False
            with _suppress_full():
                q.set_meta(INGEST_HOLD_KEY, None)
            log.info("ingest_resumed", why="there is room on the disks again")
        return True

    def _hold_ingest(self, q: Queue, exc: DiskFull) -> None:
        """Say once (log and status) that ingest waits for room; nothing was recorded."""
        if self._ingest_held:
            return
        self._ingest_held = True
        hold = {
            "reason": "disk_low",
            "detail": str(exc),
            "path": exc.path,
            "since": self.clock.now().isoformat(),
        }
        with _suppress_full():  # the state disk itself may be the full one
            q.set_meta(INGEST_HOLD_KEY, json.dumps(hold))
        log.error("ingest_held", reason="disk_low", detail=str(exc))

    def _wait_for_room(self, stop: threading.Event) -> bool:
        """Wait until both disks have their reserve free again; False if stopped first."""
        st = self.cfg.state
        while not stop.is_set():
            try:
                room = all(
                    diskspace.free_bytes(p) >= st.min_free_bytes for p in (st.dir, st.spool_dir)
                )
            except OSError:
                room = False
            if room:
                return True
            stop.wait(DISK_RECHECK_SECONDS)
        return False

    def _free_loop(self, stop: threading.Event) -> None:
        """Free the cards of the watches that ask for it, a pass every few seconds."""
        q = self.open_queue()
        freer = CardFreer(q, self.clock)
        try:
            while not stop.is_set():
                for w in self.watches():
                    if w.free_card == "off" or stop.is_set():
                        continue
                    ids = volumes.identities(w.path)
                    try:
                        if ids:
                            freer.free_under(w.path, w.free_card, ids, stop)
                    except DiskFull as exc:
                        log.warning("free_card_postponed", root=str(w.path), error=str(exc))
                    except Exception:
                        log.exception("free_card_crashed", root=str(w.path))
                stop.wait(FREE_INTERVAL_SECONDS)
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
        # Each worker leases under its own name, so a crashed one's lease can be given back.
        owner = f"{self.boot_id}/{threading.current_thread().name}"
        worker = Uploader(
            q,
            endpoints,
            self.upstream,
            self.clock,
            policy,
            owner,
            stop,
            spool=self.cfg.state.spool_dir,
            wake=self.wake,
            video_options=partial(video_track_options, self.cfg),
            bandwidth=self.bandwidth,
        )
        try:
            while not stop.is_set():
                try:
                    worker.run(images=images, sequences=sequences)
                except DiskFull as exc:  # the state disk: nothing can be recorded now
                    log.error("upload_paused_disk_full", error=str(exc))
                    self._release_when_room(q, owner, stop)
                except Exception:
                    log.exception("upload_worker_crashed")
                    stop.wait(5)
                    with _suppress_full():
                        q.release_owned(owner, self.now())
        finally:
            q.close()

    def _release_when_room(self, q: Queue, owner: str, stop: threading.Event) -> None:
        """Give back this worker's lease once the state disk can record it again."""
        while not stop.is_set():
            try:
                q.release_owned(owner, self.now())
                return
            except DiskFull:
                stop.wait(DISK_RECHECK_SECONDS)


def _present(path: str, size: int) -> bool:
    """The file an item waits for is there again, with its size."""
    st = stat_file(path)
    return st is not None and st[0] == size


def _primary(ids: frozenset[str]) -> str:
    """The strongest of a volume's identities: its marker's if it has one."""
    return next((i for i in sorted(ids) if i.startswith("marker:")), min(ids))


def _suppress_full() -> contextlib.AbstractContextManager[None]:
    return contextlib.suppress(DiskFull)
