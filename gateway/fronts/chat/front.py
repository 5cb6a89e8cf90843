"""The chat front object the HTTP layer calls (`gateway.http.chat`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from deployments import Endpoint
from gateway.core.pipeline import Gateway
from gateway.core.replies import Reply, StreamReply


class ChatFront:
    """`serve` one request of an OpenAI API the pipeline speaks; `explain` a chat body."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def serve(
        self,
        endpoint: Endpoint,
        read_body: Callable[[], Awaitable[bytes]],
        headers: Mapping[str, str],
        request_id: str,
    ) -> Reply | StreamReply:
        """The caller is checked before `read_body` reads the body (keys on: an unknown or
        over-limit key costs no read)."""
        refused = await self.gateway.check_caller(endpoint, headers, request_id)
        if refused is not None:
            return Reply.error(refused)
        return await self.gateway.handle(endpoint, await read_body(), headers, request_id)

    async def explain(self, raw: bytes, headers: Mapping[str, str], request_id: str) -> Reply:
        return await self.gateway.explain(raw, headers, request_id)
