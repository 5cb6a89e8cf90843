"""Drift monitors run by the gateway itself (`monitors.checks`): each labelled set is sent on
its schedule to each target through the gateway's own pipeline (so keys, cost, the ledger and
guardrails apply; the response cache is bypassed), scored, and judged against its baseline.
One ingress replica runs them (Serve's rank 0); every replica reads the runs from the store."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from gateway.core.replies import Reply, StreamReply
from llmops import (
    SCORERS,
    MonitorConfig,
    MonitorRun,
    MonitorsConfig,
    MonitorStore,
    interval95,
    judged,
    load_examples,
)

logger = logging.getLogger("ray.serve")
Handle = Callable[..., Awaitable[Reply | StreamReply]]
CONCURRENCY = 4


class Monitors:
    """The monitors of one ingress replica: their store, and (`start`) their schedules."""

    def __init__(
        self,
        config: MonitorsConfig,
        project_root: Path,
        store: Callable[[], MonitorStore],
        publish: Callable[[MonitorRun], None] | None = None,
        keyed: bool = False,
    ) -> None:
        self.config = config
        self.project_root = project_root
        self._open_store = store
        self._store: MonitorStore | None = None
        self.publish = publish  # metrics: each run's score, interval and state
        self.keyed = keyed  # keys are on: runs need the monitor key
        self._handle: Handle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def connect(self, handle: Handle) -> None:
        self._handle = handle

    def store(self) -> MonitorStore:
        if self._store is None:
            self._store = self._open_store()
        return self._store

    def start(self) -> None:
        """Run every check now and then every `interval_s` (needs a running loop)."""
        for name in self.config.checks:
            task = asyncio.get_running_loop().create_task(self._every(name))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _every(self, name: str) -> None:
        while True:
            try:
                await self.run(name)
            except Exception:
                logger.exception("drift monitor %s failed", name)
            await asyncio.sleep(self.config.checks[name].interval_s)

    async def run(self, name: str) -> list[MonitorRun]:
        """One run of check `name` on each of its targets, stored and published."""
        check = self.config.checks[name]
        examples = load_examples(self.project_root / check.dataset)[: check.limit]
        runs = []
        for target in check.targets:
            scores, errors = await self._scores(check, target, examples)
            counted = [*scores, *([0.0] * errors)]
            score = sum(counted) / len(counted)
            store = self.store()
            earlier = await asyncio.to_thread(store.first, name, target, check.baseline_runs)
            run = judged(name, target, len(counted), errors, score, interval95(counted),
                         earlier, check.baseline_runs)  # fmt: skip
            await asyncio.to_thread(store.add, run)
            if self.publish is not None:
                self.publish(run)
            logger.info("drift monitor %s on %s: %.3f (%s)", name, target, score, run.state)
            runs.append(run)
        return runs

    async def _scores(
        self, check: MonitorConfig, target: str, examples: list[dict[str, Any]]
    ) -> tuple[list[float], int]:
        limit = asyncio.Semaphore(CONCURRENCY)
        scorer = SCORERS[check.metric]

        async def one(example: dict[str, Any]) -> float | None:
            async with limit:
                answer = await self._ask(check, target, example["messages"])
            return None if answer is None else scorer(answer, example["expected"])

        done = await asyncio.gather(*(one(example) for example in examples))
        scores = [score for score in done if score is not None]
        return scores, len(done) - len(scores)

    async def _ask(self, check: MonitorConfig, target: str, messages: list[Any]) -> str | None:
        assert self._handle is not None, "Monitors.connect was not called"
        body = {"model": target, "messages": messages, "max_tokens": check.max_tokens,
                "temperature": 0}  # fmt: skip
        headers = {"x-gateway-cache": "no-store", **self._auth()}
        request_id = f"monitor-{uuid.uuid4().hex}"
        reply = await self._handle("chat/completions", orjson.dumps(body), headers, request_id)
        if not isinstance(reply, Reply) or reply.status != 200:
            return None
        choices = orjson.loads(reply.body).get("choices") or [{}]
        return str((choices[0].get("message") or {}).get("content") or "")

    def _auth(self) -> dict[str, str]:
        if not self.keyed:
            return {}
        variable = self.config.api_key_env
        key = os.environ.get(variable) if variable else None
        if not key:
            raise RuntimeError(
                "keys are on: set monitors.api_key_env to a variable holding the monitor key"
                + (f" ({variable} is not set)" if variable else "")
            )
        return {"authorization": f"Bearer {key}"}

    def describe(self) -> dict[str, Any]:
        """Every check's targets: state, the latest run and the history (blocking)."""
        runs = self.store().runs()
        described: dict[str, Any] = {}
        for name, check in self.config.checks.items():
            targets = {}
            for target in check.targets:
                history = [r.as_dict() for r in runs if (r.monitor, r.target) == (name, target)]
                latest = history[-1] if history else None
                targets[target] = {
                    "state": latest["state"] if latest else "pending",
                    "latest": latest,
                    "history": history,
                }
            described[name] = {"metric": check.metric, "interval_s": check.interval_s,
                               "dataset": check.dataset, "targets": targets}  # fmt: skip
        return described

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._store is not None:
            await asyncio.to_thread(self._store.close)
