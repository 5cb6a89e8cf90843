"""The HTTP face of a `Gateway`: a FastAPI app built per gateway by `create_app`, with
OpenAI-shaped errors everywhere, body limits and decoding, and the connection policy towards
Serve's proxy. The routes live with what they serve: one module per front (`chat`,
`messages`, `responses`), the gateway's own views (`info`), usage and feedback (`usage`),
admin (`admin`) and the console (`console/`)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from access import AccessError
from gateway.config import PROJECT_ROOT, GatewayConfig
from gateway.core.pipeline import Gateway
from gateway.errors import OpenAIError, from_exception
from gateway.fronts.responses import ResponsesAPI
from gateway.http import (
    cache,
    chat,
    files,
    info,
    messages,
    monitors,
    responses,
    usage,
    vector_stores,
)
from gateway.http.admin import add_admin_routes
from gateway.http.browsers import BrowserGuard, default_allowed_hosts
from gateway.http.console import add_console_routes
from gateway.http.context import Http
from gateway.http.views import ReplicaStates
from llmops import LedgerReader
from retrieval import RetrievalError

logger = logging.getLogger("ray.serve")


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


def create_app(
    gateway: Gateway,
    config: GatewayConfig,
    ledger: LedgerReader | None = None,
    *,
    request_id: Callable[[Request], str] = lambda r: r.headers.get("x-request-id", ""),
    replica_states: ReplicaStates = lambda names: {},
    facts: Mapping[str, Mapping[str, str]] | None = None,
    root: Path = PROJECT_ROOT,
) -> FastAPI:
    """The ASGI app serving `gateway` (`Http` says what the arguments are; `root` is where
    relative store paths start). The app owns its Responses front: its lifespan's end (Serve
    runs it when the replica stops) closes the store."""
    responses_api = ResponsesAPI(gateway, config, root)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        responses_api.close()
        if gateway.library is not None:
            gateway.library.close()

    app = FastAPI(
        title="LLM gateway", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )
    app.add_middleware(FreshUpstreamConnections)
    allowed_hosts = default_allowed_hosts(config.ingress.allowed_hosts, config.auth.keys)
    app.add_middleware(BrowserGuard, allowed_hosts=allowed_hosts)  # outermost: runs first
    _add_error_handlers(app)
    http = Http(gateway, config, ledger, request_id, replica_states, facts or {})
    chat.add_routes(app, http)
    messages.add_routes(app, http)
    responses.add_routes(app, http, responses_api)
    info.add_routes(app, http)
    usage.add_routes(app, http)
    cache.add_routes(app, http)
    files.add_routes(app, http)
    vector_stores.add_routes(app, http)
    monitors.add_routes(app, http)
    add_admin_routes(app, http.keys, http.body)
    watched = gateway.monitors.describe if gateway.monitors is not None else None
    add_console_routes(app, config, http.keys, ledger, http.backend_list, watched)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error in OpenAI's shape, unknown paths and bugs too."""

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        # Unknown paths and wrong methods get OpenAI's shape too, not FastAPI's {"detail": ...}.
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return OpenAIError(str(exc.detail), status=exc.status_code, code=code).response()

    @app.exception_handler(OpenAIError)
    async def _client_error(_: Request, exc: OpenAIError) -> Response:
        return exc.response()  # a body too large or badly encoded

    @app.exception_handler(RetrievalError)
    async def _not_stored(_: Request, exc: RetrievalError) -> Response:
        return from_exception(exc).response()  # a file or store refused, or not found

    @app.exception_handler(AccessError)
    async def _refused(_: Request, exc: AccessError) -> Response:
        return from_exception(exc).response()  # no key, not allowed, admin only

    @app.exception_handler(Exception)
    async def _internal_error(_: Request, exc: Exception) -> Response:
        # A bug must still answer in OpenAI's shape, without internals.
        logger.exception("unhandled error", exc_info=exc)
        return from_exception(exc).response()


__all__ = ["create_app"]
