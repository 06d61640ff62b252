"""Fault injection for the sandbox: what a flaky Mapillary and a flaky road do to a client.

A :class:`FaultInjector` is the sandbox's fault hook (:attr:`daemon.sandbox.app.SandboxApp.faults`)
driven by a :class:`FaultSpec`, read from JSON or TOML (``mapillaryd sandbox --faults SPEC``,
``POST /_sandbox/faults`` at run time). Per request, the first :class:`Rule` whose ``routes``
match (``fnmatch`` patterns over route names such as ``"POST /upload/{session_key}"``, or over
``METHOD /path`` such as ``"GET /upload/mly_tools_*.json"``) may:

* answer a **5xx** (``server_error``; optionally with ``Retry-After``);
* answer **429** (``rate_limit``) with the wait in one of three forms, cycling through
  ``retry_after_forms``: ``Retry-After: <seconds>``, ``Retry-After: <HTTP-date>`` (to be read
  against the answer's ``Date``), or the upload service's JSON ``backoff`` in milliseconds;
* answer **401/403** (``auth``), as a revoked token would;
* **cut the body** part-way (``cut``): the bytes before the cut are stored, then the connection
  is closed without an answer;
* **lose the response** (``lost_response``): the route does its work (bytes stored, cluster
  made), then the connection is closed without an answer;
* be **slow** (``slow``: ``slow_seconds`` before the route runs);
* make an incomplete session **go backwards** (``offset_regress``): before a ``GET``/``POST`` of a
  session that holds bytes, the server loses its tail (keeps a random part of it) or, for
  ``expire_share`` of those, the whole session (offset 0) — mapillary_tools issue #569.

Spec-wide: ``revoked`` (every authenticated route answers ``revoked_status``), an ``outage``
window (``start``/``duration`` seconds after the spec was applied; answered with ``status`` or,
with ``status = 0``, by dropping connections), and ``bandwidth`` (bytes/s shared by every request
body).

Reproducible: a request's fate is drawn from ``seed``, its route, its session key and how many
requests of that route and key came before, so it does not depend on how threads interleave.

Every ``Retry-After`` given is remembered per client token; a request from that token arriving
inside the window is a **Retry-After violation** (answered 429 again). A request on *another*
connection arriving within ``retry_after_grace`` seconds of the answer was already under way
when the client heard it; it is counted apart as an overlap. :meth:`FaultInjector.snapshot`
(``faults`` in ``GET /_sandbox/stats``) reports every count.
"""

from __future__ import annotations

import fnmatch
import json
import math
import random
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from datetime import timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from daemon.clock import SYSTEM_CLOCK, Clock
from daemon.errors import ConfigError
from daemon.sandbox.app import Disconnect, Request
from daemon.sandbox.body import BodyCut
from daemon.sandbox.replies import Reply, auth_failed, graph_error, json_reply

RETRY_AFTER_FORMS = ("seconds", "date", "backoff")
SANDBOX_PREFIX = "/_sandbox/"
_BODY_ROUTES = frozenset({"POST /upload/{session_key}"})  # the bodies a cut applies to
_SESSION_ROUTES = frozenset({"GET /upload/{session_key}", "POST /upload/{session_key}"})


class FaultSpecError(ConfigError):
    """A fault spec that cannot be used; ``problems`` name each key path and what is wrong."""


@dataclass(frozen=True)
class Rule:
    """Fault rates (0…1, per request) for the routes matching ``routes``."""

    routes: tuple[str, ...] = ("*",)
    server_error: float = 0.0
    server_error_statuses: tuple[int, ...] = (500, 502, 503)
    #: Seconds of ``Retry-After`` sent with a 5xx; 0 sends none.
    server_error_retry_after: float = 0.0
    rate_limit: float = 0.0
    #: The wait a 429 asks for, in seconds (the date form rounds it up to a whole second).
    retry_after: float = 1.0
    retry_after_forms: tuple[str, ...] = RETRY_AFTER_FORMS
    auth: float = 0.0
    auth_status: int = 401
    cut: float = 0.0
    #: Without a Content-Length, the cut falls uniformly within this many bytes (or the last piece).
    cut_span: int = 4 << 20
    lost_response: float = 0.0
    slow: float = 0.0
    slow_seconds: float = 1.0
    offset_regress: float = 0.0
    expire_share: float = 0.5

    def matches(self, route: str, target: str = "") -> bool:
        """Whether a pattern matches the route name or the request's ``METHOD /path``."""
        return any(
            fnmatch.fnmatchcase(route, p) or (target and fnmatch.fnmatchcase(target, p))
            for p in self.routes
        )


