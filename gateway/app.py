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
from fastapi import FastAPI, Request
from pydantic import ValidationError
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response, StreamingResponse

from deployments import Backend, BackendError, Endpoint
from deployments.serving import UnavailableBackend, connect_backend, plan_backend
from gateway.config import GatewayConfig
from gateway.errors import OpenAIError, from_exception, from_validation_error
from gateway.protocol import REQUEST_MODELS
from gateway.relay import relay
from gateway.resilience import Limits, Resilience, timeout_error
from gateway.routing import GatewayRouter
from router import Availability, Decision, RouteConfig, RoutingError

if TYPE_CHECKING:
    from ray.serve.deployment import Application
    from ray.serve.handle import DeploymentHandle

logger = logging.getLogger("ray.serve")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
JSON = "application/json"

app = FastAPI(title="LLM gateway", docs_url=None, redoc_url=None, openapi_url=None)


class _FreshUpstreamConnections:
    """Adds `connection: close` to every response, so the proxy in front (Serve's HAProxy
    ingress) does not reuse its connection to this replica for another request. On a reused
    connection a client's disconnect never reaches the replica for a non-streamed request
    (HAProxy only half-closes it), so the upstream work would run on; a fresh localhost
    connection per request costs ~0.1 ms. HAProxy keeps the client's connection alive."""

    def __init__(self, asgi: Any) -> None:
        self.app = asgi

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_closing(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
            await send(message)

        await self.app(scope, receive, send_closing)


app.add_middleware(_FreshUpstreamConnections)


@app.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
    # Unknown paths and wrong methods get OpenAI's shape too, not FastAPI's {"detail": ...}.
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    return OpenAIError(exc.status_code, str(exc.detail), code=code).response()


@app.exception_handler(Exception)
async def _internal_error(_: Request, exc: Exception) -> Response:
    # A bug must still answer in OpenAI's shape, without internals.
    logger.exception("unhandled error", exc_info=exc)
    return from_exception(exc).response()


def _parse_body(raw: bytes, endpoint: Endpoint) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise OpenAIError(
            400,
            "We could not parse the JSON body of your request. The body must be valid JSON.",
            code="invalid_json",
        ) from None
    if not isinstance(data, dict):
        raise OpenAIError(400, "The request body must be a JSON object.", code="invalid_json")
    try:
        REQUEST_MODELS[endpoint].model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc, data) from None
    return data


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
        self._replicas: tuple[float, dict[str, Any]] = (0.0, {})
        self.availability: dict[str, Availability] = {
            name: Availability(False, unavailable[name], definite=True)
            if name in unavailable
            else Availability()
            for name in self.backends
        }
        self._health_checked_at = 0.0
        self._confirmed: set[str] = set()
        self._health_task = asyncio.get_event_loop().create_task(self._refresh_health_forever())

    # ---- health ---------------------------------------------------------------------------

    async def _refresh_health(self) -> None:
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
        self._health_checked_at = time.monotonic()

    async def _refresh_health_forever(self) -> None:
        # Poll fast until every backend has answered once (replicas may still be starting).
        interval = 1.0
        while True:
            await asyncio.sleep(interval)
            if all(n in self._confirmed or s.definite for n, s in self.availability.items()):
                interval = self.config.ingress.health_check_interval_s
            try:
                await self._refresh_health()
            except Exception:  # keep refreshing; one bad round must not stop the loop
                logger.exception("backend health refresh failed")

    def _mark_up(self, name: str) -> None:
        """A backend that just answered is up, whatever the last probe said."""
        if not self.availability[name].available:
            self.availability = {**self.availability, name: Availability()}

    @app.get("/health")
    async def health(self) -> Response:
        if time.monotonic() - self._health_checked_at > 1.0:
            await self._refresh_health()
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

    def _replica_counts(self) -> dict[str, Any]:
        """Replica states per backend deployment, from the Serve controller (blocking)."""
        try:
            app_name = serve.get_replica_context().app_name
            deployments = serve.status().applications[app_name].deployments
        except Exception as exc:  # outside Serve, or the controller is busy
            return {"error": type(exc).__name__}
        counts: dict[str, Any] = {}
        for name in self.backends:
            deployment = deployments.get(f"backend-{name}")
            if deployment is not None:
                counts[name] = {
                    "status": str(getattr(deployment.status, "value", deployment.status)),
                    "replicas": {
                        str(getattr(state, "value", state)): count
                        for state, count in deployment.replica_states.items()
                    },
                }
        return counts

    def _placement(self, name: str) -> dict[str, Any]:
        if isinstance(self.backends[name], UnavailableBackend):
            return {"status": "NOT_DEPLOYED"}
        if getattr(self.config.backends[name], "in_ingress", False):
            return {"status": "IN_INGRESS"}
        return {"status": "UNKNOWN"}

    @app.get("/v1/gateway/backends")
    async def backend_states(self) -> Response:
        """Health, circuit state, live latency and replicas of every backend."""
        checked_at, replicas = self._replicas
        if time.monotonic() - checked_at > 2.0:
            replicas = await asyncio.to_thread(self._replica_counts)
            self._replicas = (time.monotonic(), replicas)
        snapshots = self.routing.snapshots()
        data = []
        for name, config in self.config.backends.items():
            health, stats = self.availability[name], snapshots[name]
            data.append(
                {
                    "id": name,
                    "kind": config.kind,
                    "model": config.model,
                    "health": {"available": health.available, "reason": health.reason or None},
                    "circuit": self.resilience.describe(name),
                    "latency": {
                        "source": stats.source,
                        "samples": stats.samples,
                        "ttft_ms": round(stats.ttft_ms, 1),
                        "ttft_p90_ms": round(stats.ttft_p90_ms, 1),
                        "tpot_ms": round(stats.tpot_ms, 2),
                        "tpot_p90_ms": round(stats.tpot_p90_ms, 2),
                    },
                    "in_flight": stats.in_flight,
                    "deployment": replicas.get(name) or self._placement(name),
                }
            )
        return Response(orjson.dumps({"object": "list", "data": data}), media_type=JSON)

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
            _, decision = await self._route(request, "chat/completions")
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

    async def _route(self, request: Request, endpoint: Endpoint) -> tuple[dict[str, Any], Decision]:
        """Read, validate and route a request body: what serving and explaining share."""
        # Serve's proxy sets the `x-request-id` response header (the client's, or a new one).
        request_id = _serve_request_id() or request.headers.get("x-request-id") or ""
        body = _parse_body(await self._read_body(request), endpoint)
        availability = self.resilience.overlay(self.availability)
        decision = await self.routing.decide(
            endpoint, body, request.headers, availability, request_id
        )
        return body, decision

    async def _handle(self, request: Request, endpoint: Endpoint) -> Response:
        headers: dict[str, str] = {}
        try:
            body, decision = await self._route(request, endpoint)
            headers.update(self.routing.headers(decision))
            if body.get("stream"):
                return await self._stream(endpoint, body, decision, headers)
            return await self._complete(endpoint, body, decision, headers)
        except Exception as exc:
            error = from_exception(exc)
            if error.status >= 500 and not isinstance(
                exc, BackendError | OpenAIError | RoutingError
            ):
                logger.exception("request %s failed", _serve_request_id())
            return error.response(headers)

    def _route_config(self, decision: Decision) -> RouteConfig | None:
        return self.config.routes.get(decision.route) if decision.route else None

    async def _complete(
        self, endpoint: Endpoint, body: dict[str, Any], decision: Decision, headers: dict[str, str]
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
            self._mark_up(name)
            usage = result.get("usage") or {}
            tokens = usage.get("completion_tokens")
            if isinstance(tokens, int):
                self.routing.record_total(name, (time.perf_counter() - started) * 1000, tokens)
            return result

        route = self._route_config(decision)
        result = await self.resilience.first_success(decision, route, headers, attempt)
        return Response(orjson.dumps(result), media_type=JSON, headers=headers)

    async def _stream(
        self, endpoint: Endpoint, body: dict[str, Any], decision: Decision, headers: dict[str, str]
    ) -> Response:
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
            self._mark_up(name)
            return relay(
                first,
                chunks,
                name=name,
                routing=self.routing,
                started=started,
                total_s=limits.total_s,
                on_failure=lambda exc: self.resilience.record_failure(name, exc),
            )

        route = self._route_config(decision)
        stream = await self.resilience.first_success(decision, route, headers, attempt)
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
