"""An ingress replica's view of the shared access state: who a key is (cached, refreshed by
a background sync), and whether a request fits the leases it holds (renewed only when one
runs out). The state is reached through a `Transport`, so tests run it in process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from access._config import AuthConfig
from access._errors import AccessError
from access._leases import Account, Need
from access._ops import Op
from access._quota import Dim, Grant
from access._records import Principal, hash_secret, model_allowed, same_secret
from access._transport import MASTER, Caller, Ticket, Transport

logger = logging.getLogger("ray.serve")
UNKNOWN_TTL_S = 1.0  # an unknown key is asked about again after this
UNKNOWN_MAX = 10_000
# Lookups of keys this replica does not know, per second (a burst of as many): beyond it an
# unknown key is refused here, so a flood of random keys cannot starve the state replica
# (and with it every lease renewal). A real new key gets through once the flood ebbs.
LOOKUPS_PER_S = 20.0
# Renewals one admission may wait through. Each one either grants something (another request
# goes ahead) or comes back short (everyone waiting is refused), so this bound is only a guard.
RENEW_TRIES = 1000


def _denied(message: str) -> AccessError:
    return AccessError(message, status=401, code="invalid_api_key")


def _bearer(authorization: str | None) -> str:
    if not authorization:
        return ""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _duration(seconds: float) -> str:
    """OpenAI's reset format: `20ms`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.0f}s" if minutes else f"{rest:.3g}s"


