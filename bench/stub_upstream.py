"""A scripted OpenAI-compatible upstream with a known latency, for benchmarks and routing tests.

It produces `max_tokens` tokens (default 20): the first after `--ttft-ms`, each next one
`--tpot-ms` later; with zero delays it answers at once, so that any time a request spends
beyond a direct call is time the gateway added.
Run: python bench/stub_upstream.py --port 9100 [--ttft-ms 200 --tpot-ms 10]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

DELAYS = {"ttft": 0.0, "tpot": 0.0}


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
    if body.get("stream"):

        async def events() -> AsyncIterator[bytes]:
            await asyncio.sleep(DELAYS["ttft"])
            for index in range(tokens):
                if index:
                    await asyncio.sleep(DELAYS["tpot"])
                yield _chunk(index)
            yield _chunk(tokens, finish="length")
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
    await asyncio.sleep(DELAYS["ttft"] + DELAYS["tpot"] * max(0, tokens - 1))
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


app = Starlette(
    routes=[Route("/v1/chat/completions", chat, methods=["POST"]), Route("/v1/models", models)]
)

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    parser.add_argument("--tpot-ms", type=float, default=0.0)
    args = parser.parse_args()
    DELAYS.update(ttft=args.ttft_ms / 1000, tpot=args.tpot_ms / 1000)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
