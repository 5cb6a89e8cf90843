"""The state owner: the one place every ingress replica shares. Keys, teams and spend (in
`Store`), leases (in `QuotaBook`), behind one `call(op, payload)` entry point that takes and
returns plain data, so any transport (in process, a Serve handle) can carry it."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from access._errors import AccessError
from access._ops import Op
from access._quota import Dim, Limits, QuotaBook, period_id
from access._records import (
    KEY_ID_PREFIX,
    PREFIX_CHARS,
    KeyPatch,
    KeySpec,
    Principal,
    TeamPatch,
    TeamSpec,
    hash_secret,
    new_secret,
)
from access._sessions import Sessions
from access._store import Store
from storage import Database, DatabaseUnavailable

logger = logging.getLogger(__name__)
KINDS = ("key", "team")


def limits_of(
    principal: Principal, now: float | None = None, budgeted_max_parallel: int | None = None
) -> Limits:
    """`budgeted_max_parallel`: the parallel cap of a budgeted principal that sets none."""
    values: dict[Dim, float] = {}
    for dim, value in (
        ("requests", principal.rpm),
        ("tokens", principal.tpm),
        ("usd", principal.budget_usd),
        ("parallel", principal.max_parallel),
    ):
        if value is not None:
            values[dim] = float(value)  # type: ignore[index]
    budgeted = principal.budget_usd is not None and principal.max_parallel is None
    if budgeted and budgeted_max_parallel is not None:
        values["parallel"] = float(budgeted_max_parallel)
    return Limits(values, period_id(principal.budget_period, now))


def _validate(model: type[BaseModel], data: Any) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(part) for part in first["loc"]) or None
        message = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown field"
        raise AccessError(
            f"{path}: {message}", status=400, code="invalid_value", param=path
        ) from None


class AccessState:
    """Plain Python; the Serve deployment in `gateway.app` only wraps it."""

    def __init__(
        self,
        path: Path | Database,
        lease_fraction: float,
        lease_ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        budgeted_max_parallel: int | None = None,
    ) -> None:
        self.wall_clock = wall_clock  # which budget period it is
        self.budgeted_max_parallel = budgeted_max_parallel
        self.store = Store(path)
        self.sessions = Sessions(wall_clock)
        self.quota = QuotaBook(
            lease_fraction, lease_ttl_s, self.store.spent, self.store.add_spend, clock
        )
        self._ops = self._handlers()

    def call(self, op: Op, payload: dict[str, Any]) -> dict[str, Any]:
        """Run one operation; `{"ok": result}` or `{"error": AccessError fields}`."""
        handler = self._ops.get(op)
        if handler is None:
            return {"error": AccessError(str(op), status=400, code="unknown_operation").to_dict()}
        try:
            return {"ok": handler(**payload)}
        except AccessError as exc:
            return {"error": exc.to_dict()}
        except DatabaseUnavailable:
            unavailable = AccessError(
                "the access database is unreachable; try again shortly",
                status=503,
                code="database_unavailable",
            )
            return {"error": unavailable.to_dict()}

    def _handlers(self) -> dict[Op, Callable[..., Any]]:
        return {
            Op.LOOKUP: self.op_lookup,
            Op.SYNC: self.op_sync,
            Op.RENEW: self.op_renew,
            Op.CREATE: self.op_create,
            Op.LIST: self.op_list,
            Op.GET: self.op_get,
            Op.UPDATE: self.op_update,
            Op.REVOKE: self.op_revoke,
            Op.SESSION_CREATE: self.op_session_create,
            Op.SESSION_CHECK: self.op_session_check,
            Op.SESSION_END: self.op_session_end,
        }

    # ---- what replicas call -----------------------------------------------------------

    def op_lookup(self, key_hash: str) -> dict[str, Any] | None:
        key = self.store.find_key(key_hash)
        if key is None:
            return None
        team = self.store.principals.get(key.team) if key.team else None
        return {"key": key.model_dump(), "team": team.model_dump() if team else None}

    def op_sync(
        self,
        replica: str,
        since: int,
        returns: list[dict[str, Any]],
        spent: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Settle leases a replica gives back, store the spend it reports on the leases it
        keeps; every key and team changed since `since`."""
        for item in returns:
            self.quota.settle(item["entity"], replica, item["consumed"], self._period(item))
        for item in spent or ():
            self.quota.report_spend(item["entity"], replica, item["usd"], self._period(item))
        self.quota.reclaim(self.quota.clock())
        changed = [p.model_dump() for p in self.store.changed_since(since)]
        return {"version": self.store.version, "changed": changed}

    def op_renew(self, replica: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        grants = []
        for item in items:
            principal = self._principal_of(item["entity"])
            if principal is None:
                raise AccessError("Unknown key or team.", status=401, code="invalid_api_key")
            limits = limits_of(principal, self.wall_clock(), self.budgeted_max_parallel)
            grant = self.quota.renew(
                item["entity"], replica, limits, item["consumed"], item["want"]
            )
            grants.append(grant.to_dict())
        return grants

    def _period(self, item: dict[str, Any]) -> str:
        principal = self._principal_of(item["entity"])
        return limits_of(principal, self.wall_clock()).period if principal else "total"

    def _principal_of(self, entity: str) -> Principal | None:
        return self.store.principals.get(entity.partition(":")[2])

    # ---- the admin API ----------------------------------------------------------------

    def op_create(self, kind: str, spec: dict[str, Any], master: bool) -> dict[str, Any]:
        self._kind(kind)
        if kind == "team":
            team = _validate(TeamSpec, spec)
            existing = self.store.principals.get(team.name)  # type: ignore[attr-defined]
            if existing is not None and existing.kind != "team":
                # Ids share one namespace: a team named like a key would replace the key's
                # record (a revoked key came back to life as that team).
                raise AccessError(
                    f"{existing.id!r} is a key's id; choose another name.",
                    status=409,
                    code="name_taken",
                )
            if existing is not None and existing.revoked_at is None:
                raise AccessError(
                    f"Team {existing.id!r} already exists.", status=409, code="team_exists"
                )
            record = Principal(
                id=team.name,  # type: ignore[attr-defined]
                kind="team",
                created_at=time.time(),
                **team.model_dump(),
            )
            return {"record": self.store.put(record).model_dump()}
        key = _validate(KeySpec, spec)
        self._check_team(key.team)  # type: ignore[attr-defined]
        if key.role == "admin" and not master:  # type: ignore[attr-defined]
            raise AccessError(
                "Only the master key creates admin keys.", status=403, code="admin_required"
            )
        secret = new_secret()
        record = Principal(
            id=KEY_ID_PREFIX + secrets.token_hex(8),
            kind="key",
            prefix=secret[:PREFIX_CHARS],
            created_at=time.time(),
            **key.model_dump(),
        )
        stored = self.store.put(record, hash_secret(secret))
        return {"record": stored.model_dump(), "key": secret}

    def op_list(self, kind: str) -> list[dict[str, Any]]:
        self._kind(kind)
        found = [p for p in self.store.principals.values() if p.kind == kind]
        return [p.model_dump() for p in sorted(found, key=lambda p: p.created_at)]

    def op_get(self, kind: str, id: str) -> dict[str, Any]:
        principal = self._find(kind, id)
        limits = limits_of(principal, self.wall_clock())
        spent = self.store.spent(principal.entity, limits.period)
        usage: dict[str, Any] = {
            "period": limits.period,
            "spend_usd": spent,
            "replicas_holding_leases": self.quota.holders(principal.entity),
            "replicas_seen": self.quota.seen(principal.entity),
        }
        if principal.budget_usd is not None:
            usage["budget_remaining_usd"] = max(0.0, principal.budget_usd - spent)
        return {**principal.model_dump(), "usage": usage}

    def op_update(self, kind: str, id: str, patch: dict[str, Any], master: bool) -> dict[str, Any]:
        principal = self._find(kind, id)
        if principal.revoked_at is not None:
            raise AccessError(f"{kind.title()} {id!r} is revoked.", status=409, code="revoked")
        changes = _validate(KeyPatch if kind == "key" else TeamPatch, patch)
        update = changes.model_dump(exclude_unset=True)
        for name in ("budget_period", "role"):
            if update.get(name, "") is None:
                del update[name]
        if kind == "key":
            if "team" in update:
                self._check_team(update["team"])
            if update.get("role") == "admin" and not master:
                raise AccessError(
                    "Only the master key makes admins.", status=403, code="admin_required"
                )
        merged = principal.model_copy(update=update)
        spec = KeySpec if kind == "key" else TeamSpec
        _validate(spec, merged.model_dump(include=set(spec.model_fields)))
        return self.store.put(merged).model_dump()

    def op_session_create(self, principal: str, ttl_s: float) -> dict[str, Any]:
        """A console session for `principal` (the caller checked it signed in as an admin)."""
        return self.sessions.create(principal, ttl_s)

    def op_session_check(self, token_hash: str) -> dict[str, Any] | None:
        return self.sessions.check(token_hash)

    def op_session_end(self, token_hash: str) -> bool:
        return self.sessions.end(token_hash)

    def op_revoke(self, kind: str, id: str) -> dict[str, Any]:
        principal = self._find(kind, id)
        if kind == "team":
            members = [
                p.id
                for p in self.store.principals.values()
                if p.kind == "key" and p.team == id and p.revoked_at is None
            ]
            if members:
                raise AccessError(
                    f"Team {id!r} still has keys: {', '.join(members)}.",
                    status=409,
                    code="team_in_use",
                )
        if principal.revoked_at is None:
            principal = self.store.put(principal.model_copy(update={"revoked_at": time.time()}))
        self.sessions.end_for(principal.id)
        return {"id": principal.id, "object": kind, "deleted": True}

    def _kind(self, kind: str) -> None:
        if kind not in KINDS:
            raise AccessError(f"kind must be one of {KINDS}", status=400, code="invalid_value")

    def _find(self, kind: str, id: str) -> Principal:
        self._kind(kind)
        principal = self.store.principals.get(id)
        if principal is None or principal.kind != kind:
            raise AccessError(f"No {kind} with id {id!r}.", status=404, code=f"{kind}_not_found")
        return principal

    def _check_team(self, team: str | None) -> None:
        if team is None:
            return
        found = self.store.principals.get(team)
        if found is None or found.kind != "team" or found.revoked_at is not None:
            raise AccessError(
                f"No team {team!r}; create it first (POST /v1/gateway/teams).",
                status=400,
                code="team_not_found",
                param="team",
            )

    def close(self) -> None:
        self.store.close()
