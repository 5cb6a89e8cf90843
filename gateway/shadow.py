"""Shadow traffic: a copy of an experiment's request to another backend, answered into the
ledger and the request log only. The client never waits for it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from deployments import Backend, BackendError, Endpoint
from gateway.accounting import Accounting, Trace, response_text

logger = logging.getLogger("ray.serve")
SHADOW_TIMEOUT_S = 120.0


async def run_shadow(
    name: str,
    backend: Backend,
    endpoint: Endpoint,
    body: dict[str, Any],
    primary: Trace,
    accounting: Accounting,
) -> None:
    trace = Trace(
        request_id=f"{primary.request_id}#shadow",
        endpoint=endpoint,
        stream=False,
        key_id=primary.key_id,
        route=primary.route,
        task=primary.task,
        backend=name,
        attempts=[name],
        experiment=primary.experiment,
        arm="shadow",
        template=primary.template,
        shadow_of=primary.request_id,
    )
    plain = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    try:
        result = await asyncio.wait_for(backend.complete(endpoint, plain), SHADOW_TIMEOUT_S)
        trace.take_usage(result.get("usage"))
        if accounting.log_bodies:
            trace.response_text = response_text(result)
    except BackendError as exc:
        trace.status, trace.error_code = exc.status, exc.code
    except TimeoutError:
        trace.status, trace.error_code = 504, "shadow_timeout"
    except Exception:
        logger.exception("shadow request to %s failed", name)
        trace.status, trace.error_code = 500, "shadow_failed"
    accounting.finish(trace)