@dataclass(frozen=True)
class Outage:
    """Every faultable request fails from ``start`` to ``start + duration`` seconds after the
    spec was applied: answered with ``status``, or dropped unanswered when ``status`` is 0."""

    start: float = 0.0
    duration: float = 0.0
    status: int = 503


@dataclass(frozen=True)
class FaultSpec:
    """A whole fault configuration; the empty spec injects nothing."""

    seed: int = 0
    rules: tuple[Rule, ...] = ()
    revoked: bool = False
    revoked_status: int = 401
    outage: Outage | None = None
    #: Bytes per second, shared by every request body; 0 means unlimited.
    bandwidth: int = 0
    retry_after_grace: float = 0.2

    def rule_for(self, route: str, target: str = "") -> Rule | None:
        """The first rule matching the route name or ``target`` (``METHOD /path``)."""
        return next((r for r in self.rules if r.matches(route, target)), None)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


# --- parsing -----------------------------------------------------------------------------------


def load_spec(arg: str) -> FaultSpec:
    """The spec in ``arg``: a path to a ``.json``/``.toml`` file, or the JSON/TOML text itself.

    Raises :class:`FaultSpecError` naming the file (or ``--faults``) and every bad key.
    """
    path = Path(arg)
    if len(arg) < 4096 and "\n" not in arg and not arg.lstrip().startswith("{") and path.is_file():
        try:
            return parse_spec(path.read_text(encoding="utf-8"), str(path))
        except (OSError, UnicodeDecodeError) as exc:
            raise FaultSpecError(str(path), [f"cannot read: {exc}"]) from exc
    return parse_spec(arg, "--faults")


def parse_spec(text: str, source: str) -> FaultSpec:
    """A :class:`FaultSpec` from JSON (text starting with ``{``) or TOML."""
    try:
        raw: Any = json.loads(text) if text.lstrip().startswith("{") else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise FaultSpecError(source, [f"not valid JSON or TOML: {exc}"]) from exc
    problems: list[str] = []
    spec = _spec(raw, problems)
    if problems:
        raise FaultSpecError(source, problems)
    return spec


def _spec(raw: Any, problems: list[str]) -> FaultSpec:
    if not isinstance(raw, dict):
        problems.append("the spec must be a table (JSON object)")
        return FaultSpec()
    rules_raw = raw.get("rules", raw.get("rule", []))
    if isinstance(rules_raw, dict):
        rules_raw = [rules_raw]
    if not isinstance(rules_raw, list):
        problems.append("rules: must be a list of tables")
        rules_raw = []
    rules = tuple(_rule(r, f"rules[{i}]", problems) for i, r in enumerate(rules_raw))
    known = {f.name for f in fields(FaultSpec)} | {"rule"}
    _unknown(raw, known, "", problems)
    outage = None
    if raw.get("outage") is not None:
        outage = _outage(raw["outage"], problems)
    return FaultSpec(
        seed=_int(raw, "seed", 0, "", problems, low=None),
        rules=rules,
        revoked=_bool(raw, "revoked", False, "", problems),
        revoked_status=_status(raw, "revoked_status", 401, "", problems, (401, 403)),
        outage=outage,
        bandwidth=_int(raw, "bandwidth", 0, "", problems, low=0),
        retry_after_grace=_num(raw, "retry_after_grace", 0.2, "", problems, high=60.0),
    )


