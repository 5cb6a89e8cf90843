"""A stand-in for Anthropic's Messages API, checked against the `anthropic` SDK's own types.

Every request body is validated with the SDK's `MessageCreateParams` TypedDicts (unknown or
ill-shaped fields -> 400, as the real API does) and recorded; every answer and stream event
is built from the SDK's response models, so what the gateway parses is what the SDK defines.

Behaviour, deterministic: with tools offered (and tool_choice not `none`) and no tool result
in the last turn, it calls the first (or forced) tool with {"city": "Paris"}; otherwise it
answers "echo: <last user text>", cut at a stop sequence or at max_tokens words.
Prompt caching as the API does it: the prompt up to the last block marked `cache_control`
(system, then messages) is written to the cache the first time (`cache_creation_input_tokens`)
and read from it after (`cache_read_input_tokens`); `input_tokens` counts the rest. Tokens are
counted as 4 bytes of the request's JSON each.

Run: STANDIN_KEY=sk-ant-test python tests/standins/anthropic_messages.py --port 9200
Test hooks: GET /_received, POST /_reset, POST /_fail {"status": 529, "count": 2,
"retry_after": 1}.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import uvicorn
from anthropic import types
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
from pydantic import TypeAdapter, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

STATE: dict[str, Any] = {
    "key": "", "received": [], "fail": [], "token_delay": 0.0, "cached": set()
}  # fmt: skip
PARAMS = TypeAdapter(MessageCreateParamsNonStreaming)


def _force(value: Any) -> Any:
    """Drain pydantic's lazy iterators so that every nested block is validated."""
    if isinstance(value, dict):
        return {k: _force(v) for k, v in value.items()}
    if isinstance(value, str | bytes | int | float | bool) or value is None:
        return value
    try:
        return [_force(item) for item in value]
    except TypeError:
        return value


def _error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return Response(orjson.dumps(body), status, headers=headers, media_type="application/json")


def _last_user_text(messages: list[dict[str, Any]]) -> tuple[str, bool]:
    """(text of the last user turn, whether it carries a tool result)."""
    for message in reversed(messages):
        if message["role"] != "user":
            continue
        content = message["content"]
        if isinstance(content, str):
            return content, False
        texts = [b.get("text", "") for b in content if b.get("type") == "text"]
        results = [b for b in content if b.get("type") == "tool_result"]
        if results:
            texts += [str(r.get("content", "")) for r in results]
        return " ".join(texts), bool(results)
    return "", False


def _blocks(params: dict[str, Any]) -> list[Any]:
    """The prompt as a list of blocks, in the order the cache reads them."""
    system = params.get("system") or []
    blocks: list[Any] = [system] if isinstance(system, str) else list(system)
    for message in params["messages"]:
        content = message["content"]
        blocks.extend([content] if isinstance(content, str) else content)
    return blocks


def _usage(params: dict[str, Any]) -> types.Usage:
    blocks = _blocks(params)
    total = len(orjson.dumps(blocks)) // 4
    marked = [i for i, b in enumerate(blocks) if isinstance(b, dict) and b.get("cache_control")]
    if not marked:
        return types.Usage(input_tokens=total, output_tokens=0)
    prefix = orjson.dumps(blocks[: marked[-1] + 1])
    size = len(prefix) // 4
    read = prefix in STATE["cached"]
    STATE["cached"].add(prefix)
    return types.Usage(
        input_tokens=max(total - size, 0),
        output_tokens=0,
        cache_read_input_tokens=size if read else 0,
        cache_creation_input_tokens=0 if read else size,
    )


def _answer(params: dict[str, Any]) -> types.Message:
    text, has_result = _last_user_text(params["messages"])
    tools, choice = params.get("tools") or [], params.get("tool_choice") or {"type": "auto"}
    usage = _usage(params)
    if tools and choice.get("type") != "none" and not has_result:
        name = choice.get("name") or tools[0]["name"]
        block: Any = types.ToolUseBlock(
            type="tool_use", id="toolu_standin_1", name=name, input={"city": "Paris"}
        )
        usage.output_tokens = 12
        content, reason, sequence = [block], "tool_use", None
    else:
        words = f"echo: {text}".split()
        reason, sequence = "end_turn", None
        for stop in params.get("stop_sequences") or []:
            joined = " ".join(words)
            if stop in joined:
                words, reason, sequence = (
                    joined[: joined.index(stop)].split(),
                    "stop_sequence",
                    stop,
                )
                break
        if len(words) > params["max_tokens"]:
            words, reason, sequence = words[: params["max_tokens"]], "max_tokens", None
        usage.output_tokens = len(words)
        content = [types.TextBlock(type="text", text=" ".join(words))]
    return types.Message(
        id="msg_standin_1",
        type="message",
        role="assistant",
        model=params["model"],
        content=content,
        stop_reason=reason,  # type: ignore[arg-type]
        stop_sequence=sequence,
        usage=usage,
    )


