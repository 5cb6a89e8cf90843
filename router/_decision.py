"""What the router decides with and answers: a backend's live availability, a request's
summary, each candidate's evaluation, the decision, and the errors it raises."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from router._estimate import Estimate
from router._hints import RoutingHints
from router._policies import Candidate, Policy


class RoutingError(Exception):
    """Base of the errors the router reports; the gateway maps each to an HTTP status."""


class ModelNotFound(RoutingError):
    def __init__(self, model: str | None, known: list[str]) -> None:
        self.model = model
        self.known = known
        if model is None:
            message = "no model given and no default_route is configured"
        else:
            message = f"the model {model!r} does not exist; available: {', '.join(known)}"
        super().__init__(message)


class NoBackendAvailable(RoutingError):
    def __init__(
        self, target: str, reasons: Mapping[str, str], retry_after_s: float | None = None
    ) -> None:
        self.target = target
        self.reasons = dict(reasons)
        self.retry_after_s = retry_after_s  # when the first of them may be back, if known
        detail = "; ".join(f"{name}: {why}" for name, why in self.reasons.items())
        super().__init__(f"no backend available for {target!r} ({detail})")


class BudgetInfeasible(RoutingError):
    """No candidate meets the latency budget and the route says `on_infeasible: reject`."""

    def __init__(self, route: str, budget_ms: float, fastest_ms: float) -> None:
        self.route = route
        super().__init__(
            f"no backend of route {route!r} is predicted to answer within {budget_ms:.0f} ms "
            f"(fastest: {fastest_ms:.0f} ms)"
        )


@dataclass(frozen=True, slots=True)
class Availability:
    """Live state of one backend, as the gateway sees it.

    `available=False` with `definite=False` means a probe failed: the backend is skipped
    while others can serve, but still tried when nothing else can (a probe can be wrong,
    e.g. while a replica starts). `definite=True` (missing key, disabled) is never tried.
    """

    available: bool = True
    reason: str = ""
    definite: bool = False
    retry_after_s: float | None = None  # e.g. until an open circuit lets a probe through
    # No replica is running (scaled to zero, or all starting): the expected wait until one is.
    cold_start_ms: float = 0.0

    @property
    def usable_as_last_resort(self) -> bool:
        return self.available or not self.definite


class Target(StrEnum):
    """What a request's `model` names."""

    ROUTE = "route"
    BACKEND = "backend"


class Reason(StrEnum):
    """Why a candidate is not eligible: what code branches on (the text is for people)."""

    UNAVAILABLE = "unavailable"
    CONTEXT_WINDOW = "context_window"
    TASK_NOT_SERVED = "task_not_served"
    QUALITY = "quality"
    COST = "cost"
    LATENCY_BUDGET = "latency_budget"
    ENDPOINT_NOT_SERVED = "endpoint_not_served"


@dataclass(frozen=True, slots=True)
class RequestSummary:
    """What the router needs to know about a request."""

    prompt_text: str = ""
    max_tokens: int | None = None
    choices: int = 1  # completions billed: `n`, or `best_of` where larger
    output_cap: int | None = None  # the output limit a budgeted caller gets without max_tokens
    hints: RoutingHints = field(default_factory=RoutingHints)
    task: str = "chat"
    task_source: str = "default"  # "hint", "keyword", "classifier" or "default"
    task_similarity: float | None = None
    seed: int = 0
    endpoint: str = "chat/completions"  # or "completions", "embeddings"


@dataclass(slots=True)  # built per candidate per request: not frozen, for speed
class Evaluation:
    """One candidate as the router saw it."""

    backend: str
    eligible: bool
    reasons: tuple[str, ...]  # for people, one per code
    estimate: Estimate
    quality: float
    tokenizer: str
    codes: tuple[Reason, ...] = ()
    quality_source: str = "default"  # configured, measured (how), or the 0.5 default

    def only(self, *codes: Reason) -> bool:
        """Whether it is ineligible for these reasons and no other."""
        return bool(self.codes) and all(code in codes for code in self.codes)


@dataclass(frozen=True, slots=True)
class Decision:
    """The router's answer: what to try, in order, and why."""

    route: str | None  # None when the request named a backend directly
    policy: str | None
    chosen: str
    attempts: tuple[str, ...]  # chosen first, then usable fallbacks
    skipped: Mapping[str, str] = field(default_factory=dict)  # backend -> why not eligible
    evaluations: tuple[Evaluation, ...] = ()
    task: str = "chat"
    task_source: str = "default"
    task_similarity: float | None = None
    budget_infeasible: bool = False
    scores: Mapping[str, float] = field(default_factory=dict)  # eligible backend -> score
    pinned: bool = False  # the caller pinned `chosen` (e.g. an experiment arm)
    # (backend, reason): the policy's choice could not meet the latency budget only for want
    # of capacity ("cold_start" or "queue"), so `chosen` serves in its place.
    spillover: tuple[str, str] | None = None

    @property
    def chosen_evaluation(self) -> Evaluation | None:
        return self.evaluation(self.chosen)

    def evaluation(self, backend: str) -> Evaluation | None:
        return next((e for e in self.evaluations if e.backend == backend), None)


def spillover_of(
    policy: Policy,
    evaluations: tuple[Evaluation, ...],
    eligible: list[Evaluation],
    chosen: str,
    request: RequestSummary,
) -> tuple[str, str] | None:
    """The backend the policy would have chosen had it had capacity, when that is not
    `chosen`: a candidate over the latency budget only because of its queue or cold start."""
    budget = request.hints.latency_budget_ms
    if budget is None:
        return None
    waiting = {
        e.backend: e
        for e in evaluations
        if e.only(Reason.LATENCY_BUDGET)
        and e.estimate.capacity_ms > 0
        and e.estimate.latency_ms - e.estimate.capacity_ms <= budget
    }
    if not waiting:
        return None
    pool = [
        Candidate(e.backend, e.estimate.cost_usd, e.estimate.latency_ms - e.estimate.capacity_ms,
                  e.quality)
        for e in [*eligible, *waiting.values()]
    ]  # fmt: skip
    preferred = policy.choose(pool, request.seed).name
    if preferred == chosen or preferred not in waiting:
        return None
    reason = "cold_start" if waiting[preferred].estimate.cold_start_ms > 0 else "queue"
    return preferred, reason
