"""The upload stage: image workers and the sequence finisher.

An image upload is: read the queued copy, check it is still the content we hashed, put the
description JSON into EXIF ImageDescription (pixels untouched), ask the server for the offset of
its session (see :func:`image_session_key`) and send the rest; the handle goes into the queue
row. When every image of a sequence is settled, the finisher uploads the manifest (a deterministic
session key, so a repeat after a crash resumes the same session) and calls ``finish_upload``,
retrying it with the stored handle until it answers — mapillary_tools does not.

Session keys are content digests, so a kill at any point ends in the same server-side session
and the same handle: nothing is uploaded twice.

Failures go through :func:`daemon.retry.decide`: retry later (time stored in the row), hold
everything (token rejected), or give the unit up with a recorded reason.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import BinaryIO

import structlog

from daemon import control, spool, volumes
from daemon.clock import Clock
from daemon.credentials import TokenSource, fingerprint
from daemon.describe import exif_description, image_description
from daemon.errors import ItemError, TransportError, UploadError
from daemon.limits import Windows
from daemon.mapillary.graph import GraphClient
from daemon.mapillary.upload_service import Buffers, UploadService, session_key
from daemon.media.exif import ImageMetadata, description_splice
from daemon.media.jpeg import Splice
from daemon.progress import PROGRESS
from daemon.reachability import Reachability
from daemon.resume import ResumeMemo
from daemon.retry import Action, Policy, decide, release_delay
from daemon.store.queue import Item, ItemState, Queue, SequenceRow, Verdict
from daemon.throttle import Bandwidth
from daemon.video_options import VideoTrackOptions

log = structlog.get_logger(__name__)

HOLD_KEY = "hold"
OFFLINE_KEY = "offline"
WINDOW_KEY = "window"
#: Seconds over which the work that waited for the network is resumed.
RESUME_SPREAD = 10.0
MANIFEST_FILE_TYPE = "mly_bundle_manifest"
VIDEO_FILE_TYPE = "mly_camm_video"


@dataclass(frozen=True)
class Endpoints:
    upload: str
    graph: str
    organization_id: str | None = None
    timeout: float = 60.0


class UpstreamPaused(Exception):
    """Raised by :meth:`Upstream.check_pause` before a request while the whole upstream is
    paused: the unit of work in hand goes back to the queue untouched (no attempt counted)."""


class Upstream:
    """What every worker must respect before talking to Mapillary.

    * a pause (``Retry-After``, outage) measured on the monotonic clock, shared by all workers,
      so one 429 quiets everyone and the end of an outage is not a retry storm;
    * a hold (token rejected or missing), persisted in the queue's meta table so ``status`` shows
      it, lifted as soon as a different token appears.
    """

    def __init__(
        self,
        clock: Clock,
        tokens: TokenSource,
        *,
        windows: Windows | None = None,
        zone: tzinfo | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.clock, self.tokens = clock, tokens
        self.windows, self.zone = windows or Windows(), zone
        self.rng = rng or random.Random()
        self._lock = threading.Lock()
        self._paused_until = 0.0
        self._hold: dict[str, str] | None = None
        self._reach = Reachability()
        self._window_open: bool | None = None
        self.changed = threading.Event()
        self._pause_seconds = 0.0
        #: What the workers learnt about upload sessions (see :mod:`daemon.resume`).
        self.sessions = ResumeMemo()

    # --- offline ----------------------------------------------------------------------------

    @property
    def offline(self) -> bool:
        with self._lock:
            return self._reach.offline

    def offline_wait(self) -> float:
        """Seconds to wait before sending anything because the upstream is unreachable; 0 for
        exactly one worker when the next probe is due (see :mod:`daemon.reachability`)."""
        with self._lock:
            return self._reach.wait(self.clock.monotonic())

    def probe_unused(self) -> None:
        """The worker given the probe had nothing to send: let the next one probe."""
        with self._lock:
            if self._reach.probing:
                self._reach.probing = False
                self._reach.next_probe = self.clock.monotonic()

    def unreachable(self, queue: Queue, error: str) -> None:
        """A request could not connect: offline (logged once, shown in status) until a
        request gets an answer."""
        with self._lock:
            started = self._reach.unreachable(self.clock.monotonic(), self.rng)
        if started:
            since = self.clock.now().isoformat()
            queue.set_meta(OFFLINE_KEY, json.dumps({"since": since, "error": error}))
            log.warning("upstream_offline", error=error, note="uploads wait; probing quietly")

    def reachable(self, queue: Queue) -> None:
        """A request got an answer: ends an offline state (logged once) and brings forward what
        waited for the network."""
        with self._lock:
            if not self._reach.offline:
                return
            lasted = self._reach.reachable(self.clock.monotonic())
        if lasted is None:
            return
        queue.set_meta(OFFLINE_KEY, None)
        moved = queue.hurry_waiting(("network",), self.clock.now().timestamp(), RESUME_SPREAD)
        log.info("upstream_online", offline_for=round(lasted, 1), resumed=moved)
        self.changed.set()

    # --- upload windows ---------------------------------------------------------------------

    def window_open(self, queue: Queue) -> bool:
        """Whether uploads may run now by the configured windows; a change is logged once and
        recorded for ``status`` (with when it next changes)."""
        if not self.windows.windows:
            return True
        now = self.clock.now().astimezone(self.zone)
        is_open = self.windows.is_open(now)
        with self._lock:
            changed = is_open != self._window_open
            self._window_open = is_open
        if changed:
            nxt = self.windows.next_change(now)
            record = {
                "open": is_open,
                "windows": self.windows.describe(),
                "next_change": nxt.isoformat() if nxt else None,
            }
            queue.set_meta(WINDOW_KEY, json.dumps(record))
            if is_open:
                log.info(
                    "upload_window_open", windows=record["windows"], closes=record["next_change"]
                )
            else:
                log.info(
                    "upload_window_closed", windows=record["windows"], opens=record["next_change"]
                )
        return is_open

    def pause(self, seconds: float, reason: str) -> None:
        if seconds <= 0:
            return
        with self._lock:
            until = self.clock.monotonic() + seconds
            if until > self._paused_until:
                self._paused_until = until
                self._pause_seconds = seconds
                log.info("upstream_paused", seconds=round(seconds, 1), reason=reason)

    def pause_remaining(self) -> float:
        """Seconds the calling worker (thread) still waits: the pause, then its own share of
        the staggered release (:func:`daemon.retry.release_delay`), so workers come back one
        by one rather than all at once."""
        with self._lock:
            until, seconds = self._paused_until, self._pause_seconds
        if until <= 0:
            return 0.0
        release = until + release_delay(seconds, until, threading.get_ident())
        return max(0.0, release - self.clock.monotonic())

    def check_pause(self) -> None:
        """Raise :class:`UpstreamPaused` while the calling worker must not send: the HTTP
        clients call it before every request, so a pause also stops work already under way."""
        remaining = self.pause_remaining()
        if remaining > 0:
            raise UpstreamPaused(f"upstream paused for {remaining:.1f} s more")

    def load_hold(self, queue: Queue) -> None:
        raw = queue.get_meta(HOLD_KEY)
        self._hold = json.loads(raw) if raw else None

    def hold(self, queue: Queue, reason: str, detail: str, token: str | None) -> None:
        """Stop all uploads until the token changes; logged once."""
        with self._lock:
            if self._hold is not None and self._hold.get("reason") == reason:
                return
            self._hold = {
                "reason": reason,
                "detail": detail,
                "token": fingerprint(token) if token else "",
                "since": self.clock.now().isoformat(),
            }
            queue.set_meta(HOLD_KEY, json.dumps(self._hold))
        log.error("uploads_held", reason=reason, detail=detail)

    def usable_token(self, queue: Queue) -> str | None:
        """The token to use now, or None while uploads are held or paused (``mapillaryd pause``,
        the status page). Lifts a hold the fix resolved."""
        if control.is_paused(queue):
            return None
        token = self.tokens.current()
        with self._lock:
            hold = self._hold
        if token is None:
            self.hold(queue, "no_token", self.tokens.problem, None)
            return None
        if hold is not None:
            if hold.get("token") == fingerprint(token):
                return None
            with self._lock:
                self._hold = None
                queue.set_meta(HOLD_KEY, None)
            log.info("uploads_resumed", why="the token changed")
            self.changed.set()
        return token


class Uploader:
    """One worker's upload loop. Owns its queue connection and HTTP clients."""

    def __init__(
        self,
        queue: Queue,
        endpoints: Endpoints,
        upstream: Upstream,
        clock: Clock,
        policy: Policy,
        owner: str,
        stop: threading.Event,
        *,
        rng: random.Random | None = None,
        wake: threading.Event | None = None,
        spool: Path | None = None,
        video_options: Callable[[str], VideoTrackOptions] | None = None,
        bandwidth: Bandwidth | None = None,
    ) -> None:
        self.queue, self.endpoints, self.upstream = queue, endpoints, upstream
        self.clock, self.policy, self.owner, self.stop = clock, policy, owner, stop
        self.rng = rng or random.Random()
        #: Set by whoever makes work due (a batch cut, an image uploaded); idle workers wait on
        #: it instead of sleeping a whole idle period. Stopping sets it too.
        self.wake = wake or threading.Event()
        self.spool = spool
        #: Where a watch folder's videos take their GPS from (the same as at processing).
        self.video_options = video_options or (lambda _watch: VideoTrackOptions())
        #: The bandwidth limit every worker shares (None: unlimited).
        self.bandwidth = bandwidth
        self._token: str | None = None
        self._upload: UploadService | None = None
        self._graph: GraphClient | None = None
        self._progressed = False  # the item in hand made progress (see _offset)

    def close(self) -> None:
        """Close the HTTP clients; a later request opens new ones (``run`` may be called again
        after a failure: the service restarts a worker that way)."""
        for client in (self._upload, self._graph):
            if client is not None:
                client.close()
        self._upload = self._graph = None
        self._token = None

    def _clients(self, token: str) -> tuple[UploadService, GraphClient]:
        if token != self._token or self._upload is None or self._graph is None:
            self.close()
            e = self.endpoints
            gate = self.upstream.check_pause
            self._upload = UploadService(
                e.upload,
                token,
                clock=self.clock,
                timeout=e.timeout,
                pace=self.bandwidth,
                gate=gate,
            )
            self._graph = GraphClient(
                e.graph, token, clock=self.clock, timeout=e.timeout, gate=gate
            )
            self._token = token
        return self._upload, self._graph

    def now(self) -> float:
        return self.clock.now().timestamp()

    # --- the loop -------------------------------------------------------------------------

    def step(self, *, images: bool = True, sequences: bool = True) -> bool:
        """Do one unit of work if any is due and allowed; return True if something was done."""
        if self.upstream.pause_remaining() > 0:
            return False
        if not self.upstream.window_open(self.queue):
            return False
        token = self.upstream.usable_token(self.queue)
        if token is None:
            return False
        if self.upstream.offline_wait() > 0:
            return False
        if sequences:
            seq = self.queue.claim_sequence(self.owner, self.now())
            if seq is not None:
                self._finish(seq, token)
                return True
        if images:
            item = self.queue.claim_item(self.owner, self.now())
            if item is not None:
                self._upload_item(item, token)
                return True
        self.upstream.probe_unused()
        return False

    def run(self, *, images: bool = True, sequences: bool = True, idle: float = 0.5) -> None:
        """Work until ``stop`` is set; sleep up to ``idle`` seconds when nothing is due."""
        try:
            while not self.stop.is_set():
                if not self.step(images=images, sequences=sequences):
                    wait = min(idle, self.upstream.pause_remaining() or idle)
                    self.wake.wait(max(0.05, wait))
                    self.wake.clear()
        finally:
            self.close()

    # --- one image ------------------------------------------------------------------------

    def _upload_item(self, item: Item, token: str) -> None:
        """Upload one claimed image or video and record its handle, or why not (the file is
        gone: wait for it; it is unusable: reject it; the exchange failed: retry or hold)."""
        self._progressed = False
        if not self._on_its_volume(item):
            self._wait_for_source(item, _SWAPPED)
            return
        try:
            if item.kind == "video":
                key, handle, offset = self._send_video(item, token)
            else:
                key, handle, offset = self._send_image(item, token)
        except OSError as exc:  # ENOENT, or EIO/ENODEV when a card is pulled mid-read
            self._wait_for_source(item, exc)
            return
        except ItemError as exc:
            if exc.reason == "source_changed" and not self._on_its_volume(item):
                self._wait_for_source(item, _SWAPPED)  # swapped while it was being read
                return
            self.queue.item_failed(
                item.id, Verdict(ItemState.REJECTED, exc.reason, str(exc)), self.now()
            )
            log.warning("rejected_at_upload", item=item.id, reason=exc.reason, detail=str(exc))
            return
        except UpstreamPaused:
            self.queue.release_item(item.id, self.now())
            return
        except UploadError as exc:
            self._retry_or_give_up_item(item, exc, token)
            return
        self.upstream.reachable(self.queue)
        self.queue.item_uploaded(item.id, key, handle, self.now())
        self.wake.set()  # its sequence may now be ready to finish
        log.debug("uploaded", item=item.id, session_key=key, resumed_at=offset or None)

    def _on_its_volume(self, item: Item) -> bool:
        """False when the item's bytes are read where they were found (not a spool copy) and
        the volume now at its watch folder is not the one they were found on: another card
        with the same file names is in the slot (see daemon/volumes.py)."""
        if item.wait_volume is None or (
            self.spool is not None and spool.is_in_spool(self.spool, item.data_path)
        ):
            return True
        return item.wait_volume in volumes.identities(Path(item.watch))

    def _send_image(self, item: Item, token: str) -> tuple[str, str, int]:
        payload = prepare_image(item)
        key = payload.key
        service, _ = self._clients(token)
        offset = self._offset(service, item, key)
        handle = self._send_tracked(service, item, key, payload.data, len(payload.data), offset)
        return key, handle, offset

    def _send_video(self, item: Item, token: str) -> tuple[str, str, int]:
        """Stream the video as the CAMM MP4 Mapillary expects, straight from the source file:
        no temporary copy, so memory stays flat whatever the size. The session key is the
        md5 of that stream (one read pass), so a resumed upload continues the same session.
        A clip of a trimmed video streams only its window (same source, same window: same
        bytes, same session)."""
        # Imported with the first video, not at the top: the video stack slows the daemon's start.
        from daemon.media.camm_mp4 import CammStream, md5_of, plan_camm_clip, plan_camm_mp4
        from daemon.video_track import read_track

        name = os.path.basename(item.source_path)
        with open(item.data_path, "rb") as source:
            vt = read_track(source, item.data_path, self.video_options(item.watch))
            if item.clip is not None:
                start, end = item.clip
                plan = plan_camm_clip(
                    source, name, vt.timed, start, end, info=vt.info, make=vt.make, model=vt.model
                )
            else:
                plan = plan_camm_mp4(
                    source, name, vt.timed, info=vt.info, make=vt.make, model=vt.model
                )
            stream = CammStream(plan, source)
            key = session_key(md5_of(stream), ".mp4")
            service, _ = self._clients(token)
            offset = self._offset(service, item, key)
            handle = self._send_tracked(service, item, key, stream, stream.size, offset)
            return key, handle, offset

    def _offset(self, service: UploadService, item: Item, key: str) -> int:
        """Where to send ``key`` from: where the last answered failure left it, else where the
        server says. An offset larger than at the item's last attempt is progress: its attempt
        count starts again, so its backoff is short again."""
        known = self.upstream.sessions.known_offset(key)
        if known is not None:
            return known
        offset = service.fetch_offset(key)
        if self.upstream.sessions.fetched(key, offset) and item.attempts:
            self.queue.reset_attempts(item.id)
            self._progressed = True
        return offset

    def _send_tracked(
        self,
        service: UploadService,
        item: Item,
        key: str,
        source: BinaryIO | Buffers,
        size: int,
        offset: int,
    ) -> str:
        """``service.upload``, its bytes sent reported to the status page's progress registry."""
        PROGRESS.begin(item.id, item.source_path, item.kind, size, offset)
        try:
            return self._post(
                service, key, source, offset, lambda pos: PROGRESS.advance(item.id, pos)
            )
        finally:
            PROGRESS.end(item.id)

    def _post(
        self,
        service: UploadService,
        key: str,
        source: BinaryIO | Buffers,
        offset: int,
        on_progress: Callable[[int], None] | None = None,
    ) -> str:
        """``service.upload``, with what its outcome says about the session remembered (see
        :mod:`daemon.resume`)."""
        try:
            handle = service.upload(key, source, offset, on_progress)
        except UpstreamPaused:
            self.upstream.sessions.unsent(key, offset)  # the server's offset still holds
            raise
        except UploadError as exc:
            self.upstream.sessions.refused(key, offset, exc.status)
            raise
        self.upstream.sessions.finished(key)
        return handle

    def _wait_for_source(self, item: Item, exc: OSError) -> None:
        """The file is gone or unreadable (card pulled, drop folder emptied): the item waits
        for the volume it was found on (``source_missing``), never fails; the service queues
        it again when that volume and the file are back."""
        why = exc.strerror or type(exc).__name__
        self.queue.item_source_missing(
            item.id, f"{item.data_path}: {why}; waiting for it to come back", self.now()
        )
        log.warning("source_missing", item=item.id, data_path=item.data_path, error=why)

    def _retry_or_give_up_item(self, item: Item, exc: UploadError, token: str) -> None:
        self._failed(
            exc,
            0 if self._progressed else item.attempts,
            token,
            retry=lambda at, reason, detail: self.queue.item_retry(
                item.id, at, reason, detail, self.now()
            ),
            give_up=lambda reason, detail: self.queue.item_failed(
                item.id, Verdict(ItemState.FAILED, reason, detail), self.now()
            ),
            release=lambda: self.queue.release_item(item.id, self.now()),
        )

    # --- one sequence ---------------------------------------------------------------------

    def _finish(self, seq: SequenceRow, token: str) -> None:
        service, graph = self._clients(token)
        try:
            video = self.queue.video_handle(seq.id)
            if video is not None:
                cluster = graph.finish_upload(
                    video, VIDEO_FILE_TYPE, self.endpoints.organization_id
                )
                self.queue.sequence_done(seq.id, cluster, self.now())
                log.info("video_sequence_uploaded", sequence=seq.id, cluster_id=cluster)
                return
            handle = seq.manifest_handle
            if handle is None:
                manifest = manifest_bytes(self.queue.image_handles(seq.id))
                key = session_key(hashlib.md5(manifest).hexdigest(), ".json")
                offset = self.upstream.sessions.known_offset(key)
                if offset is None:
                    offset = service.fetch_offset(key)
                handle = self._post(service, key, Buffers(manifest), offset)
                self.queue.manifest_uploaded(seq.id, key, handle, self.now())
            cluster = graph.finish_upload(
                handle, MANIFEST_FILE_TYPE, self.endpoints.organization_id
            )
        except UpstreamPaused:
            self.queue.release_sequence(seq.id)
            return
        except UploadError as exc:
            self._failed(
                exc,
                seq.attempts,
                token,
                retry=lambda at, reason, detail: self.queue.sequence_retry(
                    seq.id, at, reason, detail, self.now()
                ),
                give_up=lambda reason, detail: self.queue.sequence_failed(
                    seq.id, Verdict(ItemState.FAILED, reason, detail), self.now()
                ),
                release=lambda: self.queue.release_sequence(seq.id),
            )
            return
        self.upstream.reachable(self.queue)
        self.queue.sequence_done(seq.id, cluster, self.now())
        if self.spool is not None:
            spool.release(self.spool, self.queue.data_paths(seq.id))
        log.info("sequence_uploaded", sequence=seq.id, images=seq.image_count, cluster_id=cluster)

    # --- failures -------------------------------------------------------------------------

    def _failed(
        self,
        exc: UploadError,
        attempts: int,
        token: str,
        *,
        retry: Callable[[float, str, str], None],
        give_up: Callable[[str, str], None],
        release: Callable[[], None],
    ) -> None:
        decision = decide(exc, attempts, self.policy, self.rng)
        if isinstance(exc, TransportError) and exc.unreachable:
            self.upstream.unreachable(self.queue, str(exc))
        elif not isinstance(exc, TransportError):
            self.upstream.reachable(self.queue)  # the server answered, if not as hoped
        if decision.action is Action.HOLD_AUTH:
            release()
            self.upstream.hold(
                self.queue, "auth_rejected", f"Mapillary rejected the token: {exc}", token
            )
        elif decision.action is Action.RETRY:
            # Pause the others first: the row's durable write takes a while.
            self.upstream.pause(decision.upstream_wait, decision.reason)
            retry(self.now() + decision.delay, decision.reason, str(exc))
            # Offline is one state, logged when it starts and ends, not once per file.
            quiet = self.upstream.offline and decision.reason == "network"
            (log.debug if quiet else log.info)(
                "upload_retry_scheduled",
                reason=decision.reason,
                delay=round(decision.delay, 1),
                attempts=attempts + 1,
                error=str(exc),
            )
        else:
            give_up(decision.reason, str(exc))
            log.warning("upload_rejected", reason=decision.reason, error=str(exc))


