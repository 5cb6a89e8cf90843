"""What every route of the HTTP layer shares: the gateway it serves, the config, the ledger,
how requests are named and read, and who may call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import Request
from starlette.responses import Response

from access import AccessError, model_allowed
from gateway.config import GatewayConfig
from gateway.core.keys import KeyGate
from gateway.core.pipeline import Gateway
from gateway.core.replies import Reply, StreamReply
from gateway.http.body import read_body
from gateway.http.sse import SSEResponse
from gateway.http.views import ReplicaStates, backend_states
from llmops import LedgerReader

JSON = "application/json"
REPLICAS_TTL_S = 2.0


def to_response(reply: Reply | StreamReply) -> Response:
    if isinstance(reply, StreamReply):
        return SSEResponse(reply)
    return Response(reply.body, status_code=reply.status, media_type=JSON, headers=reply.headers)


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type=JSON)


@dataclass
class Http:
    """The routes' shared context. `request_id` names each request (Serve's id in a replica);
    `replica_states` reports Serve deployments (blocking, run in a thread); `facts` are what
    the deploy decided per backend (e.g. an engine's dtype)."""

    gateway: Gateway
    config: GatewayConfig
    ledger: LedgerReader | None
    request_id: Callable[[Request], str]
    replica_states: ReplicaStates
    facts: Mapping[str, Mapping[str, str]]
    _replicas: dict[str, Any] = field(default_factory=lambda: {"at": -REPLICAS_TTL_S, "states": {}})

    @property
    def keys(self) -> KeyGate | None:
        return self.gateway.keys

    async def body(self, request: Request) -> bytes:
        return await read_body(request, self.config.ingress.max_body_bytes)

    async def gate(self, request: Request) -> None:
        """Keys on: the caller is checked before its body is read (not recorded: explain)."""
        if self.keys is not None:
            await self.keys.gate(request.headers)

    async def need_key(self, request: Request, *, admin: bool = False) -> None:
        if self.keys is not None:
            check = self.keys.authenticate_admin if admin else self.keys.authenticate
            await check(request.headers)

    async def is_admin(self, request: Request) -> bool:
        if self.keys is None or not request.headers.get("authorization"):
            return self.keys is None
        try:
            await self.keys.authenticate_admin(request.headers)
        except AccessError:
            return False
        return True

    async def allowed_models(self, request: Request) -> Callable[[str], bool]:
        """Who may see what: any key sees the models it may use (needs a key when keys are
        on); without keys, everyone sees everything."""
        if self.keys is None:
            return lambda _: True
        caller = await self.keys.authenticate(request.headers)
        patterns = [p.models for p in (caller.key, caller.team) if p is not None]
        return lambda name: all(model_allowed(p, name) for p in patterns)

    async def backend_list(self) -> list[dict[str, Any]]:
        """What `GET /v1/gateway/backends` lists; Serve's replica states cached 2 s."""
        loop = asyncio.get_running_loop()
        if loop.time() - self._replicas["at"] > REPLICAS_TTL_S:
            states = await asyncio.to_thread(self.replica_states, list(self.config.backends))
            self._replicas.update(at=loop.time(), states=states)
        return backend_states(self.config, self.gateway, self._replicas["states"], self.facts)
