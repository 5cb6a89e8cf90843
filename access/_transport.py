"""How an ingress replica reaches the shared access state, and who it says a caller is."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from access._leases import Account, Need
from access._ops import Op
from access._records import Principal
from access._state import AccessState


class Transport(ABC):
    """Carries one operation to the state owner; raises on any failure to reach it."""

    @abstractmethod
    async def call(self, op: Op, payload: dict[str, Any]) -> dict[str, Any]: ...


class LocalTransport(Transport):
    """The state in this process: tests, and a single-process gateway."""

    def __init__(self, state: AccessState) -> None:
        self.state = state

    async def call(self, op: Op, payload: dict[str, Any]) -> dict[str, Any]:
        return self.state.call(op, payload)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: the master key, or a key (and its team)."""

    key: Principal | None = None
    team: Principal | None = None

    @property
    def master(self) -> bool:
        return self.key is None

    @property
    def admin(self) -> bool:
        return self.key is None or self.key.role == "admin"


MASTER = Caller()


@dataclass(slots=True)
class Ticket:
    """One admitted request: what it reserved, from which accounts."""

    accounts: tuple[Account, ...] = ()
    need: Need = field(default_factory=Need)
    held_usd: tuple[float, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)
    done: bool = False
