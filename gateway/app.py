"""The HTTP ingress: OpenAI-compatible endpoints on Ray Serve, routing to backend deployments.

`build_app` is the Serve application builder named in `configs/*.yaml`
(`import_path: gateway.app:build_app`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import Request
from ray import serve
from starlette.responses import Response, StreamingResponse

from deployments import Backend, BackendError, Endpoint
from deployments.serving import connect_backend, plan_backend
from gateway.accounting import Accounting, Trace, key_id, response_text
from gateway.config import GatewayConfig
from gateway.errors import OpenAIError, from_exception
from gateway.feedback import record_feedback, usage_totals
from gateway.health import HealthMonitor
from gateway.http import app, parse_body
from gateway.metrics import GatewayMetrics
from gateway.relay import StreamBooks, relay
from gateway.resilience import Limits, Resilience, timeout_error
from gateway.routing import GatewayRouter
from gateway.shadow import run_shadow
from gateway.status import backend_state, placement, replica_states
from router import Availability, Decision, RouteConfig, RoutingError

if TYPE_CHECKING:
    from ray.serve.deployment import Application
    from ray.serve.handle import DeploymentHandle

logger = logging.getLogger("ray.serve")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
JSON = "application/json"


def _request_id(request: Request) -> str:
    # Serve's proxy sets the `x-request-id` response header (the client's, or a new one).
    return _serve_request_id() or request.headers.get("x-request-id") or ""


def _serve_request_id() -> str:
    try:
        return str(serve.context._get_serve_request_context().request_id)
    except Exception:  # outside a Serve request (unit tests) there is none
        return ""


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=1024)
@serve.ingress(app)
class GatewayIngress:
    def __init__(
        self,
        config: dict[str, Any],
        handles: dict[str, DeploymentHandle[Any]],
        unavailable: dict[str, str],
    ) -> None:
        self.config = GatewayConfig.load(config)
        self.backends: dict[str, Backend] = {
            name: connect_backend(name, backend, handles.get(name), unavailable.get(name, ""))
            for name, backend in self.config.backends.items()
        }
        self.routing = GatewayRouter(self.config, PROJECT_ROOT)
        self.resilience = Resilience(self.config.backends)
        self.accounting = Accounting(
            self.config.backends,
            self.config.ledger,
            self.config.request_log,
            PROJECT_ROOT,
            GatewayMetrics(),
        )
        self._replicas: tuple[float, dict[str, Any]] = (0.0, {})
        self._shadows: set[asyncio.Task[None]] = set()
        self.health_monitor = HealthMonitor(
            self.backends,
            unavailable,
            self.config.ingress.health_check_interval_s,
            self._publish_circuits,
        )
        self._health_task = self.health_monitor.start()
        self._metrics_task = asyncio.get_event_loop().create_task(self._flush_metrics_forever())

    # ---- health ---------------------------------------------------------------------------

    async def _flush_metrics_forever(self) -> None:
        # Metric calls cost ~5-10 us each: batched once a second, off the request path.
        while self.accounting.metrics is not None:
            await asyncio.sleep(1.0)
            try:
                self.accounting.metrics.flush()
            except Exception:
                logger.exception("metrics flush failed")

    @property
    def availability(self) -> dict[str, Availability]:
        return self.health_monitor.availability

    def _publish_circuits(self, names: list[str]) -> None:
        if self.accounting.metrics is not None:
            self.accounting.metrics.circuits(
                {name: self.resilience.describe(name)["state"] for name in names}
            )

    @app.get("/health")
    async def health(self) -> Response:
        if time.monotonic() - self.health_monitor.checked_at > 1.0:
            await self.health_monitor.refresh()
        backends = {
            name: {
                "available": state.available,
                "reason": state.reason or None,
                "kind": self.config.backends[name].kind,
            }
            for name, state in self.availability.items()
        }
        up = sum(state.available for state in self.availability.values())
        status = "ok" if up == len(backends) else "degraded" if up else "unavailable"
        return Response(
            orjson.dumps({"status": status, "backends": backends}),
            status_code=200 if up else 503,
            media_type=JSON,
        )

    @app.get("/v1/gateway/backends")
    async def backend_states(self) -> Response:
        """Health, circuit state, live latency and replicas of every backend."""
        checked_at, replicas = self._replicas
        if time.monotonic() - checked_at > 2.0:
            replicas = await asyncio.to_thread(replica_states, list(self.backends))
            self._replicas = (time.monotonic(), replicas)
        snapshots = self.routing.snapshots()
        data = [
            backend_state(
                name,
                config,
                self.availability[name],
                snapshots[name],
                self.resilience.describe(name),
                replicas.get(name) or placement(config, self.backends[name]),
            )
            for name, config in self.config.backends.items()
        ]
        return Response(orjson.dumps({"object": "list", "data": data}), media_type=JSON)

    @app.get("/v1/gateway/usage")
    async def usage(self, request: Request) -> Response:
        """Requests, tokens and actual cost from the ledger, grouped, since a time."""
        return await usage_totals(request.query_params, self.accounting.ledger)

    @app.post("/v1/feedback")
    async def feedback(self, request: Request) -> Response:
        """Record an outcome against a request id (`x-request-id` of its response)."""
        return await record_feedback(await self._read_body(request), self.accounting.ledger)

    # ---- models ---------------------------------------------------------------------------

    def _model_cards(self) -> list[dict[str, Any]]:
        created = 0
        cards = [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "gateway",
                "route": {
                    "policy": route.policy,
                    "candidates": list(route.candidates),
                    "fallbacks": list(route.fallbacks),
                },
            }
            for name, route in self.config.routes.items()
        ]
        cards += [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": backend.kind,
                "upstream_model": backend.model,
            }
            for name, backend in self.config.backends.items()
            if self.availability[name].available
        ]
        return cards

    @app.get("/v1/models")
    async def list_models(self) -> Response:
        return Response(
            orjson.dumps({"object": "list", "data": self._model_cards()}), media_type=JSON
        )

    @app.get("/v1/models/{model_id:path}")
    async def retrieve_model(self, model_id: str) -> Response:
        for card in self._model_cards():
            if card["id"] == model_id:
                return Response(orjson.dumps(card), media_type=JSON)
        return OpenAIError(
            404,
            f"The model `{model_id}` does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        ).response()

    # ---- completions ----------------------------------------------------------------------

    @app.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        return await self._handle(request, "chat/completions")

    @app.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        return await self._handle(request, "completions")

    @app.post("/v1/routing/explain")
    async def explain(self, request: Request) -> Response:
        """The routing decision for a chat completion body, without calling any backend."""
        try:
            _, decision = await self._route(request, "chat/completions", _request_id(request))
        except Exception as exc:
            return from_exception(exc).response()
        explanation = self.routing.explain(decision)
        for candidate in explanation["candidates"]:
            candidate["circuit"] = self.resilience.describe(candidate["backend"])["state"]
        return Response(
            orjson.dumps(explanation),
            media_type=JSON,
            headers=self.routing.headers(decision),
        )

    async def _read_body(self, request: Request) -> bytes:
        limit = self.config.ingress.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise OpenAIError(413, f"Request body exceeds {limit} bytes.", code="body_too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise OpenAIError(
                    413, f"Request body exceeds {limit} bytes.", code="body_too_large"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def _route(
        self, request: Request, endpoint: Endpoint, request_id: str
    ) -> tuple[dict[str, Any], Decision]:
        """Read, validate and route a request body: what serving and explaining share."""
        body = parse_body(await self._read_body(request), endpoint)
        availability = self.resilience.overlay(self.availability)
        decision = await self.routing.decide(
            endpoint, body, request.headers, availability, request_id
        )
        return body, decision

    async def _handle(self, request: Request, endpoint: Endpoint) -> Response:
        headers: dict[str, str] = {}
        trace = Trace(
            request_id=_request_id(request),
            endpoint=endpoint,
            stream=False,
            key_id=key_id(request.headers.get("authorization")),
        )
        try:
            body, decision = await self._route(request, endpoint, trace.request_id)
            headers.update(self.routing.headers(decision))
            trace.stream = bool(body.get("stream"))
            trace.route, trace.task = decision.route, decision.task
            trace.template = decision.template
            trace.experiment, trace.arm = decision.experiment, decision.arm
            chosen = decision.chosen_evaluation
            if chosen is not None:
                trace.estimated_cost_usd = chosen.estimate.cost_usd
                trace.estimated_prompt_tokens = chosen.estimate.prompt_tokens
            if self.accounting.log_bodies:
                trace.request_body = body
            self._start_shadow(decision, endpoint, body, trace)
            if trace.stream:
                return await self._stream(endpoint, body, decision, headers, trace)
            return await self._complete(endpoint, body, decision, headers, trace)
        except Exception as exc:
            error = from_exception(exc)
            if error.status >= 500 and not isinstance(
                exc, BackendError | OpenAIError | RoutingError
            ):
                logger.exception("request %s failed", trace.request_id)
            trace.status, trace.error_code = error.status, error.code
            self.accounting.finish(trace)
            return error.response(headers)

    def _start_shadow(
        self, decision: Decision, endpoint: Endpoint, body: dict[str, Any], trace: Trace
    ) -> None:
        experiment = self.config.experiments.get(decision.experiment or "")
        if experiment is None or experiment.shadow is None:
            return
        name = experiment.shadow
        shadow = run_shadow(name, self.backends[name], endpoint, body, trace, self.accounting)
        task = asyncio.get_running_loop().create_task(shadow)
        self._shadows.add(task)  # keep a reference until it is done
        task.add_done_callback(self._shadows.discard)

    def _route_config(self, decision: Decision) -> RouteConfig | None:
        return self.config.routes.get(decision.route) if decision.route else None

    async def _complete(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        decision: Decision,
        headers: dict[str, str],
        trace: Trace,
    ) -> Response:
        async def attempt(name: str, limits: Limits) -> dict[str, Any]:
            started = time.perf_counter()
            self.routing.started(name)
            try:
                async with asyncio.timeout(limits.total_s):
                    result = await self.backends[name].complete(endpoint, body)
            except TimeoutError:
                raise timeout_error(name, "the answer", limits.total_s) from None
            finally:
                self.routing.finished(name)
            self.health_monitor.mark_up(name)
            usage = result.get("usage") or {}
            tokens = usage.get("completion_tokens")
            if isinstance(tokens, int):
                self.routing.record_total(name, (time.perf_counter() - started) * 1000, tokens)
            return result

        route = self._route_config(decision)
        result = await self.resilience.first_success(
            decision, route, headers, attempt, trace.attempts
        )
        trace.backend = trace.attempts[-1]
        trace.take_usage(result.get("usage"))
        if self.accounting.log_bodies:
            trace.response_text = response_text(result)
        self.accounting.finish(trace)
        return Response(orjson.dumps(result), media_type=JSON, headers=headers)

    async def _stream(
        self,
        endpoint: Endpoint,
        body: dict[str, Any],
        decision: Decision,
        headers: dict[str, str],
        trace: Trace,
    ) -> Response:
        # The ledger needs the stream's usage: ask for it, and drop it if the client did not.
        options = body.get("stream_options") or {}
        strip_usage = not options.get("include_usage")
        if strip_usage:
            body = {**body, "stream_options": {**options, "include_usage": True}}

        async def attempt(name: str, limits: Limits) -> AsyncIterator[bytes]:
            started = time.perf_counter()
            self.routing.started(name)
            chunks = self.backends[name].stream(endpoint, body)
            try:
                # Wait for the first chunk before answering, so that a backend failing early
                # still yields a proper HTTP status or falls back invisibly.
                async with asyncio.timeout(limits.first_token_s):
                    first = await anext(chunks)
            except StopAsyncIteration:
                first = b""
            except TimeoutError:
                self.routing.finished(name)
                raise timeout_error(name, "the first token", limits.first_token_s) from None
            except BaseException:
                self.routing.finished(name)
                raise
            self.health_monitor.mark_up(name)
            books = StreamBooks(
                name=name,
                routing=self.routing,
                started=started,
                total_s=limits.total_s,
                on_failure=lambda exc: self.resilience.record_failure(name, exc),
                trace=trace,
                strip_usage=strip_usage,
                on_done=self.accounting.finish,
            )
            return relay(first, chunks, books)

        route = self._route_config(decision)
        stream = await self.resilience.first_success(
            decision, route, headers, attempt, trace.attempts
        )
        trace.backend = trace.attempts[-1]
        return StreamingResponse(stream, media_type="text/event-stream", headers=headers)


def build_app(args: dict[str, Any]) -> Application:
    """Serve application builder: validates the config, then binds one deployment per backend
    and the ingress. Config mistakes raise here, so the deploy fails with the field path."""
    config = GatewayConfig.load(args)
    applications: dict[str, Application] = {}
    unavailable: dict[str, str] = {}
    for name, backend in config.backends.items():
        plan = plan_backend(name, backend, PROJECT_ROOT)
        if plan.unavailable_reason:
            unavailable[name] = plan.unavailable_reason
            logger.warning("backend %s is unavailable: %s", name, plan.unavailable_reason)
        elif plan.application is not None:
            applications[name] = plan.application
    options = config.ingress.deployment.serve_options()
    application: Application = GatewayIngress.options(**options).bind(  # type: ignore[attr-defined]
        config.model_dump(mode="json"), applications, unavailable
    )
    return application