def _rule(raw: Any, at: str, problems: list[str]) -> Rule:
    if not isinstance(raw, dict):
        problems.append(f"{at}: must be a table")
        return Rule()
    _unknown(raw, {f.name for f in fields(Rule)}, at + ".", problems)
    p = at + "."
    routes = raw.get("routes", ["*"])
    if isinstance(routes, str):
        routes = [routes]
    if not isinstance(routes, list) or not all(isinstance(r, str) and r for r in routes):
        problems.append(f"{p}routes: must be a list of route patterns")
        routes = ["*"]
    statuses = raw.get("server_error_statuses", [500, 502, 503])
    if not (
        isinstance(statuses, list)
        and statuses
        and all(isinstance(s, int) and 500 <= s <= 599 for s in statuses)
    ):
        problems.append(f"{p}server_error_statuses: must be a list of 5xx statuses")
        statuses = [500]
    forms = raw.get("retry_after_forms", list(RETRY_AFTER_FORMS))
    if isinstance(forms, str):
        forms = [forms]
    if not (isinstance(forms, list) and forms and all(f in RETRY_AFTER_FORMS for f in forms)):
        problems.append(f"{p}retry_after_forms: must be a list of {', '.join(RETRY_AFTER_FORMS)}")
        forms = list(RETRY_AFTER_FORMS)
    rates = {
        name: _num(raw, name, 0.0, p, problems, high=1.0)
        for name in ("server_error", "rate_limit", "auth", "cut", "lost_response")
    }
    if sum(rates.values()) > 1.0 + 1e-9:
        problems.append(
            f"{p}server_error + rate_limit + auth + cut + lost_response: must add up to at most 1"
        )
    return Rule(
        routes=tuple(routes),
        server_error_statuses=tuple(statuses),
        server_error_retry_after=_num(raw, "server_error_retry_after", 0.0, p, problems),
        retry_after=_num(raw, "retry_after", 1.0, p, problems),
        retry_after_forms=tuple(forms),
        auth_status=_status(raw, "auth_status", 401, p, problems, (401, 403)),
        cut_span=_int(raw, "cut_span", 4 << 20, p, problems, low=1),
        slow=_num(raw, "slow", 0.0, p, problems, high=1.0),
        slow_seconds=_num(raw, "slow_seconds", 1.0, p, problems, high=600.0),
        offset_regress=_num(raw, "offset_regress", 0.0, p, problems, high=1.0),
        expire_share=_num(raw, "expire_share", 0.5, p, problems, high=1.0),
        **rates,
    )


def _outage(raw: Any, problems: list[str]) -> Outage | None:
    if not isinstance(raw, dict):
        problems.append("outage: must be a table")
        return None
    _unknown(raw, {f.name for f in fields(Outage)}, "outage.", problems)
    status = _int(raw, "status", 503, "outage.", problems, low=0)
    if status != 0 and not 500 <= status <= 599:
        problems.append("outage.status: must be a 5xx status, or 0 to drop connections")
    return Outage(
        start=_num(raw, "start", 0.0, "outage.", problems),
        duration=_num(raw, "duration", 0.0, "outage.", problems),
        status=status,
    )


def _unknown(raw: dict[str, Any], known: set[str], prefix: str, problems: list[str]) -> None:
    for key in sorted(set(raw) - known):
        problems.append(f"{prefix}{key}: unknown key (known: {', '.join(sorted(known))})")


def _num(
    raw: dict[str, Any],
    key: str,
    default: float,
    prefix: str,
    problems: list[str],
    *,
    high: float = 86400.0,
) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        problems.append(f"{prefix}{key}: must be a number")
        return default
    if not 0 <= value <= high:
        problems.append(f"{prefix}{key}: must be between 0 and {high:g}")
        return default
    return float(value)


def _int(
    raw: dict[str, Any],
    key: str,
    default: int,
    prefix: str,
    problems: list[str],
    *,
    low: int | None,
) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        problems.append(f"{prefix}{key}: must be an integer")
        return default
    if low is not None and value < low:
        problems.append(f"{prefix}{key}: must be at least {low}")
        return default
    return value


def _bool(raw: dict[str, Any], key: str, default: bool, prefix: str, problems: list[str]) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        problems.append(f"{prefix}{key}: must be true or false")
        return default
    return value


def _status(
    raw: dict[str, Any],
    key: str,
    default: int,
    prefix: str,
    problems: list[str],
    allowed: tuple[int, ...],
) -> int:
    value = raw.get(key, default)
    if value not in allowed or isinstance(value, bool):
        problems.append(f"{prefix}{key}: must be one of {', '.join(map(str, allowed))}")
        return default
    return int(value)


