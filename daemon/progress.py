"""What is being uploaded right now, with bytes sent: a thread-safe registry for the status page.

Upload workers report (:meth:`ProgressRegistry.begin`, :meth:`~ProgressRegistry.advance`,
:meth:`~ProgressRegistry.end`); the status page and ``/metrics`` read :meth:`snapshot` and
:attr:`sent_total`. Nothing here is persisted: it describes this process only, which is why the
queue database, not this registry, is the record of what was uploaded.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Transfer:
    """One upload in flight: ``sent`` of ``total`` bytes (``sent`` starts at a resumed offset)."""

    item_id: int
    path: str
    kind: str
    sent: int
    total: int


class ProgressRegistry:
    """Transfers in flight, keyed by item id, and the bytes sent by this process so far."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._transfers: dict[int, Transfer] = {}
        self._sent_total = 0

    def begin(self, item_id: int, path: str, kind: str, total: int, offset: int = 0) -> None:
        """A transfer of ``total`` bytes starts at ``offset`` (what the server already holds)."""
        with self._lock:
            self._transfers[item_id] = Transfer(item_id, path, kind, offset, total)

    def advance(self, item_id: int, position: int) -> None:
        """The transfer reached the absolute byte ``position``; unknown ids are ignored."""
        with self._lock:
            t = self._transfers.get(item_id)
            if t is None or position <= t.sent:
                return
            self._sent_total += position - t.sent
            self._transfers[item_id] = Transfer(t.item_id, t.path, t.kind, position, t.total)

    def end(self, item_id: int) -> None:
        """The transfer is over, whatever its outcome."""
        with self._lock:
            self._transfers.pop(item_id, None)

    def snapshot(self) -> list[Transfer]:
        """The transfers in flight, by item id."""
        with self._lock:
            return sorted(self._transfers.values(), key=lambda t: t.item_id)

    @property
    def sent_total(self) -> int:
        """Bytes handed to the network by uploads of this process (resumed bytes not counted)."""
        with self._lock:
            return self._sent_total


#: The daemon's registry: its upload workers write it, its status page reads it.
PROGRESS = ProgressRegistry()
