"""The configuration: TOML in, frozen typed objects out, every problem reported at once.

Stages, each a plain function: read the file (:func:`read_toml`) → build the typed model while
collecting problems with their dotted key path (:func:`build_config`) → apply environment
overrides (the mapillary_tools variables ``MAPILLARY_UPLOAD_ENDPOINT`` and
``MAPILLARY_GRAPH_API_ENDPOINT``, and ``MAPILLARY_TOKEN``). Directories resolve as: the config
file, then systemd's ``$STATE_DIRECTORY`` / ``$LOGS_DIRECTORY``, then platformdirs.

Nothing below :mod:`daemon.service` reads the file or the environment; modules get their section.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import platformdirs
import tzlocal

from daemon.errors import ConfigError
from daemon.limits import Timetable, Windows

APP = "mapillaryd"
DEFAULT_UPLOAD_ENDPOINT = "https://rupload.facebook.com/mapillary_public_uploads"
DEFAULT_GRAPH_ENDPOINT = "https://graph.mapillary.com"

IngestMode = Literal["copy", "in_place"]
FreeCardMode = Literal["off", "delete", "move"]
GeotagSourceName = Literal["exif", "gpx", "nmea"]
VideoMode = Literal["native", "frames"]
VideoGeotagSourceName = Literal["native", "gpx", "nmea"]
CreationClock = Literal["utc", "local"]
LogFormat = Literal["auto", "json", "console"]


@dataclass(frozen=True)
class StateConfig:
    """Where the queue database, the spool of copied media and the logs live."""

    dir: Path
    spool_dir: Path
    log_dir: Path
    #: Ingest holds (copies nothing more) while the spool's or the state dir's disk has less
    #: than this many megabytes free; it resumes by itself once there is room again.
    min_free_mb: float = 200.0
    #: A state or spool dir on tmpfs/ramfs is refused (lost at power-off) unless this is true.
    allow_tmpfs: bool = False

    @property
    def min_free_bytes(self) -> int:
        return int(self.min_free_mb * 1_000_000)

    @property
    def database(self) -> Path:
        return self.dir / "queue.sqlite3"


@dataclass(frozen=True)
class WatchConfig:
    """One watched folder: a drop folder or a removable card's mount point."""

    path: Path
    recursive: bool = True
    #: "copy": copy each file into the spool (verified by hash) so the card can be pulled;
    #: "in_place": read the file where it is (drop folders on the same disk).
    ingest: IngestMode = "copy"
    #: Free the card once a file's upload is confirmed: "delete" it, "move" it into
    #: ``uploaded/`` on the card, or "off" (never touch the card). See daemon/freeing.py.
    free_card: FreeCardMode = "off"
    #: A file is taken only when its size and mtime stayed unchanged this long (≥ 2 s: FAT
    #: timestamps have 2 s granularity), or it was closed after writing.
    settle_seconds: float = 2.0
    #: Time zone for camera times without an offset; None = the [process] default.
    time_zone: str | None = None
    #: Where positions come from: the images' own EXIF, or a GPS logger's GPX/NMEA track.
    geotag_source: GeotagSourceName = "exif"
    #: The track file or folder for gpx/nmea, relative to ``path`` unless absolute.
    geotag_source_path: Path | None = None
    #: Seconds to add to this camera's clock (its error), or None with ``auto_offset``.
    offset_time: float = 0.0
    #: Estimate the camera clock error against the track; applied only when unambiguous.
    auto_offset: bool = False
    #: Shift the images so the first sits on the track's first point.
    use_gps_start_time: bool = False
    #: Degrees added to every heading (a camera mounted sideways: 90).
    offset_angle: float = 0.0
    #: Videos: "native" (uploaded as they are, with a CAMM GPS track; the server samples them)
    #: or "frames" (sampled here with ffmpeg and uploaded as an image sequence).
    video: VideoMode = "native"
    #: With "frames": a frame every this many metres (mapillary_tools' default 3 m)…
    video_sample_distance: float = 3.0
    #: …or, when set, every this many seconds instead.
    video_sample_interval: float | None = None
    #: Videos' GPS: "native" (their own telemetry, else a side file named after them) or a
    #: "gpx"/"nmea" side file (see daemon/video_track.py).
    video_geotag_source: VideoGeotagSourceName = "native"
    #: The side file: a pattern (%f file name, %g stem, %e extension) or a fixed file or
    #: folder, relative to the video's folder; None = %g.gpx / %g.nmea / %g.nma.
    video_geotag_source_path: str | None = None
    #: How the camera writes a video's creation time: "utc" (as the MP4 format says) or
    #: "local" (its wall clock, in this watch's time_zone or [process] time_zone).
    video_creation_time: CreationClock = "utc"


