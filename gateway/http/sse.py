"""Streamed answers over HTTP."""

from __future__ import annotations

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway.core.replies import StreamReply


class SSEResponse(StreamingResponse):
    """Sends a `StreamReply` and closes it whatever happens (sent, cut, never started), so
    the backend call ends and the request is recorded exactly once."""

    def __init__(self, reply: StreamReply) -> None:
        super().__init__(reply, media_type="text/event-stream", headers=reply.headers)
        self.reply = reply

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.reply.aclose()
