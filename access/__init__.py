"""Who may call the gateway and how much: virtual keys and teams, model allow-lists, and
per-minute, parallel and budget limits that hold across every ingress replica (leases from
one shared state owner). No HTTP and no Ray here: `gateway` adapts both."""

from access._client import AccessClient
from access._config import AuthConfig
from access._errors import AccessError
from access._leases import Account, Need
from access._ops import Op
from access._quota import WINDOW_S, Grant, Limits, QuotaBook, lease_size, overshoot_bound
from access._records import KeySpec, Principal, TeamSpec, hash_secret, model_allowed
from access._sessions import SessionClient
from access._state import AccessState
from access._transport import MASTER, Caller, LocalTransport, Ticket, Transport

__all__ = [
    "MASTER",
    "WINDOW_S",
    "AccessClient",
    "AccessError",
    "AccessState",
    "Account",
    "AuthConfig",
    "Caller",
    "Grant",
    "KeySpec",
    "Limits",
    "LocalTransport",
    "Need",
    "Op",
    "Principal",
    "QuotaBook",
    "SessionClient",
    "TeamSpec",
    "Ticket",
    "Transport",
    "hash_secret",
    "lease_size",
    "model_allowed",
    "overshoot_bound",
]
