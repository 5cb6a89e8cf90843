"""The Messages front's routes (Anthropic's API): its errors in Anthropic's shape, body
errors too."""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.responses import Response

from access import AccessError
from gateway.errors import OpenAIError, from_exception
from gateway.fronts.messages import AnthropicHandler, anthropic_error, count_tokens, serve_messages
from gateway.http.context import Http, to_response


def add_routes(app: FastAPI, http: Http) -> None:
    gateway = http.gateway

    async def anthropic(
        request: Request, serve_it: AnthropicHandler, *, recorded: bool = True
    ) -> Response:
        """A Messages API request (`recorded`: a request the ledger keeps, refused or not;
        count_tokens is not one)."""
        rid = http.request_id(request)
        try:
            refused = None
            if recorded:
                refused = await gateway.check_caller("messages", request.headers, rid)
            else:
                await http.gate(request)
        except AccessError as exc:
            refused = from_exception(exc)
        if refused is not None:
            return to_response(anthropic_error(refused.status, refused.message, rid))
        try:
            raw = await http.body(request)
        except OpenAIError as exc:
            return to_response(anthropic_error(exc.status, exc.message, rid))
        return to_response(await serve_it(gateway, raw, request.headers, rid))

    @app.post("/v1/messages")
    async def messages(request: Request) -> Response:
        """Anthropic's Messages API, served by any backend of the model's route."""
        return await anthropic(request, serve_messages)

    @app.post("/v1/messages/count_tokens")
    async def messages_count_tokens(request: Request) -> Response:
        return await anthropic(request, count_tokens, recorded=False)
