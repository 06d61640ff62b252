"""A local Mapillary-compatible server: upload service, Graph API subset, inspection routes.

Used by the tests, ``mapillaryd sandbox`` and ``mapillaryd demo``; also runnable on its own as
``python -m daemon.sandbox --port N --data DIR --token T``. Routes, ``{base}`` being
:attr:`Sandbox.url`:

* ``GET/POST {base}/upload/{session_key}``: resumable byte sessions → ``{"offset"}`` / ``{"h"}``;
* ``POST {base}/finish_upload``, ``GET {base}/me``, ``POST {base}/logging``, ``GET {base}/{id}``;
* ``GET {base}/_sandbox/clusters``, ``/_sandbox/stats``, ``/_sandbox/sessions/{key}`` (no auth).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from daemon.sandbox.app import Disconnect, FaultHook, NoFaults, Request
from daemon.sandbox.replies import Reply
from daemon.sandbox.server import Sandbox, serve

__all__ = ["Disconnect", "FaultHook", "NoFaults", "Reply", "Request", "Sandbox", "main", "serve"]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m daemon.sandbox``: serve until SIGINT/SIGTERM; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m daemon.sandbox", description="Run the local Mapillary sandbox."
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--data", type=Path, required=True, help="directory for its state")
    parser.add_argument("--token", required=True, help="the user access token it accepts")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    parser.add_argument(
        "--faults", metavar="SPEC", help="fault injection: a JSON/TOML file or text (faults.py)"
    )
    args = parser.parse_args(argv)
    hook = None
    if args.faults:
        from daemon.errors import ConfigError
        from daemon.sandbox.faults import FaultInjector, load_spec

        try:
            hook = FaultInjector(load_spec(args.faults))
        except ConfigError as exc:
            parser.exit(2, f"{parser.prog}: {exc}\n")
    serve(args.port, args.data, args.token, args.host, verbose=args.verbose, faults=hook)
    return 0
