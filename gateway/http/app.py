"""The HTTP face of a `Gateway`: a FastAPI app built per gateway by `create_app`, with
OpenAI-shaped errors everywhere, body limits and decoding, and the connection policy towards
Serve's proxy."""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from access import AccessError, model_allowed
from deployments import Endpoint
from gateway.config import GatewayConfig
from gateway.core.pipeline import Gateway
from gateway.core.replies import Reply, StreamReply
from gateway.errors import OpenAIError, from_exception
from gateway.fronts.messages.front import (
    AnthropicHandler,
    anthropic_error,
    count_tokens,
    serve_messages,
)
from gateway.fronts.responses.front import ResponsesAPI
from gateway.http.admin import add_admin_routes
from gateway.http.browsers import BrowserGuard, default_allowed_hosts
from gateway.http.console import add_console_routes
from gateway.http.usage import record_feedback, usage_totals
from gateway.http.views import ReplicaStates, backend_states, health_report, model_cards
from llmops import LedgerReader

logger = logging.getLogger("ray.serve")
JSON = "application/json"
REPLICAS_TTL_S = 2.0


class FreshUpstreamConnections:
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


class SSEResponse(StreamingResponse):
    """Sends a `StreamReply` and closes it whatever happens (sent, cut, never started), so
    the backend call ends and the request is recorded exactly once."""

    def __init__(self, reply: StreamReply) -> None:
        super().__init__(reply, media_type="text/event-stream", headers=reply.headers)
        self.reply = reply

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.reply.aclose()


def to_response(reply: Reply | StreamReply) -> Response:
    if isinstance(reply, StreamReply):
        return SSEResponse(reply)
    return Response(reply.body, status_code=reply.status, media_type=JSON, headers=reply.headers)


def _too_large(limit: int) -> OpenAIError:
    return OpenAIError(413, f"Request body exceeds {limit} bytes.", code="body_too_large")


def _decode(body: bytes, encoding: str, limit: int) -> bytes:
    """A gzip or deflate body, inflated up to `limit` bytes (no decompression bombs)."""
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise OpenAIError(
            415,
            f"Unsupported content-encoding {encoding!r}; use gzip, deflate or none.",
            code="unsupported_content_encoding",
        )
    inflater = zlib.decompressobj(wbits=47 if encoding == "gzip" else 15)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise OpenAIError(
            400, f"The body is not valid {encoding} data.", code="invalid_content_encoding"
        ) from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise _too_large(limit)
    return data


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    encoding = request.headers.get("content-encoding", "").strip().lower()
    return _decode(b"".join(chunks), encoding, limit)