class AccessClient:
    """One per ingress replica. `authenticate` and `admit` are the pipeline's steps;
    `finish` settles a request from its outcome record."""

    def __init__(
        self,
        config: AuthConfig,
        transport: Transport,
        master_key: str | None,
        *,
        replica: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.transport = transport
        self._master_hash = hash_secret(master_key) if master_key else None
        self.replica = replica or uuid.uuid4().hex[:12]
        self.clock = clock
        self.principals: dict[str, Principal] = {}
        self._ids_by_hash: dict[str, str] = {}
        self._unknown: dict[str, float] = {}
        self._lookup_tokens = LOOKUPS_PER_S
        self._lookup_refill_at = clock()
        self._accounts: dict[str, Account] = {}
        self._renewing: dict[str, asyncio.Future[None]] = {}
        self._version = 0
        self._sync_task: asyncio.Task[None] | None = None

    # ---- authentication -----------------------------------------------------------------

    async def authenticate(self, authorization: str | None) -> Caller:
        token = _bearer(authorization)
        if not token:
            raise _denied(
                "You didn't provide an API key. Send it as `Authorization: Bearer <key>`."
            )
        key_hash = hash_secret(token)
        if self._master_hash is not None and same_secret(key_hash, self._master_hash):
            return MASTER
        pid = self._ids_by_hash.get(key_hash)
        if pid is None:
            pid = await self._lookup(key_hash)
        key = self.principals[pid]
        team = self.principals.get(key.team) if key.team else None
        refusal = key.refusal() or (
            "in a deleted team" if team is not None and team.revoked_at else None
        )
        if refusal:
            raise _denied(f"Incorrect API key provided: {key.prefix}... is {refusal}.")
        return Caller(key, team)

    async def _lookup(self, key_hash: str) -> str:
        now = self.clock()
        if self._unknown.get(key_hash, 0.0) > now or not self._may_look_up(now):
            raise _denied("Incorrect API key provided.")
        found = await self._call(Op.LOOKUP, {"key_hash": key_hash})
        if found is None:
            if len(self._unknown) >= UNKNOWN_MAX:
                self._unknown.clear()
            self._unknown[key_hash] = now + UNKNOWN_TTL_S
            raise _denied("Incorrect API key provided.")
        for data in (found["key"], found["team"]):
            if data is not None:
                self._remember(Principal.model_validate(data))
        self._ids_by_hash[key_hash] = found["key"]["id"]
        return str(found["key"]["id"])

    def _may_look_up(self, now: float) -> bool:
        """A token bucket over lookups of unknown keys."""
        elapsed = max(0.0, now - self._lookup_refill_at)
        self._lookup_tokens = min(LOOKUPS_PER_S, self._lookup_tokens + elapsed * LOOKUPS_PER_S)
        self._lookup_refill_at = now
        if self._lookup_tokens < 1.0:
            return False
        self._lookup_tokens -= 1.0
        return True

    def _remember(self, principal: Principal) -> None:
        known = self.principals.get(principal.id)
        if known is None or known.version <= principal.version:
            self.principals[principal.id] = principal

    # ---- admission ----------------------------------------------------------------------

    def check_model(self, caller: Caller, model: str) -> None:
        for principal in (caller.key, caller.team):
            if principal is not None and not model_allowed(principal.models, model):
                raise AccessError(
                    f"This {principal.kind} may not use model {model!r}.",
                    status=403,
                    code="model_not_allowed",
                    param="model",
                )

    def precheck(self, caller: Caller) -> None:
        """Refuse a caller this replica already knows to be over a limit, before any routing
        or tokenizing is spent on its request (no remote call)."""
        if caller.master:
            return
        now = self.clock()
        for principal in (caller.key, caller.team):
            account = self._accounts.get(principal.entity) if principal is not None else None
            blocked = account.blocked if account is not None else None
            if account is not None and blocked is not None and account.blocked_until > now:
                raise self._refusal(account, blocked, caller, now)

    async def admit(self, caller: Caller, need: Need) -> Ticket:
        """Reserve a request against the caller's leases (renewing those that run short);
        raises 429 when a limit or budget is reached."""
        if caller.master:
            return Ticket()
        accounts = tuple(
            self._account(p) for p in (caller.key, caller.team) if p is not None and _limited(p)
        )
        for _ in range(RENEW_TRIES):
            now = self.clock()
            for account in accounts:
                if account.blocked_until > now and account.blocked is not None:
                    raise self._refusal(account, account.blocked, caller, now)
            stale = [a for a in accounts if not a.fits(need, now)]
            if not stale:
                held = tuple(account.take(need) for account in accounts)
                return Ticket(accounts, need, held, self.headers(caller, now))
            refused = await self._renew(stale, need)
            if refused is not None:  # this request's worst case is more than is left
                raise self._refusal(*refused, caller, self.clock())
        raise AccessError(
            "Too many requests at once for this key; retry shortly.",
            status=429,
            code="rate_limit_exceeded",
            type="requests",
            retry_after_s=1.0,
        )

    def finish(self, ticket: Ticket, tokens: float, usd: float) -> None:
        """Settle an admitted request with what it really used (exactly once)."""
        if ticket.done:
            return
        ticket.done = True
        for account, held in zip(ticket.accounts, ticket.held_usd, strict=True):
            account.release(tokens - ticket.need.tokens, usd, held)

    def _account(self, principal: Principal) -> Account:
        account = self._accounts.get(principal.entity)
        if account is None:
            account = self._accounts[principal.entity] = Account(principal.entity)
        return account

    async def _renew(self, accounts: list[Account], need: Need) -> tuple[Account, Grant] | None:
        """Renew the leases of `accounts` for `need`; the account and grant that came back
        short for this request alone (the limit not exhausted), if any."""
        waiting = [self._renewing[a.entity] for a in accounts if a.entity in self._renewing]
        if waiting:  # another request is renewing: use its lease first
            await asyncio.gather(*waiting, return_exceptions=True)
            return None
        future = asyncio.get_running_loop().create_future()
        for account in accounts:
            self._renewing[account.entity] = future
        try:
            items: list[dict[str, Any]] = [
                {
                    "entity": a.entity,
                    "consumed": a.settlement(),
                    "want": need.amounts(a.in_flight, a.reserved_usd),
                }
                for a in accounts
            ]
            try:
                grants = await self._call(Op.RENEW, {"replica": self.replica, "items": items})
            except AccessError as exc:
                if exc.status != 503 or self.config.on_state_unavailable == "fail_closed":
                    for account, item in zip(accounts, items, strict=True):
                        _restore(account, item["consumed"])
                    raise
                now = self.clock()
                for account, item in zip(accounts, items, strict=True):
                    _restore(account, item["consumed"])
                    account.open_until = now + self.config.lease_ttl_s
                logger.warning("access state unreachable: admitting on local counts (fail_open)")
                return None
            now = self.clock()
            refused = None
            for account, data in zip(accounts, grants, strict=True):
                grant = Grant.from_dict(data)
                account.apply(grant, now)
                if grant.short is not None and not grant.exhausted and refused is None:
                    refused = (account, grant)
            return refused
        finally:
            for account in accounts:
                self._renewing.pop(account.entity, None)
            future.set_result(None)

    def _refusal(self, account: Account, grant: Grant, caller: Caller, now: float) -> AccessError:
        dim = grant.short
        kind = account.entity.partition(":")[0]
        headers = self.headers(caller, now)
        if dim == "usd":
            message = f"This {kind}'s budget is spent for the current period."
            if not grant.exhausted:
                message = (
                    f"This request could cost more than the ${grant.left_usd or 0.0:.6f} left "
                    f"of this {kind}'s budget (its worst case is reserved before it runs: "
                    "lower max_tokens or n)."
                )
            return AccessError(
                message,
                status=429,
                code="insufficient_quota",
                type="insufficient_quota",
                headers=headers,
            )
        wait = max(0.0, account.blocked_until - now)
        what = {"requests": "requests per minute", "tokens": "tokens per minute"}.get(
            dim or "", "parallel requests"
        )
        return AccessError(
            f"Rate limit reached for this {kind}: {what}. Retry after {wait:.1f}s.",
            status=429,
            code="rate_limit_exceeded",
            type=dim if dim in ("requests", "tokens") else "requests",
            retry_after_s=wait,
            headers=headers,
        )

    def headers(self, caller: Caller, now: float) -> dict[str, str]:
        """OpenAI's rate-limit headers for every per-minute limit the caller has (the
        tighter of key and team)."""
        headers: dict[str, str] = {}
        per_minute: tuple[tuple[Dim, str], ...] = (("requests", "rpm"), ("tokens", "tpm"))
        for dim, attr in per_minute:
            best: tuple[float, int, float | None] | None = None
            for principal in (caller.key, caller.team):
                limit = getattr(principal, attr, None) if principal else None
                if limit is None or principal is None:
                    continue
                account = self._accounts.get(principal.entity)
                left = account.remaining(dim) if account else None
                left = float(limit) if left is None else left
                reset = account.reset_s(dim, now) if account else None
                if best is None or left < best[0]:
                    best = (left, limit, reset)
            if best is not None:
                left, limit, reset = best
                headers[f"x-ratelimit-limit-{dim}"] = str(limit)
                headers[f"x-ratelimit-remaining-{dim}"] = str(int(left))
                headers[f"x-ratelimit-reset-{dim}"] = _duration(reset or 0.0)
        return headers

    # ---- the shared state ---------------------------------------------------------------

    async def call(self, op: Op, payload: dict[str, Any]) -> Any:
        """One operation on the shared state: its result, or the AccessError it raised (503
        `access_state_unavailable` when the state cannot be reached)."""
        return await self._call(op, payload)

    async def _call(self, op: Op, payload: dict[str, Any]) -> Any:
        try:
            async with asyncio.timeout(self.config.state_timeout_s):
                answer = await self.transport.call(op, payload)
        except Exception as exc:
            logger.warning("access state call %s failed: %s", op, type(exc).__name__)
            raise AccessError(
                "The gateway cannot reach its key store; retry shortly.",
                status=503,
                code="access_state_unavailable",
                type="server_error",
                retry_after_s=1.0,
            ) from None
        if "error" in answer:
            raise AccessError.from_dict(answer["error"])
        return answer["ok"]

    async def admin(self, op: Op, payload: dict[str, Any]) -> Any:
        """An admin operation on the state (the caller checked the credentials)."""
        result = await self._call(op, payload)
        if op in ("create", "update", "revoke"):
            await self.sync()  # this replica sees its own change at once
        return result

    async def sync(self) -> None:
        """Return idle leases that ran out; take every key and team changed since last time."""
        now = self.clock()
        returns: list[dict[str, Any]] = []
        spent: list[dict[str, Any]] = []
        for entity, account in list(self._accounts.items()):
            if entity in self._renewing:
                continue
            if account.idle and now >= account.expires:
                returns.append({"entity": entity, "consumed": account.settlement()})
                del self._accounts[entity]
            elif account.consumed["usd"]:
                spent.append({"entity": entity, "usd": account.spend_report()})
        payload = {
            "replica": self.replica,
            "since": self._version,
            "returns": returns,
            "spent": spent,
        }
        try:
            result = await self._call(Op.SYNC, payload)
        except AccessError:
            for item in returns:  # still to be reported, next time
                account = self._accounts.setdefault(item["entity"], Account(item["entity"]))
                _restore(account, item["consumed"])
            for item in spent:
                self._accounts[item["entity"]].consumed["usd"] += item["usd"]
            raise
        for data in result["changed"]:
            self._remember(Principal.model_validate(data))
        self._version = result["version"]

    def start(self) -> None:
        self._sync_task = asyncio.get_running_loop().create_task(self._sync_forever())

    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.sync_interval_s)
            with contextlib.suppress(AccessError):
                await self.sync()

    async def aclose(self) -> None:
        """Stop syncing and give every lease back, with what it used."""
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
        for account in self._accounts.values():
            account.expires = 0.0
            account.in_flight = 0
        with contextlib.suppress(AccessError):
            await self.sync()


def _limited(principal: Principal) -> bool:
    return any(
        value is not None
        for value in (principal.rpm, principal.tpm, principal.budget_usd, principal.max_parallel)
    )


def _restore(account: Account, consumed: dict[Dim, float]) -> None:
    """A renewal that failed: what the lease used is still to be reported."""
    for dim, amount in consumed.items():
        if dim != "parallel":
            account.consumed[dim] += amount
