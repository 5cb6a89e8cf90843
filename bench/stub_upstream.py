"""An instant OpenAI-compatible upstream for measuring the gateway's own overhead.

It answers chat completions at once (or streams `--chunks` SSE events with no delay), so
that any time a request spends beyond a direct call is time the gateway added.
Run: python bench/stub_upstream.py --port 9100
"""

from __future__ import annotations

import argparse
import time

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

CHUNKS = 20


def _chunk(index: int) -> bytes:
    payload = {
        "id": "chatcmpl-stub",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "stub",
        "choices": [
            {
                "index": 0,
                "delta": {"content": f" w{index}"},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
    }
    return b"data: " + orjson.dumps(payload) + b"\n\n"


COMPLETION = orjson.dumps(
    {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 0,
        "model": "stub",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "ok"},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }
)


async def chat(request: Request) -> Response:
    body = orjson.loads(await request.body())
    if body.get("stream"):

        async def events():  # type: ignore[no-untyped-def]
            for index in range(CHUNKS):
                yield _chunk(index)
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")
    return Response(COMPLETION, media_type="application/json")


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
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
