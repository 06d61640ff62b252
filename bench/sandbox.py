"""The sandbox in a process of its own, one per contender run.

That is ``python -m daemon.sandbox``, as it is.

A separate process keeps the server's CPU out of both contenders' figures and out of the bench
process, whose polling must not compete with it for the GIL. Each run gets a fresh data
directory, so nothing is deduplicated against an earlier run, and a fresh process, so its
request statistics start at zero. All traffic is to 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from bench.proc import Child, Exit

TOKEN = "bench-user-token-7c1e44"
START_TIMEOUT_S = 30.0
HTTP_TIMEOUT_S = 30.0
_SERVING = re.compile(r"sandbox serving (http://127\.0\.0\.1:\d+) ")
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


@dataclass(frozen=True)
class Stats:
    """What the sandbox counted, without the bench's own ``/_sandbox/`` inspection requests."""

    requests: dict[str, int]
    bytes_received: int

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())


class SandboxProcess:
    """The sandbox on a free port of 127.0.0.1, keeping its state in ``data``."""

    def __init__(self, data: Path, env: dict[str, str], faults: str | None = None) -> None:
        """``faults``: a fault spec (JSON/TOML text or file) for ``--faults``, or None."""
        data.mkdir(parents=True, exist_ok=True)
        self.data = data
        self.faults = faults
        self.module = "daemon.sandbox"
        self.log = data.parent / f"{data.name}.log"
        self._env = env
        self._child: Child | None = None
        self.url = ""
        self.exit: Exit | None = None

    @property
    def upload_endpoint(self) -> str:
        return f"{self.url}/upload"

    @property
    def graph_endpoint(self) -> str:
        return self.url

    def start(self) -> SandboxProcess:
        """Start the server and wait until it says where it listens."""
        argv = [sys.executable, "-m", self.module, "--port", "0", "--host", "127.0.0.1"]
        argv += ["--data", str(self.data), "--token", TOKEN]
        if self.faults is not None:
            argv += ["--faults", self.faults]
        self._child = Child(argv, env=self._env, log=self.log)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            found = _SERVING.search(self.log.read_text(encoding="utf-8", errors="replace"))
            if found:
                self.url = found.group(1)
                return self
            if self._child.exit is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the sandbox did not start:\n{self._child.tail()}")

    def stop(self) -> Exit | None:
        """SIGTERM the server and reap it (its CPU is then in :attr:`exit`). Idempotent."""
        if self._child is not None and self.exit is None:
            self.exit = self._child.stop(timeout=15.0)
        return self.exit

    def _get(self, route: str) -> Any:
        if not self.url:
            raise RuntimeError("the sandbox is not running")
        with _DIRECT.open(f"{self.url}{route}", timeout=HTTP_TIMEOUT_S) as reply:
            return json.loads(reply.read())

    def stats(self) -> Stats:
        """Requests per route and bytes received since the server started."""
        raw = self.raw_stats()
        requests = {
            route: int(n) for route, n in raw["requests"].items() if "/_sandbox/" not in route
        }
        return Stats(requests, int(raw["bytes_received"]))

    def raw_stats(self) -> dict[str, Any]:
        """``GET /_sandbox/stats`` as it is (wire bytes, fault counts with a fault spec)."""
        raw: dict[str, Any] = self._get("/_sandbox/stats")
        return raw

    def session_bytes(self, key: str) -> bytes:
        """What the sandbox holds for upload session ``key``."""
        quoted = urllib.parse.quote(key, safe="")
        with _DIRECT.open(f"{self.url}/_sandbox/sessions/{quoted}", timeout=HTTP_TIMEOUT_S) as r:
            data: bytes = r.read()
        return data

    def clusters(self) -> list[dict[str, Any]]:
        """Every finished cluster, in creation order."""
        clusters: list[dict[str, Any]] = self._get("/_sandbox/clusters")
        return clusters

    def __enter__(self) -> SandboxProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
