"""The sandbox's read side of the Graph API: a user's archive to back up.

:class:`ArchiveWorld` holds users, sequences and images as the API reports them (a field with no
value is **absent**, never null); :func:`seed_user` fills it with synthetic drives.
:func:`install` adds the routes to a :class:`~daemon.sandbox.server.Sandbox`:

* ``GET /images?creator_username=U&fields=F&limit=N`` paged by ``paging.next``, an absolute URL
  with an opaque ``after`` cursor (``limit`` ≤ 2000); also ``image_ids=a,b`` (≤ 50 ids),
  ``sequence_id=S`` and ``bbox=w,s,e,n`` (these three do not page);
* ``GET /{id}?fields=F`` for an image or a user; ``GET /image_ids?sequence_id=S``;
* ``GET /cdn/...``: the image bytes (:mod:`daemon.sandbox.cdn`), no token needed.

Unknown fields, a bad limit or cursor → 400 Graph error code 100. ``thumb_*_url`` fields are
signed CDN URLs minted per response, so a URL listed long ago has expired.

:class:`ArchiveFaults` is a :class:`~daemon.sandbox.app.FaultHook` for these routes only
(upload routes pass untouched): latency per request, a share of 5xx answers and dropped
connections, a token-bucket rate limit answered with 429 + Graph code 4, and a revoked token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from daemon import synth
from daemon.clock import SYSTEM_CLOCK, Clock
from daemon.sandbox.app import Disconnect, FaultHook, Request, user_id_for
from daemon.sandbox.body import Body
from daemon.sandbox.cdn import QUALITIES, Cdn, ImageArt
from daemon.sandbox.replies import Reply, auth_failed, graph_error, json_reply
from daemon.sandbox.server import Sandbox

MAX_LIMIT = 2000
MAX_IMAGE_IDS = 50
CODE_RATE_LIMIT = 4
#: Every field an image may have besides the thumbnails.
IMAGE_FIELDS = frozenset(
    {
        "id",
        "altitude",
        "atomic_scale",
        "camera_parameters",
        "camera_type",
        "captured_at",
        "compass_angle",
        "computed_altitude",
        "computed_compass_angle",
        "computed_geometry",
        "computed_rotation",
        "creator",
        "exif_orientation",
        "geometry",
        "height",
        "is_pano",
        "make",
        "model",
        "quality_score",
        "sequence",
        "width",
        "organization",
    }
)
THUMB_FIELDS = {f"thumb_{q}_url": q for q in QUALITIES}
ARCHIVE_ROUTES = frozenset(
    {"GET /images", "GET /image_ids", "GET /{object_id}", "GET /me", "GET /cdn/{cdn_path}"}
)
#: Places the seeded sequences start from: both hemispheres, several zones, DST and not.
PLACES = (
    (46.0569, 14.5058),  # Ljubljana, CET/CEST
    (40.7128, -74.0060),  # New York, EST/EDT
    (-23.5505, -46.6333),  # São Paulo, no DST
    (35.6762, 139.6503),  # Tokyo
    (-33.8688, 151.2093),  # Sydney, southern DST
)
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@dataclass
class ArchiveWorld:
    """Users, sequences and images. Thread-safe; mutate only through the methods."""

    users: dict[str, str] = field(default_factory=dict)
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    art: dict[str, ImageArt] = field(default_factory=dict)
    by_user: dict[str, list[str]] = field(default_factory=dict)
    sequences: dict[str, list[str]] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def add_user(self, username: str) -> str:
        with self.lock:
            return self.users.setdefault(username, user_id_for(username))

    def add_image(self, record: dict[str, Any], art: ImageArt) -> None:
        """Add one image (``record`` as the API shows it; must have id, creator, sequence)."""
        with self.lock:
            image_id = record["id"]
            self.images[image_id] = record
            self.art[image_id] = art
            ids = self.by_user.setdefault(record["creator"]["username"], [])
            ids.append(image_id)
            ids.sort()
            seq = self.sequences.setdefault(record["sequence"], [])
            seq.append(image_id)
            seq.sort(key=lambda i: (self.images[i].get("captured_at", 0), i))

    def delete_image(self, image_id: str) -> None:
        """The user deleted an image on Mapillary."""
        with self.lock:
            record = self.images.pop(image_id)
            self.art.pop(image_id, None)
            self.by_user[record["creator"]["username"]].remove(image_id)
            self.sequences[record["sequence"]].remove(image_id)

    def user_images(self, username: str) -> list[str]:
        with self.lock:
            return list(self.by_user.get(username, ()))


# --- seeding -----------------------------------------------------------------------------------


def _b62(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(_B62) for _ in range(n))


def seed_user(
    world: ArchiveWorld,
    username: str,
    *,
    sequences: int,
    images_per_sequence: int,
    seed: int = 0,
    size: tuple[int, int] = (64, 48),
    pano_every: int = 4,
    omit_rate: float = 0.1,
    corrupt_exif_rate: float = 0.03,
    start: datetime | None = None,
) -> list[str]:
    """Give ``username`` ``sequences`` drives of ``images_per_sequence`` images; return the ids.

    Every ``pano_every``-th sequence is a 360° one (2:1 images, ``camera_type`` spherical).
    Each optional field is left out of an image with probability ``omit_rate`` (``make``,
    ``model``, ``camera_type``, ``computed_*``, ``altitude``…); a few raw altitudes below sea
    level are sent wrapped as unsigned 32-bit integers (4294967281 for −15 m), as the API did.
    ``corrupt_exif_rate`` of the served JPEGs have a broken EXIF IFD. Deterministic in ``seed``.
    """
    rng = random.Random(seed)
    user_id = world.add_user(username)
    start = start or datetime(2024, 6, 1, 7, 30, tzinfo=UTC)
    ids: list[str] = []
    w, h = size
    for s in range(sequences):
        seq_id = _b62(rng, 22)
        pano = pano_every > 0 and s % pano_every == pano_every - 1
        lat0, lon0 = PLACES[s % len(PLACES)]
        t0 = start + timedelta(days=37 * s, hours=rng.uniform(0, 12))
        make, model = ("GoPro", "MAX") if pano else ("Garmin", "VIRB 360")
        drive = synth.drive_points(
            images_per_sequence, start=t0, lat=lat0, lon=lon0, seed=seed * 1000 + s
        )
        below_sea = rng.random() < 0.5
        for i, (t, lat, lon, alt, heading) in enumerate(drive):
            image_id = str(1_000_000_000_000_000 + rng.randrange(10**15))
            while image_id in world.images:
                image_id = str(1_000_000_000_000_000 + rng.randrange(10**15))
            altitude: float | int = round(alt - (330.0 if below_sea else 0.0), 3)
            if altitude < 0 and i % 3 == 0:
                altitude = round(altitude) + 2**32
            img_w, img_h = (2 * h, h) if pano else (w, h)
            record: dict[str, Any] = {
                "id": image_id,
                "captured_at": int(t.timestamp() * 1000) + rng.randrange(1000),
                "geometry": {"type": "Point", "coordinates": [lon, lat]},
                "computed_geometry": {
                    "type": "Point",
                    "coordinates": [lon + rng.uniform(-2e-5, 2e-5), lat + rng.uniform(-2e-5, 2e-5)],
                },
                "altitude": altitude,
                "computed_altitude": round(alt + rng.uniform(-3, 3), 3),
                "compass_angle": round(heading, 6),
                "computed_compass_angle": round((heading + rng.uniform(-4, 4)) % 360, 6),
                "computed_rotation": [rng.uniform(-2, 2) for _ in range(3)],
                "sequence": seq_id,
                "camera_type": "spherical" if pano else "perspective",
                "camera_parameters": [] if pano else [0.85, -0.01, 0.002],
                "make": make,
                "model": model,
                "creator": {"id": user_id, "username": username},
                "exif_orientation": 1,
                "width": img_w * 50,
                "height": img_h * 50,
                "is_pano": pano,
                "atomic_scale": round(rng.uniform(0.9, 1.1), 6),
                "quality_score": round(rng.uniform(0.3, 1.0), 3),
            }
            for optional in (
                "make",
                "model",
                "camera_type",
                "computed_geometry",
                "computed_altitude",
                "computed_compass_angle",
                "altitude",
                "compass_angle",
                "atomic_scale",
                "quality_score",
            ):
                if rng.random() < omit_rate:
                    del record[optional]
            art = ImageArt(
                seed=rng.randrange(2**31),
                width=img_w,
                height=img_h,
                corrupt_exif=rng.random() < corrupt_exif_rate,
            )
            world.add_image(record, art)
            ids.append(image_id)
    return ids


# --- the routes --------------------------------------------------------------------------------


class _BadRequest(Exception):
    pass


class ArchiveApi:
    """Route handlers over an :class:`ArchiveWorld`; see the module docstring."""

    def __init__(
        self,
        world: ArchiveWorld,
        cdn: Cdn,
        *,
        secret: bytes,
        truncate_pages: bool = False,
        seed: int = 0,
    ) -> None:
        self.world = world
        self.cdn = cdn
        self._secret = secret
        self._truncate = truncate_pages
        self._seed = seed

    def routes(self) -> dict[str, Any]:
        return {
            "GET /images": self.images,
            "GET /image_ids": self.image_ids,
            "GET /{object_id}": self.get_object,
            "GET /cdn/{cdn_path}": self.cdn_get,
        }

    # --- helpers -------------------------------------------------------------------------------

    def _fields(self, request: Request) -> list[str]:
        wanted = [f.strip() for v in request.query.get("fields", []) for f in v.split(",")]
        wanted = [f for f in wanted if f]
        for f in wanted:
            if f not in IMAGE_FIELDS and f not in THUMB_FIELDS:
                raise _BadRequest(f"Tried accessing nonexisting field ({f}) on node type (Image)")
        return wanted

    def _render(self, record: dict[str, Any], fields: list[str], base: str) -> dict[str, Any]:
        out: dict[str, Any] = {"id": record["id"]}
        for f in fields:
            if f in THUMB_FIELDS:
                out[f] = self.cdn.url(base, record["id"], THUMB_FIELDS[f])
            elif f in record:
                out[f] = record[f]
        return out

    def _cursor(self, username: str, last_id: str) -> str:
        raw = json.dumps({"u": username, "a": last_id}, separators=(",", ":")).encode()
        sig = hmac.new(self._secret, raw, hashlib.sha256).digest()[:12]
        return base64.urlsafe_b64encode(raw + sig).decode().rstrip("=")

    def _uncursor(self, cursor: str, username: str) -> str:
        try:
            blob = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            raw, sig = blob[:-12], blob[-12:]
            good = hmac.new(self._secret, raw, hashlib.sha256).digest()[:12]
            decoded = json.loads(raw) if hmac.compare_digest(sig, good) else None
        except (ValueError, json.JSONDecodeError):
            decoded = None
        if not isinstance(decoded, dict) or decoded.get("u") != username:
            raise _BadRequest("Invalid pagination cursor")
        return str(decoded["a"])

    # --- handlers ------------------------------------------------------------------------------

    def images(self, request: Request, body: Body) -> Reply:
        try:
            return self._images(request)
        except _BadRequest as exc:
            return graph_error(400, str(exc))

    def _images(self, request: Request) -> Reply:
        q = {k: v[-1] for k, v in request.query.items() if v}
        fields = self._fields(request)
        try:
            limit = int(q.get("limit", str(MAX_LIMIT)))
        except ValueError:
            raise _BadRequest("limit must be an integer") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise _BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
        base = _base(request)
        with self.world.lock:
            if "image_ids" in q:
                ids = [i for i in q["image_ids"].split(",") if i]
                if len(ids) > MAX_IMAGE_IDS:
                    raise _BadRequest(f"at most {MAX_IMAGE_IDS} image_ids per request")
                found = [self.world.images[i] for i in ids if i in self.world.images]
                return json_reply(200, {"data": [self._render(r, fields, base) for r in found]})
            if "creator_username" in q:
                candidates = self.world.user_images(q["creator_username"])
            elif "sequence_id" in q:
                wanted = q["sequence_id"].split(",")
                candidates = [i for s in wanted for i in self.world.sequences.get(s, ())]
            elif "bbox" in q:
                candidates = sorted(self.world.images)
            else:
                raise _BadRequest(
                    "one of creator_username, image_ids, sequence_id or bbox is required"
                )
            records = [self.world.images[i] for i in candidates]
        records = _filter(records, q)
        if "creator_username" not in q:  # bbox / sequence searches do not page
            data = [self._render(r, fields, base) for r in records[:limit]]
            return json_reply(200, {"data": data})
        username = q["creator_username"]
        after = self._uncursor(q["after"], username) if "after" in q else None
        if after is not None:
            records = [r for r in records if r["id"] > after]
        take = limit
        if self._truncate and len(records) > limit:
            rng = random.Random(f"{self._seed}:{after}")
            if rng.random() < 0.3:
                take = max(1, limit - rng.randrange(1, max(2, limit // 3)))
        page = records[:take]
        out: dict[str, Any] = {"data": [self._render(r, fields, base) for r in page]}
        if len(records) > take:
            params = {k: v for k, v in q.items() if k not in ("after", "access_token")}
            params["after"] = self._cursor(username, page[-1]["id"])
            out["paging"] = {
                "cursors": {"after": params["after"]},
                "next": f"{base}/images?{urlencode(params)}",
            }
        return json_reply(200, out)

    def image_ids(self, request: Request, body: Body) -> Reply:
        seq = (request.query.get("sequence_id") or [""])[-1]
        if not seq:
            return graph_error(400, "sequence_id is required")
        with self.world.lock:
            ids = list(self.world.sequences.get(seq, ()))
        return json_reply(200, {"data": [{"id": i} for i in ids]})

    def get_object(self, request: Request, body: Body) -> Reply:
        object_id = request.params["object_id"]
        with self.world.lock:
            record = self.world.images.get(object_id)
            username = next((u for u, i in self.world.users.items() if i == object_id), None)
        if record is not None:
            try:
                fields = self._fields(request)
            except _BadRequest as exc:
                return graph_error(400, str(exc))
            return json_reply(200, self._render(record, fields, _base(request)))
        if username is not None:
            return json_reply(200, {"id": object_id, "username": username})
        message = (
            f"Unsupported get request. Object with ID '{object_id}' does not exist, cannot be"
            " loaded due to missing permissions, or does not support this operation"
        )
        return graph_error(404, message, subcode=33)

    def cdn_get(self, request: Request, body: Body) -> Reply:
        path = request.params["cdn_path"]
        image_id = path.rsplit("/", 1)[-1].split("_", 1)[0]
        with self.world.lock:
            art = self.world.art.get(image_id)
        return self.cdn.serve(path, request.query, art)


def _base(request: Request) -> str:
    return f"http://{request.headers.get('Host', '127.0.0.1')}"


def _filter(records: Iterable[dict[str, Any]], q: dict[str, str]) -> list[dict[str, Any]]:
    out = list(records)
    if "bbox" in q:
        try:
            west, south, east, north = (float(x) for x in q["bbox"].split(","))
        except ValueError:
            raise _BadRequest("bbox must be four numbers: west,south,east,north") from None

        def inside(r: dict[str, Any]) -> bool:
            geom = r.get("computed_geometry") or r.get("geometry")
            if not geom:
                return False
            lon, lat = geom["coordinates"]
            return bool(west <= lon <= east and south <= lat <= north)

        out = [r for r in out if inside(r)]
    if "is_pano" in q:
        want = q["is_pano"] == "true"
        out = [r for r in out if bool(r.get("is_pano")) == want]
    for key, keep in (("start_captured_at", 1), ("end_captured_at", -1)):
        if key in q:
            try:
                bound = datetime.fromisoformat(q[key].replace("Z", "+00:00")).timestamp() * 1000
            except ValueError:
                raise _BadRequest(f"{key} must be an ISO 8601 time") from None
            out = [r for r in out if (r.get("captured_at", 0) - bound) * keep >= 0]
    return out


# --- faults ------------------------------------------------------------------------------------


class ArchiveFaults:
    """A fault hook for the archive routes; see the module docstring. Thread-safe.

    ``fault_rate``: the share of requests answered with a 5xx or dropped (seeded). ``rate`` and
    ``burst``: a token bucket per Authorization value (CDN requests share one); an empty bucket
    is a 429 with Graph code 4 and ``Retry-After``. ``revoked``: every Graph request gets the
    401 of an invalid token. ``latency_s``: added to every archive request. ``inner`` is
    consulted first for any request (chaining an upload-side hook). ``limit_every``: every
    that many Graph requests is a 429 whatever the pace (a rate limit a test can count on).
    """

    def __init__(
        self,
        *,
        fault_rate: float = 0.0,
        rate: float | None = None,
        burst: float = 20.0,
        latency_s: float = 0.0,
        seed: int = 0,
        clock: Clock = SYSTEM_CLOCK,
        inner: FaultHook | None = None,
        limit_every: int | None = None,
    ) -> None:
        self.fault_rate = fault_rate
        self.limit_every = limit_every
        self._graph_requests = 0
        self.rate = rate
        self.burst = burst
        self.latency_s = latency_s
        self.revoked = False
        self.inner = inner
        self._rng = random.Random(seed)
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}
        self.counts: dict[str, int] = {"faults": 0, "rate_limited": 0, "auth": 0}

    def before(self, request: Request) -> Reply | None:
        if self.inner is not None:
            reply = self.inner.before(request)
            if reply is not None:
                return reply
        if request.route not in ARCHIVE_ROUTES:
            return None
        if self.latency_s:
            time.sleep(self.latency_s)
        graph = request.route != "GET /cdn/{cdn_path}"
        with self._lock:
            if self.revoked and graph:
                self.counts["auth"] += 1
                return auth_failed()
            if graph:
                self._graph_requests += 1
            every = self.limit_every
            limited = graph and every is not None and self._graph_requests % every == 0
            if limited or (self.rate is not None and graph and not self._take(request)):
                self.counts["rate_limited"] += 1
                return _rate_limited()
            roll = self._rng.random()
            kind = self._rng.choice(("500", "502", "503", "drop"))
            if roll < self.fault_rate:
                self.counts["faults"] += 1
            else:
                return None
        if kind == "drop":
            raise Disconnect("fault: connection dropped")
        if kind == "500":
            return graph_error(
                500, "An unknown error has occurred.", error_type="OAuthException", code=1
            )
        body = b"<html><body><h1>Bad gateway</h1></body></html>" if kind == "502" else b""
        return Reply(int(kind), body, "text/html")

    def _take(self, request: Request) -> bool:
        key = request.headers.get("Authorization", "")
        now = self._clock.monotonic()
        assert self.rate is not None
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True


def _rate_limited() -> Reply:
    reply = graph_error(
        429, "Application request limit reached", error_type="OAuthException", code=CODE_RATE_LIMIT
    )
    return Reply(reply.status, reply.body, reply.content_type, {"Retry-After": "1"})


# --- wiring ------------------------------------------------------------------------------------


def install(
    sandbox: Sandbox,
    world: ArchiveWorld | None = None,
    *,
    url_ttl_seconds: float = 3600.0,
    clock: Clock = SYSTEM_CLOCK,
    truncate_pages: bool = False,
    seed: int = 0,
    expire_every: int = 0,
) -> ArchiveApi:
    """Serve ``world`` (a new empty one by default) from ``sandbox``; returns the API object.
    ``clock`` mints and checks the CDN URLs' expiry; ``expire_every``: see :class:`Cdn`."""
    secret = secrets.token_bytes(16)
    api = ArchiveApi(
        world or ArchiveWorld(),
        Cdn(secret, clock, url_ttl_seconds, expire_every=expire_every),
        secret=secret,
        truncate_pages=truncate_pages,
        seed=seed,
    )
    sandbox.app.add_routes(api.routes(), public=("GET /cdn/{cdn_path}",))
    return api
