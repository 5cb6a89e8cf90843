"""OpenAI's Responses API in front (`POST /v1/responses`, `GET` and `DELETE
/v1/responses/{id}`): each request is translated to a chat completion and served by the same
pipeline as chat; with `store`, the response and its conversation are kept (the key that
made it may continue it with `previous_response_id`, read or delete it) for
`responses.retention_days`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError

from access import Caller
from gateway.config import GatewayConfig
from gateway.core.front import Native
from gateway.core.pipeline import Gateway
from gateway.core.replies import Reply, StreamReply, TranslatedStream
from gateway.core.retrieving import owner_of
from gateway.errors import OpenAIError, from_exception, from_validation_error, json_object
from gateway.fronts.responses import file_search
from gateway.fronts.responses.file_search import Searched
from gateway.fronts.responses.stream import ResponsesStream
from gateway.fronts.responses.translate import input_items, new_id, to_chat_body, to_response
from gateway.fronts.responses.wire import RESPONSES
from llmops import ResponseStore


class ResponsesRequest(BaseModel):
    """The fields a backend would trip over; others are accepted and not used."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: StrictStr
    input: StrictStr | list[dict[str, Any]] | None = None
    instructions: StrictStr | None = None
    max_output_tokens: Annotated[int, Field(ge=1, strict=True)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2, strict=True)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1, strict=True)] | None = None
    stream: StrictBool | None = None
    store: StrictBool | None = None
    previous_response_id: StrictStr | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: StrictStr | dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    metadata: dict[str, StrictStr] | None = None
    background: StrictBool | None = None


FINISHED = ("completed", "incomplete")
# What the gateway does itself rather than the upstream: state, and its routing hints.
_GATEWAY_FIELDS = ("previous_response_id", "store", "routing", "input")


def _not_found(response_id: str, param: str | None = None) -> OpenAIError:
    return OpenAIError(
        f"Response with id '{response_id}' not found.",
        status=404,
        param=param,
        code="response_not_found",
    )