@dataclass(frozen=True)
class MapillaryConfig:
    """The Mapillary endpoints and where the user token comes from."""

    upload_endpoint: str = DEFAULT_UPLOAD_ENDPOINT
    graph_endpoint: str = DEFAULT_GRAPH_ENDPOINT
    token_file: Path | None = None
    #: From the MAPILLARY_TOKEN environment variable only: a token never sits in the config file.
    token_from_env: str | None = field(default=None, repr=False)
    organization_id: str | None = None


@dataclass(frozen=True)
class ScanConfig:
    """Reconciliation scans: events are hints, scans are truth."""

    interval_seconds: float = 300.0


@dataclass(frozen=True)
class ProcessConfig:
    """Geotagging and sequence cutting (mapillary_tools' defaults)."""

    time_zone: str = "local"
    cutoff_time: float = 60.0
    cutoff_distance: float = 100.0
    max_sequence_images: int = 1000
    #: A batch (one card insertion, one burst of drops) is cut into sequences once no new file
    #: arrived for this long.
    batch_quiet_seconds: float = 10.0
    duplicate_distance: float = 0.1
    duplicate_angle: float = 5.0
    interpolate_directions: bool = False
    max_speed_kmh: float = 400.0
    zigzag_check: bool = True
    #: Native videos: stretches parked (within trim_parked_radius_m for this long) are cut
    #: out; 0 keeps them. See daemon/geo/video_trim.py.
    trim_parked_seconds: float = 120.0
    trim_parked_radius_m: float = 10.0
    #: A kept stretch of a trimmed video shorter than this is not uploaded.
    trim_min_seconds: float = 5.0
    #: Safety margins around privacy zones for native videos: metres added to the radius,
    #: seconds added before and after.
    trim_margin_m: float = 10.0
    trim_margin_seconds: float = 1.0


@dataclass(frozen=True)
class PrivacyZone:
    """Images within ``radius_m`` metres of (lat, lon) never leave the machine."""

    lat: float
    lon: float
    radius_m: float
    name: str = ""


@dataclass(frozen=True)
class UploadConfig:
    """How uploads are run and retried."""

    max_parallel_uploads: int = 4
    retry_base_seconds: float = 2.0
    retry_cap_seconds: float = 900.0
    #: A server's Retry-After is honoured up to this many seconds.
    max_retry_after_seconds: float = 3600.0
    timeout_seconds: float = 60.0
    #: Bytes/s for all upload bodies together, by time of day (None: unlimited).
    bandwidth_limit: Timetable | None = None
    #: Uploads run only inside these windows (none: always).
    windows: Windows = field(default_factory=Windows)


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: LogFormat = "auto"


CardFilter = Literal["camera", "label", "any"]
DEFAULT_MOUNT_ROOTS = ("/media/*", "/media/*/*", "/run/media/*/*", "/Volumes/*")


@dataclass(frozen=True)
class MountRootConfig:
    """Where removable cards get mounted (a glob over mount points, ``/media/*``), which of them
    are taken, and the watch options each taken card gets (``watch.path`` is unused: the card's
    mount point replaces it; a relative ``geotag_source_path`` is relative to the card)."""

    pattern: str
    watch: WatchConfig
    #: "camera": a card with DCIM/ or a known dashcam folder, or a listed label; "label": only
    #: listed labels; "any": every volume mounted under the root.
    require: CardFilter = "camera"
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class MountsConfig:
    """Mount detection (off unless enabled or ``[[mount_root]]`` tables are given)."""

    enabled: bool = False
    roots: tuple[MountRootConfig, ...] = tuple(
        MountRootConfig(pattern, WatchConfig(path=Path())) for pattern in DEFAULT_MOUNT_ROOTS
    )
    #: The mount table is re-read this often even without a change signal.
    rescan_seconds: float = 10.0