def _events(message: types.Message) -> Iterator[Any]:
    """The stream a real Messages call emits for `message`, as SDK event models."""
    start = message.model_copy(
        update={
            "content": [],
            "stop_reason": None,
            "usage": message.usage.model_copy(update={"output_tokens": 1}),
        }
    )
    yield types.RawMessageStartEvent(type="message_start", message=start)
    yield {"type": "ping"}
    for index, block in enumerate(message.content):
        if block.type == "text":
            empty = types.TextBlock(type="text", text="")
            yield types.RawContentBlockStartEvent(
                type="content_block_start", index=index, content_block=empty
            )
            for position, word in enumerate(block.text.split(" ")):
                piece = word if position == 0 else " " + word
                yield types.RawContentBlockDeltaEvent(
                    type="content_block_delta",
                    index=index,
                    delta=types.TextDelta(type="text_delta", text=piece),
                )
        elif block.type == "tool_use":
            started = block.model_copy(update={"input": {}})
            yield types.RawContentBlockStartEvent(
                type="content_block_start", index=index, content_block=started
            )
            arguments = orjson.dumps(block.input).decode()
            for part in (arguments[: len(arguments) // 2], arguments[len(arguments) // 2 :]):
                yield types.RawContentBlockDeltaEvent(
                    type="content_block_delta",
                    index=index,
                    delta=types.InputJSONDelta(type="input_json_delta", partial_json=part),
                )
        yield types.RawContentBlockStopEvent(type="content_block_stop", index=index)
    yield types.RawMessageDeltaEvent(
        type="message_delta",
        delta={"stop_reason": message.stop_reason, "stop_sequence": message.stop_sequence},  # type: ignore[arg-type]
        usage=types.MessageDeltaUsage(output_tokens=message.usage.output_tokens),
    )
    yield types.RawMessageStopEvent(type="message_stop")


def _sse(event: Any) -> bytes:
    data = orjson.dumps(event) if isinstance(event, dict) else event.model_dump_json().encode()
    kind = event["type"] if isinstance(event, dict) else event.type
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


async def messages(request: Request) -> Response:
    # The SDK sends the key as x-api-key (older) or as a bearer token (2.x).
    bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
    if STATE["key"] not in (request.headers.get("x-api-key"), bearer):
        return _error(401, "authentication_error", "invalid x-api-key")
    if not request.headers.get("anthropic-version"):
        return _error(400, "invalid_request_error", "anthropic-version header is required")
    try:
        raw = orjson.loads(await request.body())
        params = _force(PARAMS.validate_python({k: v for k, v in raw.items() if k != "stream"}))
    except (orjson.JSONDecodeError, ValidationError, AttributeError) as exc:
        return _error(400, "invalid_request_error", f"invalid request: {exc}"[:2000])
    STATE["received"].append(raw)
    if STATE["fail"]:
        status, retry_after = STATE["fail"].pop(0)
        headers = {"retry-after": str(retry_after)} if retry_after is not None else None
        kind = "overloaded_error" if status == 529 else "api_error"
        return _error(status, kind, "scripted failure", headers)
    message = _answer(params)
    if not raw.get("stream"):
        return Response(message.model_dump_json(), media_type="application/json")

    async def stream() -> AsyncIterator[bytes]:
        for event in _events(message):
            if STATE["token_delay"]:
                await asyncio.sleep(STATE["token_delay"])
            yield _sse(event)

    return StreamingResponse(stream(), media_type="text/event-stream")


async def received(_: Request) -> Response:
    return Response(orjson.dumps(STATE["received"]), media_type="application/json")


async def reset(_: Request) -> Response:
    STATE["received"].clear()
    STATE["fail"].clear()
    STATE["cached"].clear()
    return Response(b"{}", media_type="application/json")


async def fail(request: Request) -> Response:
    spec = orjson.loads(await request.body())
    STATE["fail"].extend([(int(spec["status"]), spec.get("retry_after"))] * int(spec["count"]))
    return Response(b"{}", media_type="application/json")


app = Starlette(
    routes=[
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/_received", received),
        Route("/_reset", reset, methods=["POST"]),
        Route("/_fail", fail, methods=["POST"]),
    ]
)

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    STATE["key"] = os.environ["STANDIN_KEY"]  # not an argument: argv shows up in process lists
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
