"""Anthropic's Messages API in front (`POST /v1/messages`): the request is checked against
the Messages shapes, translated to a chat completion and served by the same pipeline as chat
(routing, keys and budgets, fallbacks, ledger, experiments, templates); the answer, whole or
streamed, and every error go back in Anthropic's shapes."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError

from gateway.core.front import Native
from gateway.core.pipeline import Gateway
from gateway.core.replies import Reply, StreamReply, TranslatedStream
from gateway.errors import OpenAIError, from_exception, from_validation_error, json_object
from gateway.fronts.messages.stream import MessagesStream
from gateway.fronts.messages.translate import to_chat_body, to_message
from gateway.fronts.messages.wire import MESSAGES

# API versions are dates; the Messages API exists since this one. Later versions add fields
# (passed through untouched), so any later date is taken.
FIRST_VERSION = "2023-01-01"
VERSION = re.compile(r"\d{4}-\d{2}-\d{2}")
# HTTP status -> Anthropic's error type (https://docs.anthropic.com/en/api/errors).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


# A Messages API endpoint: (gateway, body, headers, request id) -> its reply.
AnthropicHandler = Callable[
    [Gateway, bytes, Mapping[str, str], str], Awaitable[Reply | StreamReply]
]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class Block(_Open):
    type: StrictStr


class Turn(_Open):
    role: Literal["user", "assistant"]
    content: StrictStr | list[Block]


class ToolChoice(_Open):
    type: Literal["auto", "any", "tool", "none"]
    name: StrictStr | None = None
    disable_parallel_tool_use: StrictBool | None = None


class Tool(_Open):
    name: StrictStr
    description: StrictStr | None = None
    input_schema: dict[str, Any] | None = None


class Metadata(_Open):
    user_id: StrictStr | None = None


Unit = Annotated[float, Field(ge=0, le=1, strict=True)]


class MessagesRequest(_Open):
    """The Messages API request body: what a backend would trip over is checked here."""

    model: StrictStr
    max_tokens: Annotated[int, Field(ge=1, strict=True)]
    messages: Annotated[list[Turn], Field(min_length=1)]
    system: StrictStr | list[Block] | None = None
    stream: StrictBool | None = None
    temperature: Unit | None = None
    top_p: Unit | None = None
    top_k: Annotated[int, Field(ge=0, strict=True)] | None = None
    stop_sequences: list[StrictStr] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    metadata: Metadata | None = None


def anthropic_error(status: int, message: str, request_id: str = "") -> Reply:
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
    if request_id:
        body["request_id"] = request_id
    return Reply(status, orjson.dumps(body))


def _error_reply(reply: Reply, request_id: str) -> Reply:
    """The pipeline's OpenAI-shaped error in Anthropic's shape, same status and headers."""
    if reply.failure is not None:
        message = reply.failure.message
    else:  # an upstream's own error, passed on
        message = orjson.loads(reply.body).get("error", {}).get("message", "")
    translated = anthropic_error(reply.status, message, request_id)
    translated.headers = reply.headers
    return translated


def _check(raw: bytes, headers: Mapping[str, str], *, counting: bool = False) -> dict[str, Any]:
    version = headers.get("anthropic-version")
    if version is not None and not (VERSION.fullmatch(version) and version >= FIRST_VERSION):
        raise OpenAIError(
            f"anthropic-version: {version!r} is not an API version (a date, {FIRST_VERSION} "
            "or later, e.g. 2023-06-01).",
            status=400,
        )
    data = json_object(raw)
    if counting:  # counting needs no output budget
        data.setdefault("max_tokens", 1)
    try:
        MessagesRequest.model_validate(data)
    except ValidationError as exc:
        # Anthropic writes paths with dots: messages.0.content
        message = re.sub(r"\[(\d+)\]", r".\1", from_validation_error(exc, data).message)
        raise OpenAIError(message, status=400) from None
    return data


async def count_tokens(
    gateway: Gateway, raw: bytes, headers: Mapping[str, str], request_id: str
) -> Reply:
    """`POST /v1/messages/count_tokens`: the prompt tokens the router counts for the backend
    it would choose (that backend's tokenizer for a local model, an estimate for a provider's;
    without the chat template's few tokens)."""
    try:
        chat = to_chat_body(_check(raw, headers, counting=True))
        routed = await gateway.metered_route(chat, headers, request_id)
    except Exception as exc:
        error = from_exception(exc)
        return anthropic_error(error.status, error.message, request_id)
    chosen = routed.decision.chosen_evaluation
    tokens = chosen.estimate.prompt_tokens if chosen is not None else 0
    return Reply(200, orjson.dumps({"input_tokens": tokens}))


async def serve_messages(
    gateway: Gateway, raw: bytes, headers: Mapping[str, str], request_id: str
) -> Reply | StreamReply:
    try:
        body = _check(raw, headers)
        chat = to_chat_body(body)
    except OpenAIError as exc:
        return anthropic_error(exc.status, exc.message, request_id)
    except Exception as exc:  # a translation refused (a block type chat cannot carry)
        return anthropic_error(getattr(exc, "status", 400), str(exc), request_id)
    stops = list(body.get("stop_sequences") or [])
    own = {k: v for k, v in body.items() if k != "routing"}  # the gateway's, not Anthropic's
    reply = await gateway.handle(
        "chat/completions", chat, headers, request_id, api="messages", native=Native(MESSAGES, own)
    )
    if reply.native:  # an Anthropic backend answered the client's own body: as it came
        return reply
    if isinstance(reply, StreamReply):
        return TranslatedStream(reply, _events(reply, MessagesStream(body["model"], stops)))
    if reply.status != 200:
        return _error_reply(reply, request_id)
    message = to_message(orjson.loads(reply.body), stops)
    return Reply(200, orjson.dumps(message), reply.headers)


async def _events(chat: StreamReply, translator: MessagesStream) -> AsyncIterator[bytes]:
    async for data in chat:
        if out := translator.feed(data):
            yield out
    if out := translator.close():
        yield out
