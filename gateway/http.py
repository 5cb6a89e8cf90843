"""The FastAPI app object of the ingress: OpenAI-shaped error handlers, body parsing and the
connection policy towards Serve's proxy. The endpoints live on `GatewayIngress` (app.py)."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from deployments import Endpoint
from gateway.errors import OpenAIError, from_exception, from_validation_error
from gateway.protocol import REQUEST_MODELS

logger = logging.getLogger("ray.serve")

app = FastAPI(title="LLM gateway", docs_url=None, redoc_url=None, openapi_url=None)


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


app.add_middleware(FreshUpstreamConnections)


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


def parse_body(raw: bytes, endpoint: Endpoint) -> dict[str, Any]:
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
