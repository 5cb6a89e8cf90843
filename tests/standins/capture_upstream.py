"""An upstream that keeps every byte it receives and echoes what it was sent: OpenAI chat
completions, completions and Responses, Anthropic Messages, OpenAI moderations.

The guardrail tests read its capture (`GET /_capture`: every request's raw bytes, headers
included) for values that must never leave the gateway, and check that the client got them
back. Answers echo the last user text ("echo: <text>"); with tools offered, the first tool is
called with {"text": <text>}. Streams send the echo in pieces of `--piece` characters, and
their bytes are written in chunks cut at random byte boundaries (seeded), so a placeholder
and an SSE event are split anywhere. Moderations flag an input containing "forbidden".

Run: python tests/standins/capture_upstream.py --port 9300 [--piece 3 --seed 7]
"""

from __future__ import annotations

import argparse
import random
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

STATE: dict[str, Any] = {"capture": bytearray(), "piece": 3, "rng": random.Random(7)}


async def _received(request: Request) -> dict[str, Any]:
    raw = await request.body()
    head = "".join(f"{k}: {v}\n" for k, v in request.headers.items())
    STATE["capture"] += f"{request.method} {request.url.path}\n{head}\n".encode() + raw + b"\n"
    return dict(orjson.loads(raw)) if raw else {}


def _text(value: Any) -> str:
    """The text of a content value in any of the APIs (a string, or parts/blocks)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(
            _text(p.get("text") or p.get("content") or "") for p in value if isinstance(p, dict)
        )
    return ""


def _last_user(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _text(message.get("content"))
    return ""


def _pieces(text: str) -> Iterator[str]:
    size = STATE["piece"]
    for at in range(0, len(text), size):
        yield text[at : at + size]


def _sse(events: list[bytes]) -> StreamingResponse:
    """The events' bytes, cut at random boundaries."""
    data = b"".join(events)
    rng: random.Random = STATE["rng"]

    async def chunks() -> AsyncIterator[bytes]:
        at = 0
        while at < len(data):
            size = rng.randint(1, 48)
            yield data[at : at + size]
            at += size

    return StreamingResponse(chunks(), media_type="text/event-stream")


def _event(payload: dict[str, Any], name: str | None = None) -> bytes:
    head = f"event: {name}\n".encode() if name else b""
    return head + b"data: " + orjson.dumps(payload) + b"\n\n"


def _tool_arguments(body: dict[str, Any], text: str) -> tuple[str, str] | None:
    tools = body.get("tools") or []
    if not tools or body.get("tool_choice") == "none":
        return None
    first = tools[0]
    name = (first.get("function") or {}).get("name") or first.get("name") or "tool"
    return name, orjson.dumps({"text": text}).decode()


