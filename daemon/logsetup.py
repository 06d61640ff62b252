"""structlog configuration: console lines on a terminal, JSON lines otherwise (journald, files).

Secrets never reach the output: a processor replaces every occurrence of the registered secret
strings (the token) and any ``Authorization`` value in event fields.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import warnings
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

BENIGN_WATCHDOG_WARNING = r"Callback with id .* already exists for watch"
_AUTH_VALUE = re.compile(r"((?:OAuth|Bearer)\s+)[^\s\"',]+", re.IGNORECASE)


class Redactor:
    """A structlog processor that masks secrets in every string field of an event."""

    def __init__(self) -> None:
        self.secrets: set[str] = set()

    def add(self, secret: str | None) -> None:
        if secret and len(secret) >= 4:
            self.secrets.add(secret)

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return _AUTH_VALUE.sub(r"\1***", text)

    def __call__(
        self, _logger: Any, _name: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in list(event.items()):
            if isinstance(value, str):
                event[key] = self.scrub(value)
            elif isinstance(value, BaseException):
                event[key] = self.scrub(str(value))
        return event


REDACTOR = Redactor()


#: journald priorities (syslog levels) for structlog's level names.
JOURNAL_PRIORITIES = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}


def is_journal_stream(stream: TextIO, env: Mapping[str, str]) -> bool:
    """True if ``stream`` is the journal connection systemd announced in ``$JOURNAL_STREAM``
    (``device:inode`` of the socket it gave us as stdout/stderr; systemd.exec(5))."""
    dev, _, ino = env.get("JOURNAL_STREAM", "").partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


class JournalPrefix:
    """Wraps a renderer: each line starts with its journald priority (``<3>`` for errors),
    which journald strips and keeps as the entry's priority (``SyslogLevelPrefix=``, on by
    default), so ``journalctl -p warning`` works."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, logger: Any, name: str, event: MutableMapping[str, Any]) -> str:
        priority = JOURNAL_PRIORITIES.get(str(event.get("level", "info")), 6)
        return f"<{priority}>{self.inner(logger, name, event)}"


def configure(
    level: str = "info",
    fmt: str = "auto",
    stream: TextIO | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """Set up structlog for the process. ``fmt`` is ``auto`` (console on a TTY), ``json`` or
    ``console``. Under systemd (``$JOURNAL_STREAM`` names our stdout) lines go to stdout as
    JSON with journald priority prefixes; otherwise to ``stream`` (default stderr). Safe to
    call more than once."""
    env = os.environ if env is None else env
    if stream is None and is_journal_stream(sys.stdout, env):
        stream = sys.stdout
    stream = stream or sys.stderr
    journal = is_journal_stream(stream, env)
    # watchdog 7 warns when a new subfolder's inotify watch is registered twice (its recursive
    # add races the folder's own creation event) and then overwrites it: harmless, and on a
    # card full of DCIM/ folders it would print a line per folder.
    warnings.filterwarnings("ignore", message=BENIGN_WATCHDOG_WARNING, category=RuntimeWarning)
    console = fmt == "console" or (fmt == "auto" and stream.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=stream.isatty())
        if console
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    if journal:
        renderer = JournalPrefix(renderer)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            REDACTOR,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
