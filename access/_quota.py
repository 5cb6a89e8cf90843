"""The lease arithmetic, both halves.

The state owner (`QuotaBook`) hands each ingress replica a *lease* per key or team: a slice of
what is left of each limit. A replica admits requests against its leases with no remote call
and comes back when one runs out, runs late, or a request needs more than is left
(`Account`). Renewing settles the old lease with what was really used.

Per-minute limits (requests, tokens) are sliding 60 s windows over grants: the owner never
grants more than `limit - (what grants of the last 60 s used)`. A grant is used after it is
made, so a 60 s window of *admissions* can also hold what replicas had left from grants made
just before it: at most one lease per replica. Hence the bound, for R replicas and a lease
size L = max(1, floor(limit x lease_fraction)):

    admitted in any 60 s  <=  limit + R x L                                  (requests)

Tokens are reserved at admission (an estimate) and settled from actual usage, so their bound
adds what estimates missed. Budgets work the same way in USD, per day, month or in total, and
parallel slots are a gauge (held slots never exceed the limit).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

WINDOW_S = 60.0
Dim = Literal["requests", "tokens", "usd", "parallel"]
WINDOWED: tuple[Dim, ...] = ("requests", "tokens")
DIMS: tuple[Dim, ...] = ("requests", "tokens", "usd", "parallel")


MAX_SEEN = 256  # replicas remembered per key or team
EXHAUSTED_USD = 1e-9  # a budget with less than this left is spent


def lease_size(limit: float, fraction: float, dim: Dim) -> float:
    if dim == "usd":
        return limit * fraction
    return float(max(1, math.floor(limit * fraction)))


def overshoot_bound(limit: int, fraction: float, replicas: int) -> int:
    """The documented worst case of a per-minute request limit across `replicas`."""
    return replicas * int(lease_size(limit, fraction, "requests"))


@dataclass(frozen=True, slots=True)
class Limits:
    """An entity's limits by dimension; a missing one is unlimited."""

    values: Mapping[Dim, float]
    period: str = "total"  # the budget's current period id (see `period_id`)


@dataclass(slots=True)
class _Lease:
    granted: dict[Dim, float]
    entries: dict[Dim, list[float]]  # window dims: the [time, amount] entry of this grant
    period: str
    expires: float