_SWAPPED = FileNotFoundError(errno.ENOENT, "another card is in its place")


@dataclass(frozen=True)
class ImagePayload:
    """An image ready to go: the bytes to upload and the session key that names them."""

    data: Buffers
    key: str


def image_session_key(sha256_hex: str, splice: Splice) -> str:
    """The session key of the queued JPEG whose sha256 is ``sha256_hex`` changed by ``splice``.

    ``mly_tools_<32 hex>.jpg``, the hex being the first 128 bits of a sha256 over the content
    hash and the splice (start, end, new segment). The uploaded bytes are a function of exactly
    those, so one key always names the same bytes — also across a mapillaryd upgrade that
    writes the EXIF differently (another segment, another key) — and a resumed session is
    continued with the bytes it began with. mapillary_tools names a photo by the md5 of the
    uploaded bytes, a second pass over every photo (~3 ms of CPU per 2 MB); the service takes
    the key as an opaque name (mapillary_tools' ``--noresume`` keys are uuids).
    """
    digest = hashlib.sha256(f"jpeg-splice:{sha256_hex}:{splice.start}:{splice.end}:".encode())
    digest.update(splice.segment)
    return session_key(digest.hexdigest()[:32], ".jpg")


def prepare_image(item: Item) -> ImagePayload:
    """The bytes to upload for ``item`` — its JPEG with the description in ImageDescription —
    and their session key (:func:`image_session_key`).

    Raise FileNotFoundError if the queued copy is gone, :class:`ItemError` if it is no longer
    the content that was ingested or its EXIF cannot be rewritten.
    """
    with open(item.data_path, "rb") as fh:
        data = fh.read()
    if hashlib.sha256(data).hexdigest() != item.sha256:
        raise ItemError(
            f"{item.source_path}: the file changed after it was queued", reason="source_changed"
        )
    assert item.capture_time is not None and item.lat is not None and item.lon is not None
    meta = ImageMetadata(
        capture_time=datetime.fromisoformat(item.capture_time),
        lat=item.lat,
        lon=item.lon,
        alt=item.alt,
        heading=item.heading,
        make=item.make,
        model=item.model,
        width=item.width,
        height=item.height,
        orientation=item.orientation,
        gps_time_used=False,
    )
    desc = image_description(
        meta,
        filename=item.source_path,
        md5sum=None,
        filesize=None,
        sequence_id=item.sequence_id,
    )
    splice = description_splice(data, exif_description(desc), os.path.basename(item.source_path))
    return ImagePayload(Buffers(*splice.parts(data)), image_session_key(item.sha256, splice))


def manifest_bytes(handles: list[str]) -> bytes:
    """The image-bundle manifest, as mapillary_tools writes it (sorted keys, no spaces)."""
    doc = {"image_handles": handles, "upload_type": "images", "version": "1"}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
