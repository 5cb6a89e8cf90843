"""One background writer for everything the gateway records: items are queued by the event
loop and written in batches by a thread, so the loop never waits on a disk or a metrics agent."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

logger = logging.getLogger("ray.serve")
T = TypeVar("T")


class BatchWriter(Generic[T]):
    """Collects items and hands them to `write` in batches, at most every `interval_s`.

    Batching keeps the writer thread mostly asleep: each wake-up may hold the GIL the event
    loop is waiting for. `close` writes what is still queued before it returns.
    """

    def __init__(self, name: str, write: Callable[[list[T]], None], interval_s: float) -> None:
        self._write = write
        self._interval_s = interval_s
        self._pending: list[T] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Condition(self._lock)
        self._writing = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def add(self, item: T) -> None:
        """Queue one item; never blocks on I/O."""
        with self._lock:
            self._pending.append(item)
            if len(self._pending) == 1:
                self._wake.set()

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything queued so far is written (reads that must see it, shutdown)."""
        self._wake.set()  # no need to let the batch gather
        with self._idle:
            return self._idle.wait_for(lambda: not self._pending and not self._writing, timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        """Write everything still queued, then stop the thread."""
        with self._lock:
            self._closed = True
        self._wake.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            logger.error("writer %s did not finish within %.0f s", self._thread.name, timeout_s)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            with self._lock:
                closed = self._closed
            if not closed:
                # Let a batch gather (cut short by close, which sets the event again).
                self._wake.clear()
                self._wake.wait(self._interval_s)
            with self._lock:
                batch, self._pending = self._pending, []
                self._writing = bool(batch)
                closed = self._closed
                if not closed:
                    self._wake.clear()
            if batch:
                try:
                    self._write(batch)
                except Exception:  # a full disk must not stop the writer for good
                    logger.exception("writer %s failed on %d items", self._thread.name, len(batch))
            with self._idle:
                self._writing = False
                self._idle.notify_all()
                if closed and not self._pending:
                    return
