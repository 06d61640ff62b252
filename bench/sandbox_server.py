"""``python -m bench.sandbox_server``: the sandbox as the bench runs it, minus two server artefacts.

The sandbox (:mod:`daemon.sandbox`) runs unchanged — same routes, same checks, same store —
with two settings changed in this process only, because each made the *server* the bottleneck
of both contenders' upload phase, so the bench would have measured the sandbox, not the clients:

1. **TCP_NODELAY.** Its ``http.server`` handler writes a reply's headers and body in two
   ``send`` calls; with Nagle's algorithm on, the body waits for the client's delayed ACK of
   the headers: ~44 ms per request on 127.0.0.1 instead of ~2 ms (measured here). Turned off
   with the standard :attr:`socketserver.StreamRequestHandler.disable_nagle_algorithm` switch.
2. **Its own records in WAL with ``synchronous=NORMAL``.** The store commits three small
   transactions per uploaded chunk under one lock in SQLite's default rollback-journal mode,
   each with several fsyncs: that serialised ~13 ms per POST and capped the sandbox at ~50-75
   image uploads/s from four client threads (~150-190/s with this setting). The sandbox's data
   directory is a fresh temporary one per run, so its durability is of no interest here.

``python -m bench --stock-sandbox`` runs ``python -m daemon.sandbox`` as it is instead. Both
settings would be better made in :mod:`daemon.sandbox` itself; this module then shrinks to a
call of :func:`daemon.sandbox.main`.
"""

from __future__ import annotations

import socketserver
import sqlite3
from typing import Any

from daemon.sandbox import main as sandbox_main

_connect = sqlite3.connect


def _relaxed_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
    """:func:`sqlite3.connect`, then WAL and ``synchronous=NORMAL`` (the sandbox's DB only)."""
    conn: sqlite3.Connection = _connect(*args, **kwargs)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def main() -> int:
    """Serve the sandbox (same arguments as ``python -m daemon.sandbox``) with both settings."""
    socketserver.StreamRequestHandler.disable_nagle_algorithm = True
    setattr(sqlite3, "connect", _relaxed_connect)  # noqa: B010 (this process is only the sandbox)
    return sandbox_main()


if __name__ == "__main__":
    raise SystemExit(main())
