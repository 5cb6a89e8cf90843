"""Shadow traffic: a copy of an experiment's request to another backend, answered into the
ledger and the request log only. The client never waits for it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from deployments import Backend, BackendError, Endpoint
from gateway.core.attempts import Feedback
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
