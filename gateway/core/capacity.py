"""Which backends have no replica running, and how long until one will: what the router adds
to their latency estimate, so that requests with a latency budget spill to another candidate
while a deployment scaled to zero starts, and come back once it is up.

Watched: backends whose deployment scales to zero (`min_replicas: 0`). Their replica states
come from Serve's controller, polled in a thread. The cold-start time is learned from the
starts seen here (from the first sign of one: a wake-up sent, a replica starting, or a target
above zero, until a replica runs), starting from the backend's `latency_prior.cold_start_s`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from deployments import Backend, BackendConfig
from router import Availability, Decision

logger = logging.getLogger("ray.serve")
LEARNING_RATE = 0.5  # weight of the newest observed start against what was learned before
MIN_ETA_S = 1.0  # a start running late is still expected "soon", not now


class Capacity:
    """One per ingress replica. `overlay` marks cold backends in the availability the router
    sees; `wake` asks Serve for a replica of one."""

    def __init__(
        self,
        configs: Mapping[str, BackendConfig],
        backends: Mapping[str, Backend],
        states: Callable[[list[str]], Mapping[str, Any]],
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.watched = [
            name
            for name, config in configs.items()
            if config.scales_to_zero and backends[name].deployed
        ]
        self.backends = backends
        self.states = states
        self.interval_s = interval_s
        self.clock = clock
        self.learned_s = {name: configs[name].latency_prior.cold_start_s for name in self.watched}
        self.observed: dict[str, list[float]] = {name: [] for name in self.watched}
        # Until the first look, a backend that scales to zero is taken to be at zero.
        self.running: dict[str, int] = dict.fromkeys(self.watched, 0)
        self._starting_since: dict[str, float] = {}
        self._waking: set[asyncio.Task[None]] = set()
        self._woken: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def cold_start_ms(self, name: str) -> float:
        """0 when a replica runs; otherwise the expected wait until one does."""
        if self.running.get(name, 1) > 0:
            return 0.0
        since = self._starting_since.get(name)
        elapsed = self.clock() - since if since is not None else 0.0
        return max(self.learned_s[name] - elapsed, MIN_ETA_S) * 1000

    def overlay(self, availability: Mapping[str, Availability]) -> Mapping[str, Availability]:
        cold = {name: self.cold_start_ms(name) for name in self.watched}
        cold = {name: ms for name, ms in cold.items() if ms}
        if not cold:
            return availability
        merged = dict(availability)
        for name, ms in cold.items():
            merged[name] = replace(merged.get(name, Availability()), cold_start_ms=ms)
        return merged

    def wake_for(self, decision: Decision) -> None:
        """A cold backend that is chosen, or passed over for now, is asked to start."""
        for name in (decision.chosen, (decision.spillover or ("",))[0]):
            if name in self.running:
                self.wake(name)

    def wake(self, name: str) -> None:
        """Ask for a replica of a cold backend (once until it runs)."""
        if name in self._woken or self.running.get(name, 1) > 0:
            return
        self._woken.add(name)
        self._starting_since.setdefault(name, self.clock())
        task = asyncio.get_running_loop().create_task(self.backends[name].wake())
        self._waking.add(task)
        task.add_done_callback(self._waking.discard)

    def update(self, states: Mapping[str, Any]) -> None:
        """Take Serve's view: `{name: {"replicas": {state: count}, "target_replicas": n}}`."""
        now = self.clock()
        for name in self.watched:
            state = states.get(name)
            if not isinstance(state, Mapping):
                continue
            replicas = state.get("replicas") or {}
            running = int(replicas.get("RUNNING", 0))
            if running and not self.running.get(name):
                since = self._starting_since.pop(name, None)
                if since is not None:
                    self._learn(name, now - since)
                self._woken.discard(name)
            elif not running and (replicas.get("STARTING") or (state.get("target_replicas") or 0)):
                self._starting_since.setdefault(name, now)
            elif not running:
                self._woken.discard(name)  # scaled back to zero: the next spill wakes it again
            self.running[name] = running

    def _learn(self, name: str, seconds: float) -> None:
        self.observed[name].append(round(seconds, 1))
        learned = self.learned_s[name]
        self.learned_s[name] = learned + LEARNING_RATE * (seconds - learned)
        logger.info("backend %s started a replica from zero in %.1fs", name, seconds)

    def describe(self, name: str) -> dict[str, Any] | None:
        if name not in self.running:
            return None
        return {
            "scales_to_zero": True,
            "running": self.running[name],
            "cold_start_eta_ms": round(self.cold_start_ms(name)),
            "learned_cold_start_s": round(self.learned_s[name], 1),
            "observed_cold_starts_s": self.observed[name][-5:],
        }

    # ---- background ---------------------------------------------------------------------

    def start(self) -> None:
        if self.watched and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            try:
                self.update(await asyncio.to_thread(self.states, self.watched))
            except Exception:
                logger.exception("reading replica states failed")
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._waking) if t is not None]
        self._task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
