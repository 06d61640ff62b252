"""A text progress bar on stderr (redrawn in place on a terminal, a line per 10 % otherwise)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Bar:
    """Counts images and bytes against a total; :meth:`__call__` takes job progress events."""

    def __init__(self, stream: TextIO | None = None, width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.width = width
        self.total = 0
        self.done = 0
        self.bytes = 0
        self.listed = 0
        self._started = time.monotonic()
        self._last_decile = -1

    def __call__(self, what: str, n: int) -> None:
        if what == "listed":
            self.listed = n
            if self.tty:
                self.stream.write(f"\rlisting: {n} images")
                self.stream.flush()
        elif what == "total":
            self.total = n
            if self.tty and self.listed:
                self.stream.write("\n")
            self._draw()
        elif what == "image":
            self.done += 1
            self.bytes += n
            self._draw()

    def _draw(self) -> None:
        frac = self.done / self.total if self.total else 1.0
        rate = self.done / max(1e-6, time.monotonic() - self._started)
        fill = int(frac * self.width)
        line = (
            f"[{'#' * fill}{'.' * (self.width - fill)}] {self.done}/{self.total}"
            f"  {self.bytes / 1e6:.1f} MB  {rate:.1f} img/s"
        )
        if self.tty:
            self.stream.write(f"\r{line}")
            if self.done >= self.total:
                self.stream.write("\n")
            self.stream.flush()
            return
        decile = int(frac * 10)
        if decile != self._last_decile:
            self._last_decile = decile
            self.stream.write(line + "\n")
            self.stream.flush()
