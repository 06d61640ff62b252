"""The exceptions the rest of the daemon sees.

Third-party exceptions (httpx, piexif, sqlite3, gpxpy) are translated into these at the module
that talks to the library, chained with ``raise … from exc``. Two families are kept apart:

* ``ItemError`` and subclasses: one file is bad. Recorded on its queue row as a reason; the daemon
  moves on.
* ``FatalError`` and subclasses: the daemon cannot do its job at all (bad config, unwritable
  state). The CLI turns them into an exit code.

Upload failures are neither: they are classified by :mod:`daemon.retry` into wait, hold or reject.
"""

from __future__ import annotations


class DaemonError(Exception):
    """Base of every exception raised on purpose by this package."""


# --- fatal -------------------------------------------------------------------------------------


class FatalError(DaemonError):
    """The daemon or a command cannot go on. ``exit_code`` is what the CLI returns."""

    exit_code = 1


class ConfigError(FatalError):
    """The configuration is unusable. ``problems`` lists every ``key.path: message`` found."""

    exit_code = 2

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s) in the configuration:\n{lines}")


class StateError(FatalError):
    """The state directory or queue database cannot be used."""

    exit_code = 3


# --- per item ----------------------------------------------------------------------------------


class ItemError(DaemonError):
    """One media file cannot be used. ``reason`` is a short stable code; the message says why."""

    reason = "invalid"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class CorruptMediaError(ItemError):
    """The container is unreadable (not a JPEG, truncated, broken EXIF that cannot be rewritten)."""

    reason = "corrupt_media"


class NoGpsError(ItemError):
    """No usable position for the file."""

    reason = "no_gps"


class NoTimeError(ItemError):
    """No usable capture time for the file."""

    reason = "no_time"


class UnsupportedMediaError(ItemError):
    """A file type mapillaryd does not upload (yet)."""

    reason = "unsupported"


# --- upload protocol (raised by daemon.mapillary, classified by daemon.retry) -------------------


class UploadError(DaemonError):
    """An exchange with the upload service or Graph API failed.

    ``status`` is the HTTP status (None when no response arrived), ``retry_after`` the delay in
    seconds the server asked for (``Retry-After`` header or JSON ``backoff``), ``retriable`` the
    server's own ``debug_info.retriable`` verdict when it gave one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        retriable: bool | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.retriable = retriable
        self.error_type = error_type


class TransportError(UploadError):
    """No usable response: connection refused or reset, timeout, body cut.

    ``unreachable`` is True when no connection could be made at all (refused, no route, name
    not resolved, connect timeout): the machine is offline or the service is down, as
    opposed to an exchange that broke half-way.
    """

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


class AuthError(UploadError):
    """The token was rejected (401, 403, or a ``NotAuthorizedError``)."""


class ProtocolError(UploadError):
    """A 2xx response whose content is not what the protocol promises (no ``h``, bad JSON)."""