@dataclass(frozen=True)
class NotifyConfig:
    """Optional pings: a webhook on failures needing attention, a heartbeat while healthy."""

    webhook_url: str | None = None
    #: At most one webhook call per this many seconds (more failures are summed into the next).
    webhook_min_interval_seconds: float = 900.0
    heartbeat_url: str | None = None
    heartbeat_interval_seconds: float = 300.0


BackupQuality = Literal["256", "1024", "2048", "original"]
BackupFormat = Literal["jpeg", "webp"]


@dataclass(frozen=True)
class BackupConfig:
    """The scheduled backup of the user's own Mapillary archive (``[backup]``; absent: none).

    See daemon/archive/ and config.example.toml for what each key does."""

    dir: Path
    username: str | None = None
    schedule: str = "0 2 * * *"
    time_zone: str = "local"
    misfire_grace_hours: float = 20.0
    require_clock_sync: bool = True
    quality: BackupQuality = "original"
    format: BackupFormat = "jpeg"
    webp_quality: int = 90
    tar: bool = False
    workers: int = 4
    max_requests_per_second: float = 50.0
    page_size: int = 2000
    retries: int = 5
    timeout_seconds: float = 60.0
    min_free_mb: float = 500.0
    disk_retry_minutes: float = 10.0


@dataclass(frozen=True)
class StatusPageConfig:
    """The daemon's status page, JSON API and Prometheus ``/metrics`` (``[status]``)."""

    enabled: bool = True
    #: The address to listen on: loopback by default; anything else needs ``token_file``.
    listen: str = "127.0.0.1"
    #: 0 picks a free port (logged, and shown by ``mapillaryd status``).
    port: int = 8686
    #: A file holding the access token browsers and scrapers must present.
    token_file: Path | None = None


@dataclass(frozen=True)
class Config:
    """The whole configuration. ``source`` names the file it came from (or ``<defaults>``)."""

    source: str
    state: StateConfig
    watches: tuple[WatchConfig, ...]
    mapillary: MapillaryConfig
    scan: ScanConfig = ScanConfig()
    process: ProcessConfig = ProcessConfig()
    upload: UploadConfig = UploadConfig()
    log: LogConfig = LogConfig()
    privacy_zones: tuple[PrivacyZone, ...] = ()
    backup: BackupConfig | None = None
    mounts: MountsConfig = MountsConfig()
    notify: NotifyConfig = NotifyConfig()
    status: StatusPageConfig = StatusPageConfig()

    def time_zone_for(self, watch: WatchConfig) -> tzinfo:
        """The zone naive camera times from ``watch`` are read in."""
        return resolve_time_zone(watch.time_zone or self.process.time_zone)


def resolve_time_zone(name: str) -> tzinfo:
    """``"local"`` is this machine's zone; anything else an IANA name (``Europe/Ljubljana``)."""
    if name == "local":
        return cast(tzinfo, tzlocal.get_localzone())
    return zoneinfo.ZoneInfo(name)


def default_config_path(env: Mapping[str, str]) -> Path:
    """``$MAPILLARYD_CONFIG``, else ``config.toml`` in the platform's config directory."""
    if env.get("MAPILLARYD_CONFIG"):
        return Path(env["MAPILLARYD_CONFIG"])
    return Path(platformdirs.user_config_dir(APP)) / "config.toml"


def load_config(path: Path | None, env: Mapping[str, str] | None = None) -> Config:
    """Read, validate and resolve the configuration.

    ``path=None`` means the default location, where a missing file is fine (all defaults, no
    watch folders). A path given explicitly must exist. Raise :class:`ConfigError` listing every
    problem found, each as ``key.path: message``.
    """
    env = os.environ if env is None else env
    explicit = path is not None
    path = path if path is not None else default_config_path(env)
    if path.exists() or explicit:
        data, source = read_toml(path), str(path)
    else:
        data, source = {}, "<defaults>"
    return build_config(data, source=source, env=env, base_dir=path.parent)