@dataclass(slots=True)
class Grant:
    """What a renewal gave one replica for one entity. `granted[dim]` is None when the
    entity has no limit there; `short` names a limit that could not cover the need."""

    granted: dict[Dim, float | None]
    expires_in: float
    short: Dim | None = None
    retry_after_s: float | None = None
    remaining: dict[Dim, float] = field(default_factory=dict)  # left after this grant
    reset_s: dict[Dim, float] = field(default_factory=dict)
    # Short because nothing is left (every request is refused until then), not because this
    # request's worst case is larger than what is left (a cheaper one may still go ahead).
    exhausted: bool = True
    left_usd: float | None = None  # the budget left when `short` is usd

    def to_dict(self) -> dict[str, Any]:
        return {
            "granted": self.granted,
            "expires_in": self.expires_in,
            "short": self.short,
            "retry_after_s": self.retry_after_s,
            "remaining": self.remaining,
            "reset_s": self.reset_s,
            "exhausted": self.exhausted,
            "left_usd": self.left_usd,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Grant:
        return cls(**data)


class QuotaBook:
    """The owner's side: every lease of every replica, and the windows they are counted in.
    `spent(entity, period)` and `add_spend(entity, period, usd)` persist the budget."""

    def __init__(
        self,
        lease_fraction: float,
        lease_ttl_s: float,
        spent: Callable[[str, str], float],
        add_spend: Callable[[str, str, float], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fraction = lease_fraction
        self.ttl = lease_ttl_s
        self.spent = spent
        self.add_spend = add_spend
        self.clock = clock
        self._windows: dict[tuple[str, Dim], deque[list[float]]] = {}
        self._leases: dict[tuple[str, str], _Lease] = {}  # (entity, replica) -> lease
        self._held: dict[tuple[str, Dim], float] = {}  # usd and parallel granted, unsettled
        self._seen: dict[str, set[str]] = {}  # entity -> replicas that took a lease on it

    def renew(
        self,
        entity: str,
        replica: str,
        limits: Limits,
        consumed: Mapping[Dim, float],
        want: Mapping[Dim, float],
    ) -> Grant:
        """Settle `replica`'s lease on `entity` with what it `consumed`, then grant a new one
        covering at least `want` where the limits allow."""
        now = self.clock()
        self.settle(entity, replica, consumed, limits.period)
        self.reclaim(now)
        grant = Grant(granted={}, expires_in=self.ttl)
        amounts: dict[Dim, float] = {}
        for dim in DIMS:
            limit = limits.values.get(dim)
            if limit is None:
                grant.granted[dim] = None
                continue
            need = float(want.get(dim, 0.0))
            available = self._available(entity, dim, limit, limits.period, now)
            size = lease_size(limit, self.fraction, dim)
            amount = min(max(need, size), available)
            if available <= 0 or amount < need:
                if grant.short is None and dim == "usd":
                    grant.exhausted = available <= EXHAUSTED_USD
                    grant.left_usd = max(0.0, available)
                grant.short = grant.short or dim
                wait = self._wait(entity, dim, limit, need, now)
                if wait is not None:
                    grant.retry_after_s = max(grant.retry_after_s or 0.0, wait)
            amounts[dim] = max(0.0, amount)
            grant.remaining[dim] = max(0.0, available - amounts[dim])
            reset = self._reset(entity, dim, now)
            if reset is not None:
                grant.reset_s[dim] = reset
        if grant.short is not None:
            # A refused request holds nothing new; requests already in flight keep their slots.
            held = {"parallel": max(0.0, float(want.get("parallel", 1.0)) - 1.0)}
            amounts = {dim: min(amounts[dim], held.get(dim, 0.0)) for dim in amounts}
        grant.granted.update(amounts)
        self._record(entity, replica, amounts, limits.period, now)
        return grant

    def settle(self, entity: str, replica: str, consumed: Mapping[Dim, float], period: str) -> None:
        """End `replica`'s lease on `entity`: windows keep what was used, the rest goes back;
        spend is added to the budget of the period the lease was taken in (`period` if the
        lease was already reclaimed: use reported late is still counted)."""
        lease = self._leases.pop((entity, replica), None)
        if lease is None:
            usd = consumed.get("usd", 0.0)
            if usd:
                self.add_spend(entity, period, usd)
            return
        for dim, entry in lease.entries.items():
            entry[1] = max(0.0, float(consumed.get(dim, 0.0)))
        for dim in ("usd", "parallel"):
            if dim in lease.granted:
                self._held[(entity, dim)] -= lease.granted[dim]
        usd = consumed.get("usd", 0.0)
        if usd:
            self.add_spend(entity, lease.period, usd)

    def holders(self, entity: str) -> int:
        """How many replicas hold a lease on `entity` now."""
        return sum(1 for held, _ in self._leases if held == entity)

    def seen(self, entity: str) -> int:
        """How many replicas have taken a lease on `entity` since the state started."""
        return len(self._seen.get(entity, ()))

    def report_spend(self, entity: str, replica: str, usd: float, period: str) -> None:
        """Spend a replica reports while keeping its lease: it moves from the lease's hold to
        the stored spend at once, so a gateway killed later loses none of it."""
        lease = self._leases.get((entity, replica))
        if lease is not None and "usd" in lease.granted:
            moved = min(usd, lease.granted["usd"])
            lease.granted["usd"] -= moved
            self._held[(entity, "usd")] -= moved
            period = lease.period
        self.add_spend(entity, period, usd)

    def reclaim(self, now: float) -> None:
        """Leases of replicas that stopped renewing (crashed, cut off) go back after a grace of
        two lease lifetimes; their window entries stay counted in full."""
        late = [key for key, lease in self._leases.items() if lease.expires + 2 * self.ttl < now]
        for entity, replica in late:
            lease = self._leases[(entity, replica)]
            consumed = {dim: lease.granted.get(dim, 0.0) for dim in WINDOWED}
            self.settle(entity, replica, consumed, lease.period)

    def _record(
        self, entity: str, replica: str, amounts: Mapping[Dim, float], period: str, now: float
    ) -> None:
        entries: dict[Dim, list[float]] = {}
        for dim, amount in amounts.items():
            if dim in WINDOWED:
                entry = [now, amount]
                self._windows.setdefault((entity, dim), deque()).append(entry)
                entries[dim] = entry
            else:
                self._held[(entity, dim)] = self._held.get((entity, dim), 0.0) + amount
        self._leases[(entity, replica)] = _Lease(dict(amounts), entries, period, now + self.ttl)
        seen = self._seen.setdefault(entity, set())
        if len(seen) < MAX_SEEN:
            seen.add(replica)

    def _window(self, entity: str, dim: Dim, now: float) -> deque[list[float]]:
        window = self._windows.setdefault((entity, dim), deque())
        while window and window[0][0] <= now - WINDOW_S:
            window.popleft()
        return window

    def _available(self, entity: str, dim: Dim, limit: float, period: str, now: float) -> float:
        held = self._held.get((entity, dim), 0.0)
        if dim in WINDOWED:
            return limit - sum(amount for _, amount in self._window(entity, dim, now))
        if dim == "usd":
            return limit - self.spent(entity, period) - held
        return limit - held

    def _wait(self, entity: str, dim: Dim, limit: float, need: float, now: float) -> float | None:
        """Seconds until `need` fits in the window again; None for budgets."""
        if dim == "usd":
            return None
        if dim == "parallel":
            return 1.0
        window = self._window(entity, dim, now)
        used = sum(amount for _, amount in window)
        for at, amount in window:
            used -= amount
            if used <= limit - need:
                return max(0.0, at + WINDOW_S - now)
        return WINDOW_S

    def _reset(self, entity: str, dim: Dim, now: float) -> float | None:
        if dim not in WINDOWED:
            return None
        window = self._window(entity, dim, now)
        return max(0.0, window[-1][0] + WINDOW_S - now) if window else 0.0


def period_id(period: str, now: float | None = None) -> str:
    """The budget period a moment falls in (UTC): `day:2026-11-26`, `month:2026-11`, `total`."""
    if period == "total":
        return "total"
    stamp = time.gmtime(time.time() if now is None else now)
    if period == "day":
        return time.strftime("day:%Y-%m-%d", stamp)
    return time.strftime("month:%Y-%m", stamp)
