"""Where the user token comes from, read fresh so that fixing it needs no restart.

Order: ``MAPILLARY_TOKEN`` (captured in the config at start-up), then ``[mapillary] token_file``.
The token itself is never logged; :func:`fingerprint` names it in holds and logs instead.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from daemon.config import MapillaryConfig
from daemon.logsetup import REDACTOR


def fingerprint(token: str) -> str:
    """A short, non-reversible name for ``token`` (to notice that it changed)."""
    return hashlib.sha256(token.encode()).hexdigest()[:12]


class TokenSource:
    """The current user token, or None with :attr:`problem` saying why there is none."""

    def __init__(self, cfg: MapillaryConfig) -> None:
        self.cfg = cfg
        self.problem = ""

    def current(self) -> str | None:
        if self.cfg.token_from_env:
            return self.cfg.token_from_env.strip()
        path: Path | None = self.cfg.token_file
        if path is None:
            self.problem = "no token: set MAPILLARY_TOKEN or [mapillary] token_file"
            return None
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            self.problem = f"mapillary.token_file: cannot read {path}: {exc.strerror}"
            return None
        if not token:
            self.problem = f"mapillary.token_file: {path} is empty"
            return None
        self.problem = ""
        REDACTOR.add(token)  # a token changed while running is scrubbed from logs too
        return token