class ResponsesAPI:
    """One per ingress replica. The store opens on first use."""

    def __init__(self, gateway: Gateway, config: GatewayConfig, root: Path) -> None:
        self.gateway = gateway
        settings = config.responses
        self._path = root / Path(settings.path or config.ledger.path)
        self._retention_s = settings.retention_days * 86400
        self._store_by_default = settings.store_by_default
        self._store: ResponseStore | None = None

    def store(self) -> ResponseStore:
        if self._store is None:
            shared = self.gateway.database
            where = shared.acquire() if shared is not None else self._path
            self._store = ResponseStore(where, self._retention_s)
        return self._store

    async def _caller(self, headers: Mapping[str, str]) -> Caller | None:
        keys = self.gateway.keys
        return await keys.authenticate(headers) if keys is not None else None

    async def _owner(self, headers: Mapping[str, str]) -> str | None:
        """Whose stored responses a request may see: its key's (None without keys)."""
        return _response_owner(await self._caller(headers))

    async def _prepare(
        self, raw: bytes, headers: Mapping[str, str]
    ) -> tuple[dict[str, Any], str | None, list[dict[str, Any]], dict[str, Any], Searched | None]:
        """The body, its owner, the stored conversation it continues, its chat body, and the
        file search the gateway ran for it (the passages are in the chat body)."""
        body = self._parse(raw)
        library = self.gateway.library
        search = file_search.parse(body, library.config.tool_max_num_results) if library else None
        caller = await self._caller(headers)
        owner = _response_owner(caller)
        history: list[dict[str, Any]] = []
        previous = body.get("previous_response_id")
        if previous:
            stored = await asyncio.to_thread(self.store().get, previous, owner)
            if stored is None:
                raise _not_found(previous, "previous_response_id")
            history = stored[1]
        chat = to_chat_body(body, history)
        searched = None
        if search is not None and library is not None:
            searched, chat = await file_search.run(library, search, owner_of(caller), chat, headers)
        return body, owner, history, chat, searched

    async def create(
        self, raw: bytes, headers: Mapping[str, str], request_id: str
    ) -> Reply | StreamReply:
        try:
            body, owner, history, chat, searched = await self._prepare(raw, headers)
        except Exception as exc:
            return Reply.error(from_exception(exc))
        store = body.get("store", self._store_by_default)
        body = {**body, "store": store}
        conversation = history + input_items(body)
        response_id = new_id("resp")
        # For a backend that speaks Responses: the whole conversation, stateless upstream
        # (not after a file search: the gateway adds its items to the response).
        native = {k: v for k, v in body.items() if k not in _GATEWAY_FIELDS}
        native.update(input=conversation, store=False)
        reply = await self.gateway.handle(
            "chat/completions",
            chat,
            headers,
            request_id,
            api="responses",
            native=Native(RESPONSES, native) if searched is None else None,
        )
        own = {"previous_response_id": body.get("previous_response_id"), "store": store}
        if isinstance(reply, StreamReply):
            saver = (lambda r: self._save({**r, **own}, conversation, owner)) if store else None
            if reply.native:
                return TranslatedStream(reply, _passed_on(reply, saver))
            stream = _translator(body, response_id, searched)
            return TranslatedStream(reply, _events(reply, stream, saver))
        if reply.status != 200:
            return reply
        if reply.native:  # the upstream's own Response, with this conversation's state
            response = {**orjson.loads(reply.body), **own}
        else:
            response = to_response(body, response_id, orjson.loads(reply.body))
        if searched is not None:
            response["output"].insert(0, searched.item)
            file_search.annotate(response, searched.passages, searched.question)
        if store:
            await self._save(response, conversation, owner)
        return Reply(200, orjson.dumps(response), reply.headers)

    async def _save(
        self, response: dict[str, Any], conversation: list[dict[str, Any]], owner: str | None
    ) -> None:
        items = conversation + response["output"]
        await asyncio.to_thread(self.store().save, response, items, owner)

    @staticmethod
    def _parse(raw: bytes) -> dict[str, Any]:
        data = json_object(raw)
        try:
            ResponsesRequest.model_validate(data)
        except ValidationError as exc:
            raise from_validation_error(exc, data) from None
        if data.get("background"):
            raise OpenAIError(
                "background responses are not supported by this gateway.",
                status=400,
                param="background",
                code="unsupported_parameter",
            )
        if data.get("input") is None and not data.get("previous_response_id"):
            raise OpenAIError(
                "Missing required parameter: 'input'.",
                status=400,
                param="input",
                code="missing_required_parameter",
            )
        return data

    async def retrieve(self, response_id: str, headers: Mapping[str, str]) -> Reply:
        try:
            owner = await self._owner(headers)
            stored = await asyncio.to_thread(self.store().get, response_id, owner)
            if stored is None:
                raise _not_found(response_id)
        except Exception as exc:
            return Reply.error(from_exception(exc))
        return Reply(200, orjson.dumps(stored[0]))

    async def delete(self, response_id: str, headers: Mapping[str, str]) -> Reply:
        try:
            owner = await self._owner(headers)
            if not await asyncio.to_thread(self.store().delete, response_id, owner):
                raise _not_found(response_id)
        except Exception as exc:
            return Reply.error(from_exception(exc))
        deleted = {"id": response_id, "object": "response.deleted", "deleted": True}
        return Reply(200, orjson.dumps(deleted))

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def _response_owner(caller: Caller | None) -> str | None:
    if caller is None:
        return None
    return caller.key.id if caller.key is not None else "master"


def _translator(
    body: dict[str, Any], response_id: str, searched: Searched | None
) -> ResponsesStream:
    if searched is None:
        return ResponsesStream(body, response_id)
    return ResponsesStream(body, response_id, [searched.item], searched.annotate)


async def _events(
    chat: StreamReply, translator: ResponsesStream, saver: Any
) -> AsyncIterator[bytes]:
    """The Responses events of a chat stream; a finished response is stored before its last
    event goes out, so a client may continue it at once."""
    async for data in chat:
        out = translator.feed(data)
        if saver is not None and translator.response["status"] in FINISHED:
            await saver(translator.response)
            saver = None
        if out:
            yield out
    out = translator.close()
    if saver is not None and translator.response["status"] in FINISHED:
        await saver(translator.response)
    if out:
        yield out


async def _passed_on(stream: StreamReply, saver: Any) -> AsyncIterator[bytes]:
    """An upstream's Responses events, bytes as they came; its final response is stored
    before that event goes out."""
    async for events in stream:
        if saver is not None and (final := _final_response(events)) is not None:
            await saver(final)
            saver = None
        yield events


def _final_response(events: bytes) -> dict[str, Any] | None:
    if b'"response.completed"' not in events and b'"response.incomplete"' not in events:
        return None
    for line in events.split(b"\n"):
        if line.startswith(b"data:"):
            data = orjson.loads(line[5:])
            if data.get("type") in ("response.completed", "response.incomplete"):
                return dict(data["response"])
    return None