def read_toml(path: Path) -> dict[str, Any]:
    """Parse ``path`` as TOML; a missing, unreadable or malformed file is a :class:`ConfigError`."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(str(path), ["the configuration file does not exist"]) from None
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc.strerror}"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"not valid TOML: {exc}"]) from exc


# --- building the model ------------------------------------------------------------------------

T = TypeVar("T")


class _Section:
    """Typed reads from one TOML table, recording problems under ``prefix`` instead of raising."""

    def __init__(self, table: Mapping[str, Any], prefix: str, problems: list[str]) -> None:
        self.table, self.prefix, self.problems = table, prefix, problems
        self.used: set[str] = set()

    def _key(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{self._key(key)}: {message}")

    def get(
        self, key: str, kind: type[T], default: T, check: Callable[[T], str | None] | None = None
    ) -> T:
        """The value of ``key`` if present and of ``kind`` (and ``check`` returns no complaint)."""
        self.used.add(key)
        if key not in self.table:
            return default
        value = self.table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.problem(key, f"expected {_kind_name(kind)}, got {_describe(value)}")
            return default
        complaint = check(value) if check else None
        if complaint:
            self.problem(key, complaint)
            return default
        return value

    def choice(self, key: str, options: tuple[str, ...], default: str) -> str:
        value = self.get(key, str, default)
        if value not in options:
            self.problem(key, f"must be one of {', '.join(map(repr, options))}, got {value!r}")
            return default
        return value

    def path(self, key: str, base_dir: Path, default: Path | None) -> Path | None:
        raw = self.get(key, str, "")
        if not raw:
            return default
        p = Path(os.path.expandvars(raw)).expanduser()
        return p if p.is_absolute() else (base_dir / p)

    def finish(self) -> None:
        """Complain about keys nobody read: most often a typo."""
        for key in sorted(set(self.table) - self.used):
            self.problem(key, "unknown key")


def _kind_name(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        kind, kind.__name__
    )


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"{type(value).__name__} {value!r}"


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _at_least(minimum: float) -> Callable[[float], str | None]:
    return lambda v: None if v >= minimum else f"must be at least {minimum:g}"


def _url(value: str) -> str | None:
    if not value.startswith(("http://", "https://")):
        return "must be an http:// or https:// URL"
    return None


def _zone(value: str) -> str | None:
    if value == "local":
        return None
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {value!r} (use an IANA name such as 'Europe/Berlin', or 'local')"
    return None


def _table(data: Mapping[str, Any], key: str, problems: list[str]) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        problems.append(f"{key}: expected a table ([{key}]), got {_describe(value)}")
        return {}
    return value


def build_config(
    data: Mapping[str, Any], *, source: str, env: Mapping[str, str], base_dir: Path
) -> Config:
    """Turn parsed TOML into a :class:`Config`; raise :class:`ConfigError` with every problem."""
    problems: list[str] = []
    known = {"state", "watch", "mapillary", "scan", "process", "upload", "log", "privacy_zone"}
    known.add("backup")
    known |= {"mounts", "mount_root", "notify"}
    known.add("status")
    problems += [f"{key}: unknown section" for key in sorted(set(data) - known)]

    state = _build_state(
        _Section(_table(data, "state", problems), "state", problems), env, base_dir
    )
    watches = _build_watches(data.get("watch", []), problems, base_dir)
    mapillary = _build_mapillary(
        _Section(_table(data, "mapillary", problems), "mapillary", problems), env, base_dir
    )

    s = _Section(_table(data, "scan", problems), "scan", problems)
    scan = ScanConfig(interval_seconds=s.get("interval_seconds", float, 300.0, _at_least(1)))
    s.finish()

    s = _Section(_table(data, "process", problems), "process", problems)
    process = ProcessConfig(
        time_zone=s.get("time_zone", str, "local", _zone),
        cutoff_time=s.get("cutoff_time", float, 60.0, _positive),
        cutoff_distance=s.get("cutoff_distance", float, 100.0, _positive),
        max_sequence_images=s.get("max_sequence_images", int, 1000, _at_least(1)),
        batch_quiet_seconds=s.get("batch_quiet_seconds", float, 10.0, _at_least(0)),
        duplicate_distance=s.get("duplicate_distance", float, 0.1, _at_least(0)),
        duplicate_angle=s.get("duplicate_angle", float, 5.0, _at_least(0)),
        interpolate_directions=s.get("interpolate_directions", bool, False),
        max_speed_kmh=s.get("max_speed_kmh", float, 400.0, _positive),
        zigzag_check=s.get("zigzag_check", bool, True),
        trim_parked_seconds=s.get("trim_parked_seconds", float, 120.0, _at_least(0)),
        trim_parked_radius_m=s.get("trim_parked_radius_m", float, 10.0, _positive),
        trim_min_seconds=s.get("trim_min_seconds", float, 5.0, _at_least(0)),
        trim_margin_m=s.get("trim_margin_m", float, 10.0, _at_least(0)),
        trim_margin_seconds=s.get("trim_margin_seconds", float, 1.0, _at_least(0)),
    )
    s.finish()

    s = _Section(_table(data, "upload", problems), "upload", problems)
    upload = UploadConfig(
        max_parallel_uploads=s.get("max_parallel_uploads", int, 4, _at_least(1)),
        retry_base_seconds=s.get("retry_base_seconds", float, 2.0, _positive),
        retry_cap_seconds=s.get("retry_cap_seconds", float, 900.0, _positive),
        max_retry_after_seconds=s.get("max_retry_after_seconds", float, 3600.0, _positive),
        timeout_seconds=s.get("timeout_seconds", float, 60.0, _positive),
        bandwidth_limit=_bandwidth(s),
        windows=_windows(s),
    )
    s.finish()
    if upload.retry_cap_seconds < upload.retry_base_seconds:
        problems.append("upload.retry_cap_seconds: must not be below upload.retry_base_seconds")

    s = _Section(_table(data, "log", problems), "log", problems)
    log = LogConfig(
        level=s.choice("level", ("debug", "info", "warning", "error"), "info"),
        format=cast(LogFormat, s.choice("format", ("auto", "json", "console"), "auto")),
    )
    s.finish()

    seen: dict[Path, int] = {}
    for i, w in enumerate(watches):
        if w.path in seen:
            problems.append(f"watch[{i}].path: the same folder as watch[{seen[w.path]}]")
        seen.setdefault(w.path, i)

    zones = _build_zones(data.get("privacy_zone", []), problems)
    backup = _build_backup(data, problems, base_dir)
    mounts = _build_mounts(data, problems)
    notify = _build_notify(_Section(_table(data, "notify", problems), "notify", problems))
    status = _build_status(_Section(_table(data, "status", problems), "status", problems), base_dir)
    if problems:
        raise ConfigError(source, problems)
    return Config(
        source,
        state,
        tuple(watches),
        mapillary,
        scan,
        process,
        upload,
        log,
        tuple(zones),
        backup=backup,
        mounts=mounts,
        notify=notify,
        status=status,
    )


def _cron(value: str) -> str | None:
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(value)
    except ValueError as exc:
        return f"not a cron expression ('minute hour day month weekday'): {exc}"
    return None


def _build_backup(
    data: Mapping[str, Any], problems: list[str], base_dir: Path
) -> BackupConfig | None:
    """``[backup]``, or None when the section is absent (no scheduled backup)."""
    if "backup" not in data:
        return None
    s = _Section(_table(data, "backup", problems), "backup", problems)
    archive_dir = s.path("dir", base_dir, None)
    if archive_dir is None:
        s.problem("dir", "required: the folder the archive is kept in")
    d = BackupConfig(dir=Path())
    cfg = BackupConfig(
        dir=archive_dir or Path(),
        username=s.get("username", str, "") or None,
        schedule=s.get("schedule", str, d.schedule, _cron),
        time_zone=s.get("time_zone", str, d.time_zone, _zone),
        misfire_grace_hours=s.get("misfire_grace_hours", float, d.misfire_grace_hours, _positive),
        require_clock_sync=s.get("require_clock_sync", bool, True),
        quality=cast(
            BackupQuality, s.choice("quality", ("256", "1024", "2048", "original"), "original")
        ),
        format=cast(BackupFormat, s.choice("format", ("jpeg", "webp"), "jpeg")),
        webp_quality=s.get(
            "webp_quality", int, 90, lambda v: None if 1 <= v <= 100 else "must be in [1, 100]"
        ),
        tar=s.get("tar", bool, False),
        workers=s.get("workers", int, d.workers, _at_least(1)),
        max_requests_per_second=s.get(
            "max_requests_per_second", float, d.max_requests_per_second, _positive
        ),
        page_size=s.get(
            "page_size", int, 2000, lambda v: None if 1 <= v <= 2000 else "must be in [1, 2000]"
        ),
        retries=s.get("retries", int, d.retries, _at_least(0)),
        timeout_seconds=s.get("timeout_seconds", float, d.timeout_seconds, _positive),
        min_free_mb=s.get("min_free_mb", float, d.min_free_mb, _at_least(0)),
        disk_retry_minutes=s.get("disk_retry_minutes", float, d.disk_retry_minutes, _positive),
    )
    s.finish()
    return cfg


def _build_state(s: _Section, env: Mapping[str, str], base_dir: Path) -> StateConfig:
    default_state = Path(_first_dir(env.get("STATE_DIRECTORY")) or platformdirs.user_state_dir(APP))
    state_dir = s.path("dir", base_dir, default_state) or default_state
    default_logs = Path(_first_dir(env.get("LOGS_DIRECTORY")) or platformdirs.user_log_dir(APP))
    spool = s.path("spool_dir", base_dir, state_dir / "spool") or state_dir / "spool"
    logs = s.path("log_dir", base_dir, default_logs) or default_logs
    min_free_mb = s.get("min_free_mb", float, 200.0, _at_least(0))
    allow_tmpfs = s.get("allow_tmpfs", bool, False)
    s.finish()
    return StateConfig(
        dir=state_dir,
        spool_dir=spool,
        log_dir=logs,
        min_free_mb=min_free_mb,
        allow_tmpfs=allow_tmpfs,
    )


def _first_dir(value: str | None) -> str | None:
    """systemd passes several directories separated by ':'; the first one is ours."""
    return value.split(":")[0] if value else None


def _build_watches(raw: object, problems: list[str], base_dir: Path) -> list[WatchConfig]:
    if not isinstance(raw, list):
        problems.append(f"watch: expected an array of tables ([[watch]]), got {_describe(raw)}")
        return []
    watches = []
    for i, table in enumerate(raw):
        if not isinstance(table, dict):
            problems.append(f"watch[{i}]: expected a table, got {_describe(table)}")
            continue
        s = _Section(table, f"watch[{i}]", problems)
        path = s.path("path", base_dir, None)
        if path is None:
            s.problem("path", "required: the folder to watch")
        root = path or Path(".")
        source = cast(GeotagSourceName, s.choice("geotag_source", ("exif", "gpx", "nmea"), "exif"))
        track_path = s.path("geotag_source_path", root, None)
        if source != "exif" and track_path is None:
            s.problem("geotag_source_path", f"required with geotag_source = {source!r}")
        offset, auto = _offset_time(s)
        if auto and source == "exif":
            s.problem("offset_time", '"auto" needs a track: geotag_source = "gpx" or "nmea"')
        w = WatchConfig(
            path=root,
            recursive=s.get("recursive", bool, True),
            ingest=cast(IngestMode, s.choice("ingest", ("copy", "in_place"), "copy")),
            free_card=cast(FreeCardMode, s.choice("free_card", ("off", "delete", "move"), "off")),
            settle_seconds=s.get("settle_seconds", float, 2.0, _at_least(2)),
            time_zone=s.get("time_zone", str, "", _zone) or None,
            geotag_source=source,
            geotag_source_path=track_path,
            offset_time=offset,
            auto_offset=auto,
            use_gps_start_time=s.get("use_gps_start_time", bool, False),
            offset_angle=s.get("offset_angle", float, 0.0),
            video=cast(VideoMode, s.choice("video", ("native", "frames"), "native")),
            video_sample_distance=s.get("video_sample_distance", float, 3.0, _positive),
            video_sample_interval=s.get("video_sample_interval", float, 0.0, _positive) or None,
            video_geotag_source=cast(
                VideoGeotagSourceName,
                s.choice("video_geotag_source", ("native", "gpx", "nmea"), "native"),
            ),
            video_geotag_source_path=s.get("video_geotag_source_path", str, "") or None,
            video_creation_time=cast(
                CreationClock, s.choice("video_creation_time", ("utc", "local"), "utc")
            ),
        )
        s.finish()
        watches.append(w)
    return watches


def _bandwidth(s: _Section) -> Timetable | None:
    """``bandwidth_limit``: bytes/s, or a rate / timetable string (daemon/limits.py)."""
    s.used.add("bandwidth_limit")
    value = s.table.get("bandwidth_limit")
    if value is None:
        return None
    if not isinstance(value, int | float | str) or isinstance(value, bool):
        s.problem("bandwidth_limit", f"expected bytes/s or a timetable, got {_describe(value)}")
        return None
    try:
        table = Timetable.parse(value)
    except ValueError as exc:
        s.problem("bandwidth_limit", str(exc))
        return None
    return None if table.entries == ((0, None),) else table


def _windows(s: _Section) -> Windows:
    """``windows``: a list of ``[Day[-Day] ]HH:MM-HH:MM`` strings."""
    s.used.add("windows")
    value = s.table.get("windows", [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        s.problem("windows", f'expected a list of "HH:MM-HH:MM" strings, got {_describe(value)}')
        return Windows()
    try:
        return Windows.parse(value)
    except ValueError as exc:
        s.problem("windows", str(exc))
        return Windows()


def _offset_time(s: _Section) -> tuple[float, bool]:
    """``offset_time``: seconds (a number) or ``"auto"``."""
    s.used.add("offset_time")
    value = s.table.get("offset_time", 0.0)
    if value == "auto":
        return 0.0, True
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value), False
    s.problem("offset_time", f'expected a number of seconds or "auto", got {_describe(value)}')
    return 0.0, False


def _build_zones(raw: object, problems: list[str]) -> list[PrivacyZone]:
    if not isinstance(raw, list):
        problems.append(f"privacy_zone: expected [[privacy_zone]] tables, got {_describe(raw)}")
        return []
    zones = []
    for i, table in enumerate(raw):
        if not isinstance(table, dict):
            problems.append(f"privacy_zone[{i}]: expected a table, got {_describe(table)}")
            continue
        s = _Section(table, f"privacy_zone[{i}]", problems)
        before = len(problems)
        for key in ("lat", "lon", "radius_m"):
            if key not in table:
                s.problem(key, "required")
        lat = s.get("lat", float, 0.0, lambda v: None if -90 <= v <= 90 else "must be in [-90, 90]")
        lon = s.get(
            "lon", float, 0.0, lambda v: None if -180 <= v <= 180 else "must be in [-180, 180]"
        )
        radius = s.get("radius_m", float, 0.0, _positive)
        name = s.get("name", str, "")
        s.finish()
        if len(problems) == before:
            zones.append(PrivacyZone(lat, lon, radius, name))
    return zones


def _build_mapillary(s: _Section, env: Mapping[str, str], base_dir: Path) -> MapillaryConfig:
    upload = s.get("upload_endpoint", str, DEFAULT_UPLOAD_ENDPOINT, _url)
    graph = s.get("graph_endpoint", str, DEFAULT_GRAPH_ENDPOINT, _url)
    token_file = s.path("token_file", base_dir, None)
    org = s.get("organization_id", str, "") or None
    if "token" in s.table:
        s.used.add("token")
        s.problem(
            "token", "a token does not belong in the config file: use token_file or MAPILLARY_TOKEN"
        )
    s.finish()
    for var in ("MAPILLARY_UPLOAD_ENDPOINT", "MAPILLARY_GRAPH_API_ENDPOINT"):
        if env.get(var) and _url(env[var]):
            s.problems.append(f"${var}: must be an http:// or https:// URL, got {env[var]!r}")
    return MapillaryConfig(
        upload_endpoint=(env.get("MAPILLARY_UPLOAD_ENDPOINT") or upload).rstrip("/"),
        graph_endpoint=(env.get("MAPILLARY_GRAPH_API_ENDPOINT") or graph).rstrip("/"),
        token_file=token_file,
        token_from_env=env.get("MAPILLARY_TOKEN") or None,
        organization_id=org,
    )


def _build_mounts(data: Mapping[str, Any], problems: list[str]) -> MountsConfig:
    """``[mounts]`` and the ``[[mount_root]]`` tables (each: ``path`` a glob over mount points,
    ``require``, ``labels``, and any ``[[watch]]`` key but ``path``)."""
    s = _Section(_table(data, "mounts", problems), "mounts", problems)
    raw = data.get("mount_root", [])
    if not isinstance(raw, list):
        problems.append(f"mount_root: expected [[mount_root]] tables, got {_describe(raw)}")
        raw = []
    enabled = s.get("enabled", bool, bool(raw))
    rescan = s.get("rescan_seconds", float, 10.0, _at_least(1))
    s.finish()
    roots = []
    for i, table in enumerate(raw):
        if not isinstance(table, dict):
            problems.append(f"mount_root[{i}]: expected a table, got {_describe(table)}")
            continue
        r = _Section(table, f"mount_root[{i}]", problems)
        pattern = os.path.expanduser(r.get("path", str, ""))
        if not pattern.startswith("/"):
            r.problem("path", "required: an absolute pattern of mount points, such as /media/*")
        require = cast(CardFilter, r.choice("require", ("camera", "label", "any"), "camera"))
        labels = r.get("labels", list, [])
        if not all(isinstance(x, str) for x in labels):
            r.problem("labels", "expected an array of volume labels (strings)")
            labels = []
        if require == "label" and not labels:
            r.problem("labels", 'required with require = "label"')
        # The remaining keys are [[watch]] options, checked by the watch builder (relative
        # paths stay relative: they are resolved against each card's mount point).
        options = {k: v for k, v in table.items() if k not in ("path", "require", "labels")}
        inner: list[str] = []
        watches = _build_watches([{**options, "path": "."}], inner, Path())
        problems += [p.replace("watch[0]", f"mount_root[{i}]", 1) for p in inner]
        if watches:
            roots.append(MountRootConfig(pattern, watches[0], require, tuple(labels)))
    if raw:
        return MountsConfig(enabled, tuple(roots), rescan)
    return MountsConfig(enabled=enabled, rescan_seconds=rescan)


def _build_notify(s: _Section) -> NotifyConfig:
    cfg = NotifyConfig(
        webhook_url=s.get("webhook_url", str, "", _optional_url) or None,
        webhook_min_interval_seconds=s.get("webhook_min_interval_seconds", float, 900.0, _positive),
        heartbeat_url=s.get("heartbeat_url", str, "", _optional_url) or None,
        heartbeat_interval_seconds=s.get("heartbeat_interval_seconds", float, 300.0, _at_least(10)),
    )
    s.finish()
    return cfg


def _optional_url(value: str) -> str | None:
    return _url(value) if value else None


def _build_status(s: _Section, base_dir: Path) -> StatusPageConfig:
    """``[status]``: a listen address other than loopback is refused without a token file."""
    listen = s.get("listen", str, "127.0.0.1", _listen_address)
    cfg = StatusPageConfig(
        enabled=s.get("enabled", bool, True),
        listen=listen,
        port=s.get("port", int, 8686, lambda v: None if 0 <= v <= 65535 else "must be 0-65535"),
        token_file=s.path("token_file", base_dir, None),
    )
    if cfg.enabled and cfg.token_file is None and not is_loopback(listen):
        s.problem(
            "token_file",
            f"required when listen = {listen!r} (not loopback): the page and /metrics "
            "would be open to the network without a token",
        )
    s.finish()
    return cfg


def is_loopback(address: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ::1)."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _listen_address(value: str) -> str | None:
    if value == "localhost":
        return None
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"expected an IP address (127.0.0.1, 0.0.0.0, ::1, ::) or 'localhost', got {value!r}"
    return None
