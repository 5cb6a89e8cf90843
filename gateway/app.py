"""The HTTP ingress: OpenAI-compatible endpoints on Ray Serve, routing to backend deployments.

`build_app` is the Serve application builder named in `configs/*.yaml`
(`import_path: gateway.app:build_app`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from fastapi import FastAPI, Request
from pydantic import ValidationError
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response, StreamingResponse

from deployments import Backend, BackendError, Endpoint
from deployments.serving import connect_backend, plan_backend
from gateway.config import GatewayConfig
from gateway.errors import OpenAIError, from_exception, from_validation_error
from gateway.protocol import REQUEST_MODELS
from gateway.routing import GatewayRouter
from router import Availability, Decision, RoutingError

if TYPE_CHECKING:
    from ray.serve.deployment import Application
    from ray.serve.handle import DeploymentHandle

logger = logging.getLogger("ray.serve")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
JSON = "application/json"
T = TypeVar("T")

app = FastAPI(title="LLM gateway", docs_url=None, redoc_url=None, openapi_url=None)


@app.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
    # Unknown paths and wrong methods get OpenAI's shape too, not FastAPI's {"detail": ...}.
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    return OpenAIError(exc.status_code, str(exc.detail), code=code).response()


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


def _completion_tokens(chunk: bytes) -> int | None:
    """`usage.completion_tokens` from the SSE event in `chunk` that carries it, if any."""
    if b'"usage"' not in chunk:  # almost every chunk: no split, no parse
        return None
    for event in chunk.split(b"\n\n"):
        if b'"usage"' in event and event.startswith(b"data: {"):
            try:
                usage = orjson.loads(event[6:]).get("usage") or {}
            except orjson.JSONDecodeError:
                continue
            if isinstance(usage.get("completion_tokens"), int):
                return int(usage["completion_tokens"])
    return None


async def _relay(
    first: bytes, rest: AsyncIterator[bytes], name: str, routing: GatewayRouter, started: float
) -> AsyncIterator[bytes]:
    """Pass chunks through as they come; a failure mid-stream ends it with an SSE error event.
    Measures time to first chunk and per token for the router's live stats."""
    first_at = time.perf_counter()
    events, usage_tokens, completed = first.count(b"data: {"), _completion_tokens(first), False
    try:
        if first:
            yield first
        async for chunk in rest:
            events += chunk.count(b"data: {")
            usage_tokens = _completion_tokens(chunk) or usage_tokens
            yield chunk
        completed = True
    except BackendError as exc:
        logger.warning("backend %s failed mid-stream: %s", name, exc.message)
        yield b"data: " + orjson.dumps(exc.to_dict()) + b"\n\ndata: [DONE]\n\n"
    finally:
        routing.finished(name)
        await rest.aclose()  # type: ignore[attr-defined]
        if completed:
            tokens = usage_tokens if usage_tokens is not None else max(1, events - 1)
            ended = time.perf_counter()
            routing.record_stream(
                name, (first_at - started) * 1000, (ended - first_at) * 1000, tokens
            )


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
        return Response(
            orjson.dumps(self.routing.explain(decision)),
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
        decision = await self.routing.decide(
            endpoint, body, request.headers, self.availability, request_id
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

    async def _first_success(
        self, decision: Decision, headers: dict[str, str], attempt: Callable[[str], Awaitable[T]]
    ) -> T:
        """Run `attempt` on the decision's backends in order until one succeeds; a retryable
        failure moves on to the next, a client error (4xx) ends the search at once."""
        last_error: BackendError | None = None
        for name in decision.attempts:
            headers["x-gateway-backend"] = name
            try:
                result = await attempt(name)
            except BackendError as exc:
                last_error = exc
                if not exc.retryable:
                    break
                logger.warning("backend %s failed (%s); trying the next", name, exc.message)
                continue
            self._mark_up(name)
            return result
        assert last_error is not None
        raise last_error

    async def _complete(
        self, endpoint: Endpoint, body: dict[str, Any], decision: Decision, headers: dict[str, str]
    ) -> Response:
        async def attempt(name: str) -> dict[str, Any]:
            started = time.perf_counter()
            self.routing.started(name)
            try:
                result = await self.backends[name].complete(endpoint, body)
            finally:
                self.routing.finished(name)
            usage = result.get("usage") or {}
            tokens = usage.get("completion_tokens")
            if isinstance(tokens, int):
                self.routing.record_total(name, (time.perf_counter() - started) * 1000, tokens)
            return result

        result = await self._first_success(decision, headers, attempt)
        return Response(orjson.dumps(result), media_type=JSON, headers=headers)

    async def _stream(
        self, endpoint: Endpoint, body: dict[str, Any], decision: Decision, headers: dict[str, str]
    ) -> Response:
        async def attempt(name: str) -> AsyncIterator[bytes]:
            started = time.perf_counter()
            self.routing.started(name)
            chunks = self.backends[name].stream(endpoint, body)
            try:
                # Wait for the first chunk before answering, so that a backend failing early
                # still yields a proper HTTP status or falls back invisibly.
                first = await anext(chunks)
            except StopAsyncIteration:
                first = b""
            except BaseException:
                self.routing.finished(name)
                raise
            return _relay(first, chunks, name, self.routing, started)

        relay = await self._first_success(decision, headers, attempt)
        return StreamingResponse(relay, media_type="text/event-stream", headers=headers)


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
