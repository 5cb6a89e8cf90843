"""The entries of one ingress replica: bounded by count and bytes (least recently used go
first), each with its expiry and the model version that wrote it."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Entry:
    """One answer: a whole body, or the events of a stream, as the client received them."""

    key: str
    route: str | None
    backend: str
    model: str | None  # the model the upstream said answered (`model` of its reply)
    native: bool  # in the client's own API (a backend spoke it), not chat terms
    body: bytes | None = None
    chunks: tuple[bytes, ...] = ()
    usage: dict[str, Any] = field(default_factory=dict)
    expires: float = 0.0
    text: str | None = None  # semantic mode: the last user turn it answers
    partition: str | None = None

    @property
    def size(self) -> int:
        return len(self.body or b"") + sum(map(len, self.chunks)) + len(self.text or "") + 256


class EntryStore:
    """Entries by key. Not thread-safe: one event loop uses it."""

    def __init__(
        self,
        max_entries: int,
        max_bytes: int,
        on_remove: Callable[[Entry], None] = lambda entry: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._max_entries, self._max_bytes = max_entries, max_bytes
        self._bytes = 0
        self._on_remove = on_remove
        self.clock = clock
        # The latest model each backend said it answered with: an entry written by another
        # is stale (the provider moved the alias, or the deployment changed its weights).
        self.models: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return self._bytes

    def get(self, key: str) -> Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= self.clock() or self._stale(entry):
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def _stale(self, entry: Entry) -> bool:
        latest = self.models.get(entry.backend)
        return latest is not None and entry.model is not None and latest != entry.model

    def saw_model(self, backend: str, model: str | None) -> None:
        if model:
            self.models[backend] = model

    def put(self, entry: Entry, ttl_s: float) -> None:
        if entry.size > self._max_bytes:
            return
        entry.expires = self.clock() + ttl_s
        if entry.key in self._entries:
            self._drop(entry.key)
        self._entries[entry.key] = entry
        self._bytes += entry.size
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key)
        self._bytes -= entry.size
        self._on_remove(entry)

    def purge(self, route: str | None = None, backend: str | None = None) -> int:
        """Remove every entry (of `route`, of `backend`, where given); how many went."""
        doomed = [
            key
            for key, entry in self._entries.items()
            if (route is None or entry.route == route)
            and (backend is None or entry.backend == backend)
        ]
        for key in doomed:
            self._drop(key)
        return len(doomed)
