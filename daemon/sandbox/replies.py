"""Answers the sandbox sends, and the two error envelopes the real services use.

Graph API errors: ``{"error": {"message", "type", "code", "error_subcode"?, "fbtrace_id"}}``.
Upload service errors: ``{"debug_info": {"retriable", "type", "message"}}``.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

JSON_TYPE = "application/json"
GRAPH_API_EXCEPTION = "MLYApiException"
OAUTH_EXCEPTION = "OAuthException"
CODE_INVALID_PARAMETER = 100
CODE_INVALID_TOKEN = 190


@dataclass(frozen=True)
class Reply:
    """One complete HTTP answer."""

    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    """``payload`` as compact JSON."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Reply(status, body, JSON_TYPE, dict(headers or {}))


def graph_error(
    status: int,
    message: str,
    *,
    error_type: str = GRAPH_API_EXCEPTION,
    code: int = CODE_INVALID_PARAMETER,
    subcode: int | None = None,
) -> Reply:
    """A Graph API error envelope with a fresh ``fbtrace_id``."""
    error: dict[str, Any] = {"message": message, "type": error_type, "code": code}
    if subcode is not None:
        error["error_subcode"] = subcode
    error["fbtrace_id"] = secrets.token_urlsafe(9)
    return json_reply(status, {"error": error})


def auth_failed() -> Reply:
    """401 for a missing or wrong token, as the Graph API words it."""
    return graph_error(
        401, "Invalid OAuth access token.", error_type=OAUTH_EXCEPTION, code=CODE_INVALID_TOKEN
    )


def upload_error(status: int, error_type: str, message: str, *, retriable: bool) -> Reply:
    """An upload service error envelope."""
    debug_info = {"retriable": retriable, "type": error_type, "message": message}
    return json_reply(status, {"debug_info": debug_info})