# --- decisions (pure) --------------------------------------------------------------------------


@dataclass(frozen=True)
class Fate:
    """What happens to one request. ``kind`` is None (no fault) or one of the rule's fault names;
    the other fields are the drawn details."""

    kind: str | None
    slow: bool = False
    status: int = 0
    form: str = "seconds"
    cut_fraction: float = 0.5
    cut_at: int = 0
    regress: bool = False
    expire: bool = False
    keep_fraction: float = 0.0


def draw(seed: int, route: str, key: str, nth: int, rule: Rule, has_body: bool) -> Fate:
    """The fate of the ``nth`` request (0-based) of ``route`` for session ``key`` under ``rule``.

    Deterministic in its arguments. A cut is drawn only for routes that carry a body; its share
    of the probability is simply no fault elsewhere.
    """
    rng = random.Random(f"{seed}|{route}|{key}|{nth}")
    u, slow_u, regress_u, expire_u = rng.random(), rng.random(), rng.random(), rng.random()
    kind = None
    edge = 0.0
    for name, rate in (
        ("server_error", rule.server_error),
        ("rate_limit", rule.rate_limit),
        ("auth", rule.auth),
        ("cut", rule.cut if has_body else 0.0),
        ("lost_response", rule.lost_response),
    ):
        if edge <= u < edge + rate:
            kind = name
            break
        edge += rate
    return Fate(
        kind=kind,
        slow=slow_u < rule.slow,
        status=rng.choice(rule.server_error_statuses),
        form=rule.retry_after_forms[nth % len(rule.retry_after_forms)],
        cut_fraction=rng.uniform(0.05, 0.95),
        cut_at=rng.randrange(rule.cut_span),
        regress=regress_u < rule.offset_regress,
        expire=expire_u < rule.expire_share,
        keep_fraction=rng.uniform(0.0, 0.9),
    )


def cut_body(pieces: Iterator[bytes], at: int | None, fraction: float) -> Iterator[bytes]:
    """``pieces`` until ``at`` bytes have passed, then :class:`BodyCut`.

    With ``at`` None (length unknown) or beyond the end, the cut falls inside the last piece at
    ``fraction`` of it: one piece is held back so the end can be seen before it is passed on.
    """
    passed = 0
    held: bytes | None = None
    for piece in pieces:
        if held is not None:
            if at is not None and passed + len(held) > at:
                yield held[: at - passed]
                raise BodyCut("fault injection: body cut")
            yield held
            passed += len(held)
        held = piece
    if held is not None:
        inside = at is not None and at - passed < len(held)
        yield (
            held[: at - passed] if inside and at is not None else held[: int(len(held) * fraction)]
        )
    raise BodyCut("fault injection: body cut")