async def chat(request: Request) -> Response:
    body = await _received(request)
    text = "echo: " + _last_user(body.get("messages") or [])
    call = _tool_arguments(body, text)
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    base = {"id": "chatcmpl-capture", "created": 0, "model": body.get("model", "capture")}
    if not body.get("stream"):
        message: dict[str, Any] = {"role": "assistant", "content": None if call else text}
        if call:
            message["tool_calls"] = [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": call[0], "arguments": call[1]},
                }
            ]
        choice = {"index": 0, "message": message, "finish_reason": "tool_calls" if call else "stop"}
        return JSONResponse(
            {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
        )
    chunk = {**base, "object": "chat.completion.chunk"}

    def delta(d: dict[str, Any], finish: str | None = None) -> bytes:
        return _event({**chunk, "choices": [{"index": 0, "delta": d, "finish_reason": finish}]})

    events = [delta({"role": "assistant", "content": ""})]
    if call:
        head = {
            "index": 0,
            "id": "call_1",
            "type": "function",
            "function": {"name": call[0], "arguments": ""},
        }
        events.append(delta({"tool_calls": [head]}))
        events += [
            delta({"tool_calls": [{"index": 0, "function": {"arguments": p}}]})
            for p in _pieces(call[1])
        ]
    else:
        events += [delta({"content": p}) for p in _pieces(text)]
    events.append(delta({}, "tool_calls" if call else "stop"))
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append(_event({**chunk, "choices": [], "usage": usage}))
    return _sse([*events, b"data: [DONE]\n\n"])


async def completions(request: Request) -> Response:
    body = await _received(request)
    prompt = body.get("prompt")
    text = "echo: " + (prompt if isinstance(prompt, str) else " ".join(prompt or []))
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    base = {"id": "cmpl-capture", "object": "text_completion", "created": 0, "model": "capture"}
    if not body.get("stream"):
        choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
        return JSONResponse({**base, "choices": [choice], "usage": usage})
    events = [
        _event({**base, "choices": [{"index": 0, "text": p, "finish_reason": None}]})
        for p in _pieces(text)
    ]
    events.append(_event({**base, "choices": [{"index": 0, "text": "", "finish_reason": "stop"}]}))
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append(_event({**base, "choices": [], "usage": usage}))
    return _sse([*events, b"data: [DONE]\n\n"])


async def messages(request: Request) -> Response:
    body = await _received(request)
    text = "echo: " + _last_user(body.get("messages") or [])
    call = _tool_arguments(body, text)
    usage = {"input_tokens": 10, "output_tokens": 5}
    block: dict[str, Any] = (
        {"type": "tool_use", "id": "toolu_1", "name": call[0], "input": orjson.loads(call[1])}
        if call
        else {"type": "text", "text": text}
    )
    message = {
        "id": "msg_capture",
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "stop_sequence": None,
        "stop_reason": "tool_use" if call else "end_turn",
    }
    if not body.get("stream"):
        return JSONResponse({**message, "content": [block], "usage": usage})
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": 10, "output_tokens": 0},
    }
    events = [_event({"type": "message_start", "message": start}, "message_start")]
    opened = {**block, "input": {}} if call else {"type": "text", "text": ""}
    events.append(
        _event(
            {"type": "content_block_start", "index": 0, "content_block": opened},
            "content_block_start",
        )
    )
    kind, field = ("input_json_delta", "partial_json") if call else ("text_delta", "text")
    for piece in _pieces(call[1] if call else text):
        events.append(
            _event(
                {"type": "content_block_delta", "index": 0, "delta": {"type": kind, field: piece}},
                "content_block_delta",
            )
        )
    events.append(_event({"type": "content_block_stop", "index": 0}, "content_block_stop"))
    events.append(
        _event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": 5},
            },
            "message_delta",
        )
    )
    events.append(_event({"type": "message_stop"}, "message_stop"))
    return _sse(events)


async def responses(request: Request) -> Response:
    body = await _received(request)
    items = body.get("input")
    user = (
        items
        if isinstance(items, str)
        else _last_user([i for i in items or [] if isinstance(i, dict)])
    )
    text = "echo: " + user
    part = {"type": "output_text", "text": text, "annotations": []}
    item = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [part],
    }
    usage = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
    response = {
        "id": "resp_capture",
        "object": "response",
        "created_at": 0,
        "status": "completed",
        "model": body.get("model"),
        "output": [item],
        "usage": usage,
    }
    if not body.get("stream"):
        return JSONResponse(response)
    at = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    events = [
        _event(
            {
                "type": "response.created",
                "response": {**response, "output": [], "status": "in_progress"},
            },
            "response.created",
        )
    ]
    events += [
        _event(
            {"type": "response.output_text.delta", **at, "delta": p}, "response.output_text.delta"
        )
        for p in _pieces(text)
    ]
    events.append(
        _event(
            {"type": "response.output_text.done", **at, "text": text}, "response.output_text.done"
        )
    )
    events.append(
        _event({"type": "response.completed", "response": response}, "response.completed")
    )
    return _sse(events)


async def moderations(request: Request) -> Response:
    body = await _received(request)
    flagged = "forbidden" in str(body.get("input"))
    result = {"flagged": flagged, "categories": {"harassment": flagged, "violence": False}}
    return JSONResponse({"id": "modr-capture", "model": "capture", "results": [result]})


async def capture(request: Request) -> Response:
    return Response(bytes(STATE["capture"]), media_type="application/octet-stream")


async def reset(request: Request) -> Response:
    STATE["capture"] = bytearray()
    return JSONResponse({"ok": True})


app = Starlette(
    routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/responses", responses, methods=["POST"]),
        Route("/v1/moderations", moderations, methods=["POST"]),
        Route("/_capture", capture, methods=["GET"]),
        Route("/_reset", reset, methods=["POST"]),
    ]
)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--piece", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    STATE["piece"], STATE["rng"] = args.piece, random.Random(args.seed)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
