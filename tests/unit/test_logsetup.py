"""Logs: JSON lines when not on a terminal, and secrets never in them."""

from __future__ import annotations

import io
import json

import structlog

from daemon.logsetup import REDACTOR, configure


def test_json_lines_with_the_token_and_authorization_values_redacted() -> None:
    out = io.StringIO()
    configure("info", "auto", stream=out)  # a StringIO is not a TTY: JSON
    REDACTOR.add("tok-1234-secret")
    log = structlog.get_logger("t")
    log.info(
        "upload_failed", error="401 for tok-1234-secret", header="Authorization: OAuth abc.def"
    )
    log.debug("hidden")
    [line] = out.getvalue().splitlines()
    event = json.loads(line)
    assert event["event"] == "upload_failed" and event["level"] == "info"
    assert "tok-1234-secret" not in line and "abc.def" not in line
    assert event["header"] == "Authorization: OAuth ***"


def test_console_format_on_request() -> None:
    out = io.StringIO()
    configure("debug", "console", stream=out)
    structlog.get_logger("t").debug("hello", n=1)
    assert "hello" in out.getvalue() and "n=1" in out.getvalue()
