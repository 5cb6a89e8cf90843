"""The floor: a bare Python relay, one process, uvicorn + httpx, bytes passed through.

Whatever a Python gateway adds beyond this is its own doing. No validation, no routing, no
records: it forwards the body to the upstream and streams the answer back unchanged.
Run: python bench/relay.py --port 9200 --upstream http://127.0.0.1:9100/v1
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

UPSTREAM: dict[str, httpx.AsyncClient] = {}


async def chat(request: Request) -> Response:
    client = UPSTREAM["client"]
    upstream = client.build_request(
        "POST", "chat/completions", content=await request.body(),
        headers={"content-type": "application/json"},
    )  # fmt: skip
    response = await client.send(upstream, stream=True)
    if b'"stream":true' not in upstream.content.replace(b" ", b""):
        body = await response.aread()
        await response.aclose()
        return Response(body, status_code=response.status_code, media_type="application/json")

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        finally:
            await response.aclose()

    return StreamingResponse(relay(), media_type="text/event-stream")


app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    UPSTREAM["client"] = httpx.AsyncClient(
        base_url=args.upstream.rstrip("/") + "/",
        limits=httpx.Limits(max_connections=256, max_keepalive_connections=256),
        timeout=60,
    )
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
