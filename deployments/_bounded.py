"""A limit on one backend's calls from one process: so many at once, so many waiting, then 429.

A proxy placed in the ingress shares the ingress's event loop with every other backend; this
bound keeps one slow provider from holding an unbounded pile of requests (and sockets) there,
the way Serve's `max_ongoing_requests` / `max_queued_requests` bound a deployment."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from deployments._base import Backend, BackendError, Endpoint, Health


class BoundedBackend(Backend):
    """Runs at most `max_ongoing` calls of `inner` at once; up to `max_queued` more wait in
    line (-1: no limit), and any beyond get `backend_overloaded` (429, retryable: the route's
    fallbacks or a later retry serve it). A stream holds its slot until it ends."""

    def __init__(self, name: str, inner: Backend, max_ongoing: int, max_queued: int) -> None:
        self.name = name
        self.inner = inner
        self.max_ongoing = max_ongoing
        self.max_queued = max_queued
        self._slots = asyncio.Semaphore(max_ongoing)
        self._ongoing = 0
        self._waiting = 0

    def load(self) -> dict[str, int]:
        return {
            "ongoing": self._ongoing,
            "waiting": self._waiting,
            "max_ongoing_requests": self.max_ongoing,
            "max_queued_requests": self.max_queued,
        }

    async def _enter(self) -> None:
        if self._slots.locked():
            if 0 <= self.max_queued <= self._waiting:
                raise BackendError(
                    f"backend {self.name!r} is at capacity ({self.max_ongoing} requests running "
                    f"and {self._waiting} waiting in this gateway replica); retry shortly",
                    status=429,
                    type="rate_limit_error",
                    code="backend_overloaded",
                )
            self._waiting += 1
            try:
                await self._slots.acquire()
            finally:
                self._waiting -= 1
        else:
            await self._slots.acquire()
        self._ongoing += 1

    def _leave(self) -> None:
        self._ongoing -= 1
        self._slots.release()

    async def complete(self, endpoint: Endpoint, body: dict[str, Any]) -> dict[str, Any]:
        await self._enter()
        try:
            return await self.inner.complete(endpoint, body)
        finally:
            self._leave()

    async def stream(self, endpoint: Endpoint, body: dict[str, Any]) -> AsyncIterator[bytes]:
        await self._enter()
        try:
            async for chunk in self.inner.stream(endpoint, body):
                yield chunk
        finally:
            self._leave()

    async def health(self) -> Health:
        return await self.inner.health()

    async def close(self) -> None:
        await self.inner.close()
