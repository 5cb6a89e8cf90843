"""A scripted OpenAI-compatible upstream with a known latency, for benchmarks and routing tests.

It produces `max_tokens` tokens (default 20): the first after `--ttft-ms`, each next one
`--tpot-ms` later; with zero delays it answers at once, so that any time a request spends
beyond a direct call is time the gateway added. `--fail-rate` answers that share of requests
with 503. `GET /_stats` counts requests and lists when clients went away mid-answer (tests of
cancellation and chaos read it); `POST /_reset` clears it.
Run: python bench/stub_upstream.py --port 9100 [--ttft-ms 200 --tpot-ms 10 --fail-rate 0.3]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import AsyncIterator

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

DELAYS = {"ttft": 0.0, "tpot": 0.0}
FAILURES = {"rate": 0.0, "rng": random.Random(0)}
STATS: dict[str, list[float] | int] = {"requests": 0, "failed": 0, "completed": 0, "gone": []}
RECEIVED: list[dict[str, object]] = []  # the last bodies, for tests of what reached upstream


def _gone() -> None:
    """The client closed the connection before the answer was complete."""
    gone = STATS["gone"]
    assert isinstance(gone, list)
    gone.append(time.time())


def _count(key: str) -> None:
    value = STATS[key]
    assert isinstance(value, int)
    STATS[key] = value + 1


def _chunk(index: int, finish: str | None = None) -> bytes:
    delta = {"content": f" w{index}"} if finish is None else {}
    payload = {
        "id": "chatcmpl-stub",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "stub",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _usage(tokens: int) -> dict[str, int]:
    return {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": 5 + tokens}


async def chat(request: Request) -> Response:
    body = orjson.loads(await request.body())
    tokens = int(body.get("max_tokens") or 20)
    _count("requests")
    RECEIVED[:] = [*RECEIVED[-19:], body]
    if FAILURES["rate"] and FAILURES["rng"].random() < FAILURES["rate"]:  # type: ignore[attr-defined]
        _count("failed")
        error = {"error": {"message": "scripted", "type": "server_error", "param": None,
                           "code": None}}  # fmt: skip
        return Response(orjson.dumps(error), 503, media_type="application/json")
    if body.get("stream"):

        async def events() -> AsyncIterator[bytes]:
            done = False
            try:
                await asyncio.sleep(DELAYS["ttft"])
                for index in range(tokens):
                    if index:
                        await asyncio.sleep(DELAYS["tpot"])
                    yield _chunk(index)
                yield _chunk(tokens, finish="length")
                done = True
                _count("completed")
            finally:
                if not done:
                    _gone()
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = {
                    "id": "chatcmpl-stub",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": "stub",
                    "choices": [],
                    "usage": _usage(tokens),
                }
                yield b"data: " + orjson.dumps(usage) + b"\n\n"
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")
    deadline = time.monotonic() + DELAYS["ttft"] + DELAYS["tpot"] * max(0, tokens - 1)
    while (left := deadline - time.monotonic()) > 0:
        await asyncio.sleep(min(left, 0.02))
        if left > 0.02 and await request.is_disconnected():
            _gone()
            return Response(status_code=499)
    _count("completed")
    return Response(
        orjson.dumps(
            {
                "id": "chatcmpl-stub",
                "object": "chat.completion",
                "created": 0,
                "model": "stub",
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": " ".join(f"w{i}" for i in range(tokens)),
                        },
                        "logprobs": None,
                        "finish_reason": "length",
                    }
                ],
                "usage": _usage(tokens),
            }
        ),
        media_type="application/json",
    )


async def models(_: Request) -> Response:
    return Response(
        orjson.dumps(
            {
                "object": "list",
                "data": [
                    {
                        "id": "stub",
                        "object": "model",
                        "created": int(time.time()),
                        "owned_by": "bench",
                    }
                ],
            }
        ),
        media_type="application/json",
    )


async def stats(_: Request) -> Response:
    return Response(orjson.dumps(STATS), media_type="application/json")


async def received(_: Request) -> Response:
    return Response(orjson.dumps(RECEIVED), media_type="application/json")


async def reset(_: Request) -> Response:
    STATS.update(requests=0, failed=0, completed=0, gone=[])
    RECEIVED.clear()
    return Response(b"{}", media_type="application/json")


app = Starlette(
    routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/models", models),
        Route("/_stats", stats),
        Route("/_received", received),
        Route("/_reset", reset, methods=["POST"]),
    ]
)

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    parser.add_argument("--tpot-ms", type=float, default=0.0)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    args = parser.parse_args()
    DELAYS.update(ttft=args.ttft_ms / 1000, tpot=args.tpot_ms / 1000)
    FAILURES["rate"] = args.fail_rate
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
