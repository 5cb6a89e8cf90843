"""Shadow traffic: a copy of an experiment's request to another backend, answered into the
ledger and the request log only. The client never waits for it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from access import Caller
from deployments import Backend, BackendError, Endpoint
from gateway.core.attempts import Feedback
from gateway.core.keys import KeyGate
from gateway.core.routing import Routed
from llmops import RequestRecord, response_text

logger = logging.getLogger("ray.serve")
SHADOW_TIMEOUT_S = 120.0


def shadow_record(name: str, primary: RequestRecord) -> RequestRecord:
    return RequestRecord(
        request_id=f"{primary.request_id}#shadow",
        endpoint=primary.endpoint,
        stream=False,
        key_id=primary.key_id,
        key_name=primary.key_name,
        team=primary.team,
        route=primary.route,
        task=primary.task,
        experiment=primary.experiment,
        arm="shadow",
        template=primary.template,
        shadow_of=primary.request_id,
    )


async def run_shadow(
    name: str,
    backend: Backend,
    endpoint: Endpoint,
    body: dict[str, Any],
    record: RequestRecord,
    feedback: Feedback,
    log_bodies: bool,
) -> None:
    """Ask `backend` too; its answer (or failure) goes to the feedback channel only."""
    plain = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    try:
        async with feedback.attempt(name, record, streamed=False) as attempt:
            try:
                result = await asyncio.wait_for(backend.complete(endpoint, plain), SHADOW_TIMEOUT_S)
            except TimeoutError:
                message = f"shadow {name!r} timed out"
                raise BackendError(message, status=504, code="shadow_timeout") from None
            usage = result.get("usage") or {}
            attempt.answered(usage.get("completion_tokens"))
        record.take_usage(result.get("usage"))
        if log_bodies:
            record.response_text = response_text(result)
    except BackendError as exc:
        record.fail(exc.status, exc.code)
    except Exception:
        logger.exception("shadow request to %s failed", name)
        record.fail(500, "shadow_failed")
    finally:
        feedback.request_finished(record)


class Shadows:
    """The shadow requests of one gateway: started beside their primaries, drained on close."""

    def __init__(
        self,
        backends: Mapping[str, Backend],
        feedback: Feedback,
        keys: KeyGate | None,
        log_bodies: bool,
    ) -> None:
        self._backends, self._feedback, self._keys = backends, feedback, keys
        self._log_bodies = log_bodies
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, routed: Routed, record: RequestRecord, caller: Caller | None) -> None:
        """A copy to the experiment's shadow backend, charged to the caller who caused it
        (skipped when its estimate does not fit the caller's limits)."""
        assignment = routed.prepared.assignment
        if assignment is None or assignment.shadow is None:
            return
        name = assignment.shadow
        copy = shadow_record(name, record)
        if self._keys is not None and caller is not None:
            usd = routed.estimated_cost_usd(name) or routed.worst_cost_usd()
            if not await self._keys.admit_shadow(caller, usd, copy):
                logger.info("shadow to %s skipped: over the caller's limits", name)
                return
        shadow = run_shadow(
            name,
            self._backends[name],
            routed.prepared.endpoint,
            routed.body_for(name),
            copy,
            self._feedback,
            self._log_bodies,
        )
        task = asyncio.get_running_loop().create_task(shadow)
        self._tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._tasks.discard)

    async def drain(self, timeout_s: float) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)