class Throttle:
    """A shared byte-rate limit: :meth:`wait` sleeps so the total stays under ``rate`` bytes/s."""

    def __init__(
        self,
        rate: int,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self._sleep = sleep
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._next = 0.0

    def wait(self, n: int) -> None:
        if self.rate <= 0:
            return
        with self._lock:
            now = self._monotonic()
            start = max(now, self._next)
            self._next = start + n / self.rate
            delay = self._next - now
        if delay > 0:
            self._sleep(delay)


# --- the hook ----------------------------------------------------------------------------------


@dataclass
class _Window:
    until: float  # monotonic
    started: float
    peer: str


@dataclass
class _Plan:
    request: Request
    fate: Fate
    rule: Rule


@dataclass
class _Counters:
    faults: dict[str, int] = field(default_factory=dict)
    by_route: dict[str, dict[str, int]] = field(default_factory=dict)
    retry_after_given: int = 0
    retry_after_violations: int = 0
    retry_after_overlaps: int = 0
    violations: list[dict[str, Any]] = field(default_factory=list)

    def add(self, route: str, kind: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1
        per = self.by_route.setdefault(route, {})
        per[kind] = per.get(kind, 0) + 1


class FaultInjector:
    """The sandbox's fault hook for a :class:`FaultSpec`; thread-safe, reconfigurable.

    ``clock`` times the outage window and the Retry-After windows (monotonic) and dates the
    HTTP-date form (wall); the bandwidth cap and slow answers take real time.
    """

    def __init__(self, spec: FaultSpec | None = None, clock: Clock = SYSTEM_CLOCK) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._local = threading.local()
        self._counts = _Counters()
        self._nth: dict[tuple[str, str], int] = {}
        self._windows: dict[str, _Window] = {}
        self.configure(spec or FaultSpec())

    def configure(self, spec: FaultSpec) -> None:
        """Apply ``spec`` from now on (the outage clock restarts; counts are kept)."""
        with self._lock:
            self.spec = spec
            self._applied = self._clock.monotonic()
            self._throttle = Throttle(spec.bandwidth)
            self._nth.clear()

    # --- the seam (see daemon.sandbox.app) -----------------------------------------------------

    def before(self, request: Request) -> Reply | None:
        """Decide this request's fate; answer now for faults that need no route work."""
        self._local.plan = None
        if request.path.startswith(SANDBOX_PREFIX):
            return None
        now = self._clock.monotonic()
        token = _token(request)
        with self._lock:
            spec = self.spec
            early = self._window_check(request, token, now)
            if early is not None:
                return early
            if spec.outage is not None and self._in_outage(spec.outage, now):
                self._counts.add(request.route, "outage")
                if spec.outage.status == 0:
                    raise Disconnect("fault injection: outage")
                return graph_error(spec.outage.status, "Service unavailable (outage)")
            if spec.revoked:
                self._counts.add(request.route, "revoked")
                return _auth_reply(spec.revoked_status)
            rule = spec.rule_for(request.route, f"{request.method} {request.path}")
            if rule is None:
                return None
            key = request.params.get("session_key", "")
            nth = self._nth.get((request.route, key), 0)
            self._nth[(request.route, key)] = nth + 1
            fate = draw(spec.seed, request.route, key, nth, rule, request.route in _BODY_ROUTES)
            self._local.plan = _Plan(request, fate, rule)
            if fate.slow:
                self._counts.add(request.route, "slow")
            reply = self._early_reply(request, token, fate, rule, now)
        if fate.slow:
            time.sleep(rule.slow_seconds)
        return reply

    def body(self, request: Request, pieces: Iterator[bytes]) -> Iterator[bytes]:
        """The request body as the route shall see it: throttled, and cut if so drawn."""
        throttle = self._throttle
        if throttle.rate > 0:
            pieces = _throttled(pieces, throttle)
        plan = self._plan(request)
        if plan is None or plan.fate.kind != "cut":
            return pieces
        self._count(request.route, "cut")
        return cut_body(pieces, _known_length(request, plan.fate), plan.fate.cut_fraction)

    def held(self, request: Request, held: int, complete: bool) -> int:
        """How many of the ``held`` bytes of the request's session the server still has."""
        plan = self._plan(request)
        if plan is None or not plan.fate.regress or held == 0 or complete:
            return held
        if plan.fate.expire:
            self._count(request.route, "session_expired")
            return 0
        self._count(request.route, "offset_regress")
        return int(held * plan.fate.keep_fraction)

    def after(self, request: Request, reply: Reply) -> Reply | None:
        """The reply to send after the route ran, or None to lose it (drop the connection)."""
        plan = self._plan(request)
        self._local.plan = None
        if plan is None or plan.fate.kind != "lost_response":
            return reply
        self._count(request.route, "lost_response")
        return None

    # --- inspection ----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Fault counts (total and per route) and Retry-After bookkeeping, as JSON."""
        with self._lock:
            c = self._counts
            return {
                "spec": self.spec.as_json(),
                "faults": dict(c.faults),
                "by_route": {r: dict(k) for r, k in c.by_route.items()},
                "retry_after_given": c.retry_after_given,
                "retry_after_violations": c.retry_after_violations,
                "retry_after_overlaps": c.retry_after_overlaps,
                "violations": list(c.violations),
            }

    # --- internals -----------------------------------------------------------------------------

    def _plan(self, request: Request) -> _Plan | None:
        plan: _Plan | None = getattr(self._local, "plan", None)
        return plan if plan is not None and plan.request is request else None

    def _count(self, route: str, kind: str) -> None:
        with self._lock:
            self._counts.add(route, kind)

    def _in_outage(self, outage: Outage, now: float) -> bool:
        since = now - self._applied
        return outage.start <= since < outage.start + outage.duration

    def _window_check(self, request: Request, token: str, now: float) -> Reply | None:
        window = self._windows.get(token)
        if window is None or now >= window.until:
            return None
        if request.peer != window.peer and now - window.started < self.spec.retry_after_grace:
            self._counts.retry_after_overlaps += 1
            return None
        c = self._counts
        c.retry_after_violations += 1
        if len(c.violations) < 50:
            c.violations.append(
                {
                    "route": request.route,
                    "seconds_into_window": round(now - window.started, 3),
                    "seconds_left": round(window.until - now, 3),
                    "same_connection": request.peer == window.peer,
                }
            )
        c.add(request.route, "rate_limit")
        return _rate_limited("seconds", max(1, math.ceil(window.until - now)), self._clock)

    def _early_reply(
        self, request: Request, token: str, fate: Fate, rule: Rule, now: float
    ) -> Reply | None:
        if fate.kind == "server_error":
            self._counts.add(request.route, "server_error")
            reply = graph_error(fate.status, "Please reduce the amount of data you're asking for")
            wait = rule.server_error_retry_after
            if wait > 0:
                seconds = math.ceil(wait)
                self._give_window(request, token, now, seconds)
                reply.headers["Retry-After"] = str(seconds)
            return reply
        if fate.kind == "rate_limit":
            self._counts.add(request.route, "rate_limit")
            wait = rule.retry_after
            if fate.form == "date":
                wait = float(math.ceil(wait))
            self._give_window(request, token, now, wait)
            return _rate_limited(fate.form, wait, self._clock)
        if fate.kind == "auth":
            self._counts.add(request.route, "auth")
            return _auth_reply(rule.auth_status)
        return None

    def _give_window(self, request: Request, token: str, now: float, seconds: float) -> None:
        self._counts.retry_after_given += 1
        current = self._windows.get(token)
        until = now + seconds
        if current is None or until > current.until:
            self._windows[token] = _Window(until, now, request.peer)


def _throttled(pieces: Iterator[bytes], throttle: Throttle) -> Iterator[bytes]:
    for piece in pieces:
        throttle.wait(len(piece))
        yield piece


def _known_length(request: Request, fate: Fate) -> int | None:
    """Where to cut: a fraction of the body when its length is announced, else ``cut_at``."""
    raw = request.headers.get("Content-Length")
    if raw is not None and raw.strip().isdigit():
        return int(int(raw) * fate.cut_fraction)
    entity, offset = request.headers.get("X-Entity-Length"), request.headers.get("Offset")
    if entity and offset and entity.strip().isdigit() and offset.strip().isdigit():
        return int((int(entity) - int(offset)) * fate.cut_fraction)
    return fate.cut_at


def _token(request: Request) -> str:
    auth = request.headers.get("Authorization", "").strip()
    return auth.partition(" ")[2].strip() or f"peer:{request.peer.rpartition(':')[0]}"


def _auth_reply(status: int) -> Reply:
    if status == 401:
        return auth_failed()
    body = {
        "debug_info": {
            "retriable": False,
            "type": "NotAuthorizedError",
            "message": "The user token was revoked",
        }
    }
    return json_reply(403, body)


def _rate_limited(form: str, seconds: float, clock: Clock) -> Reply:
    """429 in the upload service's shape, the wait in ``form`` (see the module docstring)."""
    body: dict[str, Any] = {
        "debug_info": {
            "retriable": True,
            "type": "RequestRateLimitedError",
            "message": "Too many requests, slow down",
        }
    }
    headers: dict[str, str] = {}
    if form == "seconds":
        headers["Retry-After"] = str(math.ceil(seconds))
    elif form == "date":
        # The server's Date header (same clock) and this are whole seconds; the +1 makes up
        # for the second cut off "now".
        now = clock.now().replace(microsecond=0)
        when = now + timedelta(seconds=math.ceil(seconds) + 1)
        headers["Retry-After"] = format_datetime(when, usegmt=True)
    else:
        body["backoff"] = round(seconds * 1000)
    return json_reply(429, body, headers)
