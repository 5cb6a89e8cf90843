"""Console sessions, kept by the state owner so that every ingress replica sees the same ones:
a random token in the browser's cookie (never the key itself), its SHA-256 here, who signed
in, until when, and the CSRF token its forms must carry. Ending one, or revoking the key that
opened it, ends it everywhere (replicas check each page load)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from access._ops import Op
from access._records import hash_secret

if TYPE_CHECKING:
    from access._client import AccessClient
    from access._transport import Caller

MAX_SESSIONS = 10_000  # the oldest goes when a new one would pass this


@dataclass(frozen=True, slots=True)
class Session:
    principal: str  # a key's id, or "master"
    expires_at: float
    csrf: str


class Sessions:
    """Plain Python, owned by `AccessState` (one replica: no locks needed)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._by_hash: dict[str, Session] = {}

    def create(self, principal: str, ttl_s: float) -> dict[str, Any]:
        now = self.clock()
        self._by_hash = {h: s for h, s in self._by_hash.items() if s.expires_at > now}
        while len(self._by_hash) >= MAX_SESSIONS:
            del self._by_hash[next(iter(self._by_hash))]
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        self._by_hash[hash_secret(token)] = Session(principal, now + ttl_s, csrf)
        return {"token": token, "csrf": csrf, "expires_at": now + ttl_s}

    def check(self, token_hash: str) -> dict[str, Any] | None:
        session = self._by_hash.get(token_hash)
        if session is None or session.expires_at <= self.clock():
            self._by_hash.pop(token_hash, None)
            return None
        return {"principal": session.principal, "csrf": session.csrf,
                "expires_at": session.expires_at}  # fmt: skip

    def end(self, token_hash: str) -> bool:
        return self._by_hash.pop(token_hash, None) is not None

    def end_for(self, principal: str) -> None:
        """A revoked key's sessions end with it."""
        self._by_hash = {h: s for h, s in self._by_hash.items() if s.principal != principal}


class SessionClient:
    """An ingress replica's side: opens, checks and ends sessions at the state owner, and
    checks the key behind one against what the replica knows of it (revoked, demoted)."""

    def __init__(self, client: AccessClient) -> None:
        self.client = client

    async def open(self, caller: Caller, ttl_s: float) -> tuple[str, str]:
        """A session for a signed-in admin: (the cookie's token, the CSRF token)."""
        principal = "master" if caller.key is None else caller.key.id
        opened = await self.client.call(Op.SESSION_CREATE, {"principal": principal, "ttl_s": ttl_s})
        return str(opened["token"]), str(opened["csrf"])

    async def find(self, token: str) -> tuple[Caller, str] | None:
        """The admin behind a session token and its CSRF token; None when it is unknown,
        ended or expired, or its key is no longer an admin's or was revoked."""
        from access._transport import MASTER, Caller

        if not token:
            return None
        found = await self.client.call(Op.SESSION_CHECK, {"token_hash": hash_secret(token)})
        if found is None:
            return None
        if found["principal"] == "master":
            return MASTER, str(found["csrf"])
        key = self.client.principals.get(found["principal"])
        if key is None or key.role != "admin" or key.refusal() is not None:
            return None
        team = self.client.principals.get(key.team) if key.team else None
        return Caller(key, team), str(found["csrf"])

    async def end(self, token: str) -> None:
        await self.client.call(Op.SESSION_END, {"token_hash": hash_secret(token)})
