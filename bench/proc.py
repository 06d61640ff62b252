"""A child process timed by the wall clock and charged with its own CPU, from ``wait4``.

The child is reaped with :func:`os.wait4` by a helper thread, so the exit is seen the instant it
happens and its ``rusage`` is exactly that process plus every descendant it reaped itself (Linux
fills ``wait4``'s rusage with ``RUSAGE_BOTH`` of the child: mapillary_tools' process pool
workers are included, nothing else the bench started is). The bench's own CPU (polling, the
table) and the sandbox's CPU are in other processes and never counted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Exit:
    """How a child ended: exit code (negative: killed by that signal), CPU, when (monotonic)."""

    code: int
    user_s: float
    sys_s: float
    ended: float

    @property
    def cpu_s(self) -> float:
        """User plus system CPU seconds of the child's process tree."""
        return self.user_s + self.sys_s


class Child:
    """One subprocess whose output goes to ``log``; reaped by :func:`os.wait4` in a thread."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        log: Path,
        cwd: Path | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log = log
        self._exit: Exit | None = None
        self._done = threading.Event()
        with log.open("ab") as out:
            self.started_wall = time.time()  # only to place the child's log timestamps
            self.started = time.monotonic()
            self._popen = subprocess.Popen(
                self.argv,
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.pid = self._popen.pid
        # Signals go through a pidfd: never to another process that reused the pid after reaping.
        self._pidfd: int | None = os.pidfd_open(self.pid)
        self._pidfd_lock = threading.Lock()
        self._reaper = threading.Thread(target=self._reap, name=f"reap {self.pid}", daemon=True)
        self._reaper.start()

    def _reap(self) -> None:
        _, status, usage = os.wait4(self.pid, 0)
        ended = time.monotonic()
        code = os.waitstatus_to_exitcode(status)
        self._popen.returncode = code  # so Popen never tries to reap it again
        self._exit = Exit(code, usage.ru_utime, usage.ru_stime, ended)
        self._done.set()
        with self._pidfd_lock:
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None

    @property
    def exit(self) -> Exit | None:
        """The exit, once the child has ended."""
        return self._exit if self._done.is_set() else None

    def wait(self, timeout: float | None = None) -> Exit | None:
        """Wait up to ``timeout`` seconds for the child to end; None if it is still running."""
        self._done.wait(timeout)
        return self.exit

    def signal(self, sig: int) -> None:
        """Send ``sig`` if the child has not been reaped yet."""
        with self._pidfd_lock:
            if self._pidfd is not None:
                with contextlib.suppress(ProcessLookupError):  # exited, not reaped yet
                    signal.pidfd_send_signal(self._pidfd, sig)

    def stop(self, timeout: float = 40.0) -> Exit:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL; return how it ended."""
        self.signal(signal.SIGTERM)
        ended = self.wait(timeout)
        if ended is None:
            self.signal(signal.SIGKILL)
            ended = self.wait(10.0)
        if ended is None:
            raise RuntimeError(f"pid {self.pid} ({self.argv[0]}) survived SIGKILL")
        return ended

    def tail(self, chars: int = 3000) -> str:
        """The end of the child's output, for error messages."""
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return text[-chars:]
