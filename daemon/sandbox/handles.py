"""File handles shaped like the real upload service's.

A handle is ``3:<b64(session_key)>:<b64(mime)>:<opaque>:e:<unix expiry>:<sig>``. ``opaque`` and
``sig`` are HMAC-SHA256 values under the sandbox's secret, so a handle is a pure function of the
secret, the session key and the session's creation time: asking twice gives the same string, and a
handle made up or edited by a client fails :meth:`HandleSigner.parse`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import mimetypes
from dataclasses import dataclass

HANDLE_VERSION = "3"
HANDLE_TTL_S = 7 * 24 * 3600
_MIME_BY_SUFFIX = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".mp4": "video/mp4",
    ".zip": "application/zip",
    ".json": "application/json",
}


class HandleError(ValueError):
    """The string is not a handle this sandbox issued."""


@dataclass(frozen=True)
class Handle:
    """The parts of a verified handle."""

    session_key: str
    mime: str
    expires_at: int


def mime_for(session_key: str) -> str:
    """The MIME type the handle of ``session_key`` carries, guessed from its suffix."""
    dot = session_key.rfind(".")
    suffix = session_key[dot:].lower() if dot >= 0 else ""
    if suffix in _MIME_BY_SUFFIX:
        return _MIME_BY_SUFFIX[suffix]
    guessed, _ = mimetypes.guess_type(f"x{suffix}")
    return guessed or "application/octet-stream"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


def _unb64(text: str) -> str:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True).decode()
    except (binascii.Error, UnicodeError) as exc:
        raise HandleError("a handle field is not valid base64") from exc


class HandleSigner:
    """Issues and verifies handles with one secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def _mac(self, message: str) -> str:
        digest = hmac.new(self._secret, message.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")

    def issue(self, session_key: str, created_at: int) -> str:
        """The handle of ``session_key``, a session first seen at unix time ``created_at``."""
        opaque = self._mac(f"opaque:{session_key}")[:22]
        body = ":".join(
            [
                HANDLE_VERSION,
                _b64(session_key),
                _b64(mime_for(session_key)),
                opaque,
                "e",
                str(created_at + HANDLE_TTL_S),
            ]
        )
        return f"{body}:{self._mac(body)}"

    def parse(self, handle: str) -> Handle:
        """Verify ``handle`` and return its parts; raise :class:`HandleError` if it is not ours.

        Expiry is not checked here: the caller compares ``expires_at`` with its clock.
        """
        parts = handle.split(":")
        if len(parts) != 7 or parts[0] != HANDLE_VERSION or parts[4] != "e":
            raise HandleError("not a version-3 file handle")
        body, sig = ":".join(parts[:6]), parts[6]
        if not hmac.compare_digest(sig, self._mac(body)):
            raise HandleError("file handle signature does not match")
        if not parts[5].isdigit():
            raise HandleError("file handle expiry is not a unix time")
        return Handle(_unb64(parts[1]), _unb64(parts[2]), int(parts[5]))
