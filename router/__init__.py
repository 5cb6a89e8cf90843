"""Pure routing logic: which backend serves a request, and why. No Ray, no HTTP."""

from router._config import (
    BalanceWeights,
    RouteConfig,
    RouteRetrieval,
    RoutingConfig,
    TaskConfig,
)
from router._decision import (
    Availability,
    BudgetInfeasible,
    Decision,
    Evaluation,
    ModelNotFound,
    NoBackendAvailable,
    Reason,
    RequestSummary,
    RoutingError,
    Target,
)
from router._embedding import MiniLMEmbedder
from router._estimate import Estimate
from router._hints import HintError, RoutingHints, parse_hints
from router._policies import (
    Balanced,
    Candidate,
    Cheapest,
    Fastest,
    FirstAvailable,
    Ordered,
    Policy,
    PolicyOptions,
    Weighted,
    available_policies,
    policy_class,
    register_policy,
)
from router._profile import BackendProfile, TokenCounter, approximate_tokens
from router._resilience import (
    BreakerSettings,
    CircuitBreaker,
    CircuitState,
    RetrySettings,
    retry_delay,
)
from router._router import Router
from router._stats import BackendStats, LatencyPrior, LatencySnapshot
from router._tasks import Embedder, TaskClassifier, TaskDecision

__all__ = [
    "Availability",
    "BackendProfile",
    "BackendStats",
    "BalanceWeights",
    "Balanced",
    "BreakerSettings",
    "BudgetInfeasible",
    "Candidate",
    "Cheapest",
    "CircuitBreaker",
    "CircuitState",
    "Decision",
    "Embedder",
    "Estimate",
    "Evaluation",
    "Fastest",
    "FirstAvailable",
    "HintError",
    "LatencyPrior",
    "LatencySnapshot",
    "MiniLMEmbedder",
    "ModelNotFound",
    "NoBackendAvailable",
    "Ordered",
    "Policy",
    "PolicyOptions",
    "Reason",
    "RequestSummary",
    "RetrySettings",
    "RouteConfig",
    "RouteRetrieval",
    "Router",
    "RoutingConfig",
    "RoutingError",
    "RoutingHints",
    "Target",
    "TaskClassifier",
    "TaskConfig",
    "TaskDecision",
    "TokenCounter",
    "Weighted",
    "approximate_tokens",
    "available_policies",
    "parse_hints",
    "policy_class",
    "register_policy",
    "retry_delay",
]