def create_app(
    gateway: Gateway,
    config: GatewayConfig,
    ledger: LedgerReader | None = None,
    *,
    request_id: Callable[[Request], str] = lambda r: r.headers.get("x-request-id", ""),
    replica_states: ReplicaStates = lambda names: {},
    facts: Mapping[str, Mapping[str, str]] | None = None,
) -> FastAPI:
    """The ASGI app serving `gateway`. `request_id` names each request (Serve's id in a
    replica); `replica_states` reports Serve deployments (blocking, run in a thread); `facts`
    are what the deploy decided per backend (e.g. an engine's dtype)."""
    app = FastAPI(title="LLM gateway", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(FreshUpstreamConnections)
    allowed_hosts = default_allowed_hosts(config.ingress.allowed_hosts, config.auth.keys)
    app.add_middleware(BrowserGuard, allowed_hosts=allowed_hosts)  # outermost: runs first
    limit = config.ingress.max_body_bytes
    replicas: dict[str, Any] = {"at": -REPLICAS_TTL_S, "states": {}}

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        # Unknown paths and wrong methods get OpenAI's shape too, not FastAPI's {"detail": ...}.
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return OpenAIError(exc.status_code, str(exc.detail), code=code).response()

    @app.exception_handler(OpenAIError)
    async def _client_error(_: Request, exc: OpenAIError) -> Response:
        return exc.response()  # a body too large or badly encoded

    @app.exception_handler(AccessError)
    async def _refused(_: Request, exc: AccessError) -> Response:
        return from_exception(exc).response()  # no key, not allowed, admin only

    keys = gateway.keys

    async def allowed_models(request: Request) -> Callable[[str], bool]:
        """Who may see what: any key sees the models it may use (needs a key when keys are
        on); without keys, everyone sees everything."""
        if keys is None:
            return lambda _: True
        caller = await keys.authenticate(request.headers)
        patterns = [p.models for p in (caller.key, caller.team) if p is not None]
        return lambda name: all(model_allowed(p, name) for p in patterns)

    async def need_key(request: Request, *, admin: bool = False) -> None:
        if keys is not None:
            await (keys.authenticate_admin if admin else keys.authenticate)(request.headers)

    @app.exception_handler(Exception)
    async def _internal_error(_: Request, exc: Exception) -> Response:
        # A bug must still answer in OpenAI's shape, without internals.
        logger.exception("unhandled error", exc_info=exc)
        return from_exception(exc).response()

    async def gate(request: Request) -> None:
        """Keys on: the caller is checked before its body is read (not recorded: explain)."""
        if keys is not None:
            await keys.gate(request.headers)

    async def serve(request: Request, endpoint: Endpoint) -> Response:
        refused = await gateway.check_caller(endpoint, request.headers, request_id(request))
        if refused is not None:
            return to_response(Reply.error(refused))
        raw = await read_body(request, limit)
        return to_response(
            await gateway.handle(endpoint, raw, request.headers, request_id(request))
        )

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await serve(request, "chat/completions")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await serve(request, "completions")

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        return await serve(request, "embeddings")

    async def anthropic(
        request: Request, serve_it: AnthropicHandler, *, recorded: bool = True
    ) -> Response:
        """A Messages API request: its body's errors in Anthropic's shape too (`recorded`:
        a request the ledger keeps, refused or not; count_tokens is not one)."""
        rid = request_id(request)
        try:
            refused = None
            if recorded:
                refused = await gateway.check_caller("messages", request.headers, rid)
            else:
                await gate(request)
        except AccessError as exc:
            refused = from_exception(exc)
        if refused is not None:
            return to_response(anthropic_error(refused.status, refused.message, rid))
        try:
            raw = await read_body(request, limit)
        except OpenAIError as exc:
            return to_response(anthropic_error(exc.status, exc.message, rid))
        return to_response(await serve_it(gateway, raw, request.headers, rid))

    @app.post("/v1/messages")
    async def messages(request: Request) -> Response:
        """Anthropic's Messages API, served by any backend of the model's route."""
        return await anthropic(request, serve_messages)

    responses = ResponsesAPI(gateway, config)

    @app.post("/v1/responses")
    async def create_response(request: Request) -> Response:
        """OpenAI's Responses API, served by any backend of the model's route."""
        refused = await gateway.check_caller("responses", request.headers, request_id(request))
        if refused is not None:
            return to_response(Reply.error(refused))
        raw = await read_body(request, limit)
        return to_response(await responses.create(raw, request.headers, request_id(request)))

    @app.get("/v1/responses/{response_id}")
    async def retrieve_response(response_id: str, request: Request) -> Response:
        return to_response(await responses.retrieve(response_id, request.headers))

    @app.delete("/v1/responses/{response_id}")
    async def delete_response(response_id: str, request: Request) -> Response:
        return to_response(await responses.delete(response_id, request.headers))

    @app.post("/v1/messages/count_tokens")
    async def messages_count_tokens(request: Request) -> Response:
        return await anthropic(request, count_tokens, recorded=False)

    @app.post("/v1/routing/explain")
    async def explain(request: Request) -> Response:
        """The routing decision for a chat completion body, without calling any backend."""
        await gate(request)
        raw = await read_body(request, limit)
        return to_response(await gateway.explain(raw, request.headers, request_id(request)))

    @app.get("/v1/models")
    async def list_models(request: Request) -> Response:
        allowed = await allowed_models(request)
        cards = [card for card in model_cards(config, gateway) if allowed(card["id"])]
        return Response(orjson.dumps({"object": "list", "data": cards}), media_type=JSON)

    @app.get("/v1/models/{model_id:path}")
    async def retrieve_model(model_id: str, request: Request) -> Response:
        allowed = await allowed_models(request)
        for card in model_cards(config, gateway):
            if card["id"] == model_id and allowed(model_id):
                return Response(orjson.dumps(card), media_type=JSON)
        return OpenAIError(
            404,
            f"The model `{model_id}` does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        ).response()

    @app.get("/health")
    async def health(request: Request) -> Response:
        """Public with keys on: the why of an unavailable backend (file paths, OS errors)
        only for an admin key."""
        status, body = await health_report(config, gateway)
        if keys is not None and not await is_admin(request):
            for backend in body["backends"].values():
                backend.pop("reason", None)
        return Response(orjson.dumps(body), status_code=status, media_type=JSON)

    async def is_admin(request: Request) -> bool:
        if keys is None or not request.headers.get("authorization"):
            return keys is None
        try:
            await keys.authenticate_admin(request.headers)
        except AccessError:
            return False
        return True

    async def backend_list() -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        if loop.time() - replicas["at"] > REPLICAS_TTL_S:
            states = await asyncio.to_thread(replica_states, list(config.backends))
            replicas.update(at=loop.time(), states=states)
        return backend_states(config, gateway, replicas["states"], facts or {})

    @app.get("/v1/gateway/backends")
    async def backends(request: Request) -> Response:
        """Health, circuit state, live latency and replicas of every backend."""
        await need_key(request)
        data = await backend_list()
        return Response(orjson.dumps({"object": "list", "data": data}), media_type=JSON)

    @app.get("/v1/gateway/usage")
    async def usage(request: Request) -> Response:
        """Requests, tokens and actual cost from the ledger, grouped, since a time."""
        await need_key(request, admin=True)
        return await usage_totals(request.query_params, ledger)

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> Response:
        """Record an outcome against a request id (`x-request-id` of its response)."""
        owner = None
        if keys is not None:  # metered; a key scores its own requests only (admins: any)
            caller = await keys.meter(request.headers)
            owner = None if caller.admin or caller.key is None else caller.key.id
        return await record_feedback(await read_body(request, limit), ledger, owner)

    add_admin_routes(app, keys, lambda request: read_body(request, limit))
    add_console_routes(app, config, keys, ledger, backend_list)
    return app
