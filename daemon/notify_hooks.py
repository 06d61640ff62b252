"""Optional pings to the outside: a webhook when something needs a person, and a heartbeat URL
pinged while the daemon is healthy (healthchecks.io style: silence means trouble).

Deciding is pure (:class:`HookPlanner`): given the queue's health at a monotonic time, it says
which request to send, rate-limited — at most one webhook per
``webhook_min_interval_seconds`` (what happened meanwhile is summed into the next one), one
heartbeat per ``heartbeat_interval_seconds``, none while uploads are held. Sending is done by
:class:`HookSender` on its own thread, so a slow or dead endpoint never stalls the main loop;
failures are logged as warnings and never retried in a storm.
"""

from __future__ import annotations

import json
import queue as queue_mod
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import httpx
import structlog

from daemon import __version__
from daemon.config import NotifyConfig
from daemon.store.queue import Queue
from daemon.upload import HOLD_KEY

log = structlog.get_logger(__name__)

#: Item states that need a person to look.
ATTENTION_STATES = ("rejected", "quarantined", "failed")
SEND_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Health:
    """The queue as the hooks see it."""

    hold_reason: str | None = None
    hold_detail: str = ""
    attention: Mapping[str, int] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return self.hold_reason is None


@dataclass(frozen=True)
class HookRequest:
    kind: str  # "webhook" or "heartbeat"
    method: str
    url: str
    body: dict[str, object] | None = None


class HookPlanner:
    """Turns health readings into rate-limited requests (pure: no I/O, time passed in)."""

    def __init__(self, cfg: NotifyConfig) -> None:
        self.cfg = cfg
        self._next_webhook = float("-inf")
        self._next_heartbeat = float("-inf")
        self._announced_hold: str | None = None
        self._reported: dict[str, int] | None = None
        self._pending: list[str] = []

    def plan(self, mono: float, health: Health) -> list[HookRequest]:
        """The requests due at ``mono`` given ``health``."""
        out = []
        self._note_news(health)
        if self.cfg.webhook_url and self._pending and mono >= self._next_webhook:
            out.append(
                HookRequest(
                    "webhook",
                    "POST",
                    self.cfg.webhook_url,
                    {
                        "source": "mapillaryd",
                        "version": __version__,
                        "events": list(self._pending),
                        "hold": (
                            {"reason": health.hold_reason, "detail": health.hold_detail}
                            if health.hold_reason
                            else None
                        ),
                        "needs_attention": dict(health.attention),
                    },
                )
            )
            self._pending = []
            self._next_webhook = mono + self.cfg.webhook_min_interval_seconds
        if self.cfg.heartbeat_url and health.healthy and mono >= self._next_heartbeat:
            out.append(HookRequest("heartbeat", "GET", self.cfg.heartbeat_url))
            self._next_heartbeat = mono + self.cfg.heartbeat_interval_seconds
        return out

    def _note_news(self, health: Health) -> None:
        if health.hold_reason != self._announced_hold:
            if health.hold_reason is not None:
                self._pending.append(f"uploads held: {health.hold_reason}")
            self._announced_hold = health.hold_reason
        current = dict(health.attention)
        if self._reported is None:
            # What was already there at start-up was announced before a restart, or is old.
            self._reported = current
            return
        for state, n in current.items():
            grown = n - self._reported.get(state, 0)
            if grown > 0:
                self._pending.append(f"{grown} more {state}")
        self._reported = current


def health_of(queue: Queue) -> Health:
    """The queue's :class:`Health` now."""
    raw = queue.get_meta(HOLD_KEY)
    hold = json.loads(raw) if raw else {}
    counts = queue.counts()
    return Health(
        hold.get("reason"),
        hold.get("detail", ""),
        {s: counts.get(s, 0) for s in ATTENTION_STATES},
    )


Transport = Callable[[HookRequest], int]


def _http_send(request: HookRequest) -> int:
    with httpx.Client(timeout=SEND_TIMEOUT_SECONDS, follow_redirects=True) as client:
        response = client.request(
            request.method,
            request.url,
            json=request.body,
            headers={"User-Agent": f"mapillaryd/{__version__}"},
        )
        return response.status_code


class HookSender:
    """Sends hook requests one at a time on a daemon thread; a full backlog drops the newest
    (a dead endpoint must not grow memory)."""

    def __init__(self, transport: Transport = _http_send, backlog: int = 16) -> None:
        self._transport = transport
        self._queue: queue_mod.Queue[HookRequest | None] = queue_mod.Queue(backlog)
        self._thread = threading.Thread(target=self._loop, name="notify-hooks", daemon=True)
        self._thread.start()

    def submit(self, request: HookRequest) -> None:
        try:
            self._queue.put_nowait(request)
        except queue_mod.Full:
            log.warning("hook_dropped", kind=request.kind, why="backlog full")

    def close(self, timeout: float = 5.0) -> None:
        # The stop marker must get in even when the backlog is full.
        with self._queue.mutex:
            self._queue.queue.clear()
        self._queue.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while (request := self._queue.get()) is not None:
            try:
                status = self._transport(request)
            except (httpx.HTTPError, OSError) as exc:
                log.warning("hook_failed", kind=request.kind, error=str(exc))
                continue
            if status >= 400:
                log.warning("hook_refused", kind=request.kind, status=status)
            else:
                log.info("hook_sent", kind=request.kind, status=status)


class Hooks:
    """What the service calls once per tick: reads the health at most every ``every`` seconds
    and hands due requests to the sender. A no-op when neither URL is configured."""

    def __init__(
        self, cfg: NotifyConfig, sender: HookSender | None = None, every: float = 5.0
    ) -> None:
        self.enabled = bool(cfg.webhook_url or cfg.heartbeat_url)
        self.planner = HookPlanner(cfg)
        self.every = every
        self._sender = sender if sender is not None or not self.enabled else HookSender()
        self._next = float("-inf")

    def tick(self, mono: float, health: Callable[[], Health]) -> None:
        if not self.enabled or mono < self._next:
            return
        self._next = mono + self.every
        try:
            now = health()
        except Exception as exc:  # a busy or broken queue: try again at the next reading
            log.warning("hook_health_unavailable", error=str(exc))
            return
        for request in self.planner.plan(mono, now):
            assert self._sender is not None
            self._sender.submit(request)

    def close(self) -> None:
        if self._sender is not None:
            self._sender.close()
