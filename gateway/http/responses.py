"""The Responses front's routes (OpenAI's Responses API, with stored responses)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import Response

from gateway.core.replies import Reply
from gateway.fronts.responses import ResponsesAPI
from gateway.http.context import Http, to_response


def add_routes(app: FastAPI, http: Http, responses: ResponsesAPI) -> None:
    gateway = http.gateway

    @app.post("/v1/responses")
    async def create_response(request: Request) -> Response:
        """OpenAI's Responses API, served by any backend of the model's route."""
        rid = http.request_id(request)
        refused = await gateway.check_caller("responses", request.headers, rid)
        if refused is not None:
            return to_response(Reply.error(refused))
        raw = await http.body(request)
        return to_response(await responses.create(raw, request.headers, rid))

    @app.get("/v1/responses/{response_id}")
    async def retrieve_response(response_id: str, request: Request) -> Response:
        return to_response(await responses.retrieve(response_id, request.headers))

    @app.delete("/v1/responses/{response_id}")
    async def delete_response(response_id: str, request: Request) -> Response:
        return to_response(await responses.delete(response_id, request.headers))
