"""The chat front's routes: chat completions, completions, embeddings, and the routing
decision for a chat body."""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import Response

from deployments import Endpoint
from gateway.fronts.chat import ChatFront
from gateway.http.context import Http, to_response


def add_routes(app: FastAPI, http: Http) -> None:
    front = ChatFront(http.gateway)

    async def serve(request: Request, endpoint: Endpoint) -> Response:
        body = lambda: http.body(request)  # noqa: E731
        rid = http.request_id(request)
        return to_response(await front.serve(endpoint, body, request.headers, rid))

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
        return to_response(await front.explain(raw, request.headers, http.request_id(request)))
