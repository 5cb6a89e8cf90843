"""Backend availability as the ingress sees it: background health probes plus live answers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from deployments import Backend
from gateway.core.attempts import AttemptOutcome, Observer
from router import Availability

logger = logging.getLogger("ray.serve")


class HealthMonitor(Observer):
    """Probes every backend in the background (fast until each has answered once), and
    marks a backend up as soon as it answers a request (from the feedback channel)."""

    def __init__(
        self,
        backends: Mapping[str, Backend],
        unavailable: Mapping[str, str],
        interval_s: float,
        on_refresh: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.backends = backends
        self.interval_s = interval_s
        self.on_refresh = on_refresh
        self.availability: dict[str, Availability] = {
            name: Availability(False, unavailable[name], definite=True)
            if name in unavailable
            else Availability()
            for name in backends
        }
        self.checked_at = 0.0
        self._confirmed: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def refresh(self) -> None:
        names = list(self.backends)
        results = await asyncio.gather(*(self.backends[n].health() for n in names))
        fresh: dict[str, Availability] = {}
        for name, result in zip(names, results, strict=True):
            previous = self.availability[name]
            if result.available:
                self._confirmed.add(name)
            if result.available or (name not in self._confirmed and not previous.definite):
                # Until a backend has answered once, a failed probe means "still starting".
                fresh[name] = Availability()
            else:
                fresh[name] = Availability(False, result.reason, definite=previous.definite)
        self.availability = fresh
        self.checked_at = time.monotonic()
        if self.on_refresh is not None:
            self.on_refresh(names)

    async def _refresh_forever(self) -> None:
        interval = 1.0  # fast until every backend has answered once (replicas may be starting)
        while True:
            await asyncio.sleep(interval)
            if all(n in self._confirmed or s.definite for n, s in self.availability.items()):
                interval = self.interval_s
            try:
                await self.refresh()
            except Exception:  # keep refreshing; one bad round must not stop the loop
                logger.exception("backend health refresh failed")

    def attempt_ended(self, outcome: AttemptOutcome) -> None:
        if outcome.first_byte is not None:
            self.mark_up(outcome.backend)

    def mark_up(self, name: str) -> None:
        """A backend that just answered is up, whatever the last probe said."""
        if not self.availability[name].available:
            self.availability = {**self.availability, name: Availability()}
