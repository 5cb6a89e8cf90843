"""A replica's side of the lease arithmetic (see `access._quota`): one `Account` per key or
team, admitting requests against the lease it holds. Plain arithmetic, no I/O, so the
property tests drive it directly."""

from __future__ import annotations

from dataclasses import dataclass, field

from access._quota import DIMS, Dim, Grant

# A request that costs nothing (or has no estimate) still needs some budget left.
MIN_USD = 1e-12


@dataclass(slots=True)
class Need:
    """What one request takes from a lease: `usd` is its worst case, reserved in full
    before it runs (a budget is a cap: a request that could cost more than is left waits
    for nothing, it is refused)."""

    tokens: float = 0.0
    usd: float = 0.0

    def amounts(self, in_flight: int, reserved_usd: float = 0.0) -> dict[Dim, float]:
        """As a renewal's `want`: parallel slots are a total, not an increment, and so is
        USD (what requests in flight hold must be covered by the next lease too)."""
        return {
            "requests": 1.0,
            "tokens": self.tokens,
            "usd": reserved_usd + max(self.usd, MIN_USD),
            "parallel": float(in_flight + 1),
        }


@dataclass(slots=True)
class Account:
    """One entity's lease on this replica."""

    entity: str
    granted: dict[Dim, float | None] = field(default_factory=dict)  # None: no limit
    consumed: dict[Dim, float] = field(default_factory=lambda: dict.fromkeys(DIMS, 0.0))
    in_flight: int = 0
    reserved_usd: float = 0.0  # estimates of requests in flight, held against the lease
    expires: float = 0.0  # no lease until the first renewal
    granted_at: float = 0.0
    open_until: float = 0.0  # fail-open: admit without a lease until then
    blocked_until: float = 0.0
    blocked: Grant | None = None
    last: Grant | None = None

    def fits(self, need: Need, now: float) -> bool:
        if now < self.open_until:
            return True
        if now >= self.expires or not self.granted:
            return False
        for dim, amount in need.amounts(0).items():
            granted = self.granted.get(dim, 0.0)
            if granted is None:
                continue
            if dim == "parallel":
                if self.in_flight + 1 > granted:
                    return False
            elif dim == "usd":
                if self.consumed[dim] + self.reserved_usd + amount > granted:
                    return False
            elif self.consumed[dim] + amount > granted:
                return False
        return True

    def take(self, need: Need) -> float:
        """Admit a request; returns the USD it holds until it ends: its worst case, which
        `fits` checked the lease covers (without a lease, fail-open: at most what is left)."""
        self.consumed["requests"] += 1
        self.consumed["tokens"] += need.tokens
        self.in_flight += 1
        granted = self.granted.get("usd")
        left = need.usd if granted is None else granted - self.consumed["usd"] - self.reserved_usd
        held = max(0.0, min(need.usd, left))
        self.reserved_usd += held
        return held

    def release(self, tokens_over: float, usd: float, held_usd: float) -> None:
        """A request this account admitted is over: its token estimate is corrected by what
        it really used (positive: more than reserved), its actual cost is spent, its slot
        and held USD freed."""
        self.consumed["tokens"] += tokens_over
        self.consumed["usd"] += usd
        self.reserved_usd = max(0.0, self.reserved_usd - held_usd)
        self.in_flight = max(0, self.in_flight - 1)

    def settlement(self) -> dict[Dim, float]:
        """What the current lease used, to report on renewal; starts the next one at zero."""
        used = dict(self.consumed)
        used["parallel"] = float(self.in_flight)
        self.consumed = dict.fromkeys(DIMS, 0.0)
        self.granted = {}  # nothing fits until the next lease arrives: it is being settled
        return used

    def spend_report(self) -> float:
        """USD used so far under the current lease, handed over to be stored now (the lease
        shrinks by as much, as the owner's does)."""
        usd = self.consumed["usd"]
        self.consumed["usd"] = 0.0
        granted = self.granted.get("usd")
        if granted is not None:
            self.granted["usd"] = granted - min(usd, granted)
        return usd

    def apply(self, grant: Grant, now: float) -> None:
        self.granted = dict(grant.granted)
        self.expires = now + grant.expires_in
        self.granted_at = now
        self.last = grant
        if grant.short is not None and grant.exhausted:
            self.blocked = grant
            wait = grant.retry_after_s if grant.retry_after_s is not None else grant.expires_in
            self.blocked_until = now + min(wait, grant.expires_in)

    def remaining(self, dim: Dim) -> float | None:
        """What this replica believes is left of a per-minute limit."""
        if self.last is None or self.granted.get(dim) is None:
            return None
        left = self.last.remaining.get(dim, 0.0)
        return max(0.0, left + (self.granted[dim] or 0.0) - self.consumed[dim])

    def reset_s(self, dim: Dim, now: float) -> float | None:
        if self.last is None or dim not in self.last.reset_s:
            return None
        return max(0.0, self.last.reset_s[dim] - (now - self.granted_at))

    @property
    def idle(self) -> bool:
        return self.in_flight == 0
