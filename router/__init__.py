"""Pure routing logic: which backend serves a request. No Ray, no HTTP."""

from router._config import RouteConfig, RoutingConfig
from router._policies import (
    Candidate,
    FirstAvailable,
    Ordered,
    Policy,
    available_policies,
    policy_class,
    register_policy,
)
from router._router import (
    Availability,
    Decision,
    ModelNotFound,
    NoBackendAvailable,
    Router,
    RoutingError,
)

__all__ = [
    "Availability",
    "Candidate",
    "Decision",
    "FirstAvailable",
    "ModelNotFound",
    "NoBackendAvailable",
    "Ordered",
    "Policy",
    "RouteConfig",
    "Router",
    "RoutingConfig",
    "RoutingError",
    "available_policies",
    "policy_class",
    "register_policy",
]
