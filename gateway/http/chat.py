"""The chat front's routes: chat completions, completions, embeddings (the pipeline's own
language, so no translation), and the routing decision for a chat body."""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import Response

from deployments import Endpoint
from gateway.core.replies import Reply
from gateway.http.context import Http, to_response


def add_routes(app: FastAPI, http: Http) -> None:
    gateway = http.gateway

    async def serve(request: Request, endpoint: Endpoint) -> Response:
        rid = http.request_id(request)
        refused = await gateway.check_caller(endpoint, request.headers, rid)
        if refused is not None:
            return to_response(Reply.error(refused))
        raw = await http.body(request)
        return to_response(await gateway.handle(endpoint, raw, request.headers, rid))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await serve(request, "chat/completions")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await serve(request, "completions")

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        return await serve(request, "embeddings")

    @app.post("/v1/routing/explain")
    async def explain(request: Request) -> Response:
        """The routing decision for a chat completion body, without calling any backend."""
        await http.gate(request)
        raw = await http.body(request)
        return to_response(await gateway.explain(raw, request.headers, http.request_id(request)))
