"""The archive's HTTP side: Graph API reads and CDN downloads, throttled and retried.

Every Graph request waits for the shared :class:`Throttle` (a steady pace below Mapillary's
limits; a 429 pushes every thread back by its ``Retry-After``). Transient failures (no answer,
5xx, 429, a garbled 2xx) are retried with full-jitter backoff up to ``retries`` times; a
rejected token (401/403, Graph code 190) raises :class:`~daemon.errors.AuthError` at once, never
retried. CDN GETs carry no token (the CDN is another host); an expired signature is
:class:`UrlExpired`, which the caller answers by asking the Graph API for a fresh URL.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

import httpx

from daemon import errors
from daemon.clock import Clock
from daemon.mapillary.http import USER_AGENT, JsonHttp
from daemon.retry import Action, Policy, decide

RETRY_POLICY = Policy(base=0.5, cap=30.0, max_retry_after=120.0)


class UrlExpired(Exception):
    """The CDN refused a signed URL (expired or bad signature): fetch a fresh one."""


class GraphError(Exception):
    """The Graph API refused a request for good (a 4xx other than auth and rate limits)."""


class Throttle:
    """At most ``rate`` requests per second across threads, slowed by the server's answers.

    A steady pace (one slot every ``1/rate`` s), never faster than configured. A 429 halves
    the pace and pauses everyone for its ``Retry-After``; each success then speeds up by 1 %
    back towards ``rate`` (additive-increase would take minutes at these rates).
    """

    MIN_RATE = 0.5

    def __init__(self, rate: float, clock: Clock) -> None:
        self._min_interval = 1.0 / rate
        self._max_interval = 1.0 / min(rate, self.MIN_RATE)
        self._interval = self._min_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._next = 0.0

    @property
    def rate(self) -> float:
        return 1.0 / self._interval

    def reserve(self) -> float:
        """Take the next slot; return the seconds to wait before using it."""
        with self._lock:
            now = self._clock.monotonic()
            slot = max(now, self._next)
            self._next = slot + self._interval
            return slot - now

    def acquire(self) -> None:
        wait = self.reserve()
        if wait > 0:
            self._clock.sleep(wait)

    def succeeded(self) -> None:
        with self._lock:
            self._interval = max(self._min_interval, self._interval * 0.99)

    def rate_limited(self, pause: float) -> None:
        """The server said 429: half the pace, and nobody sends for ``pause`` seconds."""
        with self._lock:
            self._interval = min(self._max_interval, self._interval * 2)
            self._next = max(self._next, self._clock.monotonic() + pause)


class ArchiveClient:
    """Graph API and CDN calls for one token."""

    def __init__(
        self,
        graph_endpoint: str,
        token: str,
        *,
        clock: Clock,
        throttle: Throttle,
        retries: int = 5,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        should_stop: Callable[[], bool] = lambda: False,
        rng: random.Random | None = None,
    ) -> None:
        self.endpoint = graph_endpoint.rstrip("/")
        self._http = JsonHttp(token, clock=clock, timeout=timeout, transport=transport)
        self._cdn = httpx.Client(
            headers={"User-Agent": USER_AGENT},
            timeout=httpx.Timeout(timeout),
            transport=transport,
            follow_redirects=True,
        )
        self._clock = clock
        self._throttle = throttle
        self._retries = retries
        self._stop = should_stop
        self._rng = rng or random.Random()
        self.requests = 0
        self.rate_limited = 0

    def close(self) -> None:
        self._http.close()
        self._cdn.close()

    def _retrying(self, what: str, call: Callable[[], Any], throttled: bool = True) -> Any:
        attempts = 0
        while True:
            if self._stop():
                raise errors.TransportError(f"{what}: stopped")
            if throttled:
                self._throttle.acquire()
            self.requests += 1
            try:
                answer = call()
            except errors.UploadError as exc:
                decision = decide(exc, attempts, RETRY_POLICY, self._rng)
                if decision.action is Action.HOLD_AUTH:
                    raise errors.AuthError(str(exc), status=exc.status) from exc
                if decision.action is Action.REJECT:
                    raise GraphError(str(exc)) from exc
                if decision.reason == "rate_limited":
                    self._throttle.rate_limited(decision.upstream_wait)
                    self.rate_limited += 1
                attempts += 1
                if attempts > self._retries:
                    raise
                self._clock.sleep(decision.delay)
                continue
            if throttled:
                self._throttle.succeeded()
            return answer

    def get(self, path_or_url: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        """A Graph GET (a path under the endpoint, or a ``paging.next`` URL as it is)."""
        url = path_or_url if "://" in path_or_url else f"{self.endpoint}/{path_or_url}"
        reply = self._retrying(
            f"GET {httpx.URL(url).path}", lambda: self._http.call("GET", url, params=params)
        )
        payload: dict[str, Any] = reply.payload
        return payload

    def me(self) -> str:
        """The token owner's username."""
        payload = self.get("me", {"fields": "id,username"})
        username = payload.get("username")
        if not isinstance(username, str) or not username:
            raise GraphError("GET /me: no username in the answer")
        return username

    def list_page(
        self, next_url: str | None, username: str, fields: list[str], limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of the user's images and the URL of the next (None after the last)."""
        if next_url:
            payload = self.get(next_url)
        else:
            params = {"creator_username": username, "fields": ",".join(fields), "limit": str(limit)}
            payload = self.get("images", params)
        data = payload.get("data")
        if not isinstance(data, list):
            raise errors.ProtocolError("GET /images: no data list in the answer")
        paging = payload.get("paging")
        nxt = paging.get("next") if isinstance(paging, dict) else None
        return [d for d in data if isinstance(d, dict)], nxt if isinstance(nxt, str) else None

    def search(self, params: dict[str, str]) -> list[dict[str, Any]]:
        """``GET /images`` with search parameters that do not page (bbox, image_ids…)."""
        data = self.get("images", params).get("data")
        return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []

    def image(self, image_id: str, fields: list[str]) -> dict[str, Any]:
        return self.get(image_id, {"fields": ",".join(fields)})

    def image_ids(self, sequence_id: str) -> list[str]:
        data = self.get("image_ids", {"sequence_id": sequence_id}).get("data")
        if not isinstance(data, list):
            return []
        return [str(d["id"]) for d in data if isinstance(d, dict) and "id" in d]

    def fetch(self, url: str) -> bytes:
        """The bytes behind a signed CDN URL. Raise UrlExpired on 403/410, GraphError on 404,
        TransportError when the CDN did not answer usefully after the retries."""

        def once() -> bytes:
            try:
                response = self._cdn.get(url)
            except httpx.HTTPError as exc:
                raise errors.TransportError(f"CDN: {type(exc).__name__}: {exc}") from exc
            if response.status_code in (403, 410):
                raise UrlExpired(response.text[:80])
            if response.status_code == 404:
                raise GraphError("CDN: 404, the image is gone")
            if response.status_code != 200:
                raise errors.UploadError(
                    f"CDN → {response.status_code}", status=response.status_code
                )
            return response.content

        data: bytes = self._retrying("CDN GET", once, throttled=False)
        return data
