"""The `routes:` and `tasks:` sections of the gateway config, owned by the router."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from router._policies import policy_exists


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BalanceWeights(_Strict):
    """Weights of the `balanced` policy's score (each term normalised to 0..1 first)."""

    cost: float = Field(default=1.0, ge=0, description="Weight of estimated cost.")
    latency: float = Field(default=1.0, ge=0, description="Weight of predicted latency.")
    quality: float = Field(default=1.0, ge=0, description="Weight of (1 - quality for the task).")


class RouteRetrieval(_Strict):
    """Passages from vector stores added to every request of a route, for clients that
    cannot send the Responses API's `file_search` tool (chat, completions, Messages)."""

    vector_store_ids: tuple[str, ...] = Field(
        min_length=1, description="Vector stores searched with the request's last user turn."
    )
    max_num_results: int = Field(default=4, ge=1, le=50, description="Passages added at most.")
    score_threshold: float = Field(
        default=0.0, ge=0, le=1, description="Passages scoring below it are left out."
    )


class RouteConfig(_Strict):
    """One route: a named set of candidate backends and how to pick among them."""

    policy: str = Field(
        default="first_available",
        description=(
            "Name of a registered policy (`first_available`, `ordered`, `cheapest`, `fastest`, "
            "`balanced`, `weighted`) or an import path `package.module:ClassName`."
        ),
    )
    candidates: tuple[str, ...] = Field(
        min_length=1, description="Backend names the policy chooses from, in preference order."
    )
    fallbacks: tuple[str, ...] = Field(
        default=(),
        description=(
            "Backend names tried in order after the chosen candidate fails before any output "
            "reached the client. Candidates not chosen are not retried unless listed here."
        ),
    )
    balance: BalanceWeights = Field(
        default_factory=BalanceWeights, description="Score weights for `balanced`."
    )
    weights: dict[str, float] = Field(
        default_factory=dict,
        description="Traffic share per candidate for `weighted` (missing candidates get 0).",
    )
    on_infeasible: Literal["fastest", "reject"] = Field(
        default="fastest",
        description="When no candidate meets the latency budget: serve the fastest otherwise "
        "eligible one (and say so in `x-gateway-budget-infeasible`), or reject with 429.",
    )
    latency_quantile: Literal["mean", "p90"] = Field(
        default="p90", description="Which latency statistic is compared with the budget."
    )
    default_output_tokens: int = Field(
        default=256, ge=1, description="Expected output when neither max_tokens nor history say."
    )
    description: str = Field(default="", description="Free text shown in `GET /v1/models`.")
    max_attempts: int | None = Field(
        default=None,
        ge=1,
        description="Most backend calls one request may make, fallbacks and retries together "
        "(unset: each attempt's backend `retry.max_retries` bounds it).",
    )
    first_token_timeout_s: float | None = Field(
        default=None, gt=0, description="Overrides the backends' `timeouts.first_token_s`."
    )
    total_timeout_s: float | None = Field(
        default=None, gt=0, description="Overrides the backends' `timeouts.total_s`."
    )
    template: str | None = Field(
        default=None,
        description="Prompt template (`name` or `name@version`) applied to this route's "
        "requests unless a request names its own (`routing.template`).",
    )
    resume_streams: bool = Field(
        default=True,
        description="A stream whose backend breaks after output reached the client is "
        "continued by the next backend of the decision (the fallbacks) from the text already "
        "sent, as one stream (docs/resilience.md); false: it ends with an error event.",
    )
    retrieval: RouteRetrieval | None = Field(
        default=None,
        description="Search these vector stores with each request's last user turn and add "
        "the passages to it (a system message) before it goes to the backend.",
    )

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, name: str) -> str:
        if not policy_exists(name):
            raise ValueError(f"unknown policy {name!r}")
        return name

    @model_validator(mode="after")
    def _consistent(self) -> RouteConfig:
        for field in ("candidates", "fallbacks"):
            names: tuple[str, ...] = getattr(self, field)
            seen: set[str] = set()
            for name in names:
                if name in seen:
                    raise ValueError(f"{field} lists backend {name!r} twice")
                seen.add(name)
        stray = set(self.weights) - set(self.candidates)
        if stray:
            raise ValueError(f"weights name non-candidates: {', '.join(sorted(stray))}")
        if any(weight < 0 for weight in self.weights.values()):
            raise ValueError("weights must not be negative")
        if self.policy == "weighted" and not any(self.weights.values()):
            raise ValueError("policy 'weighted' needs positive `weights` for its candidates")
        return self


class TaskConfig(_Strict):
    """One task the router can recognise in a prompt."""

    examples: tuple[str, ...] = Field(
        default=(), description="Example prompts; embedded at startup for the classifier."
    )
    description: str = Field(
        default="",
        description="What the task covers, as comma-separated phrases (`programming, source "
        "code, bugs, SQL`): each phrase is one more prototype for the classifier. Words "
        "people use for the task help most where three examples cannot cover it.",
    )
    keywords: tuple[str, ...] = Field(
        default=(),
        description="Case-insensitive regular expressions; a match decides the task at once.",
    )
    min_quality: float = Field(
        default=0.0, ge=0, le=1, description="Backends below this quality for the task are skipped."
    )


class RoutingConfig(_Strict):
    """Routes, tasks and the default route; backend names are checked against the backends
    section by the composing config, since the router does not own backends."""

    routes: dict[str, RouteConfig] = Field(
        default_factory=dict,
        description="Route name -> route. A request whose `model` is a route name is routed.",
    )
    default_route: str | None = Field(
        default=None,
        description="Route used when a request omits `model`. Unknown model names still get 404.",
    )
    tasks: dict[str, TaskConfig] = Field(
        default_factory=dict, description="Task name -> how to recognise it."
    )
    default_task: str = Field(default="chat", description="Task when nothing else decides.")
    task_threshold: float = Field(
        default=0.05,
        ge=-1,
        le=1,
        description="Least score (cosine similarity, after centring, to the task's centroid "
        "and nearest prototypes) for the classifier to name a task; below it, `default_task`.",
    )

    task_learning: int = Field(
        default=0,
        ge=0,
        le=10_000,
        description="Learn from labelled traffic: a routed request whose task the client "
        "states (`routing.task`) becomes a prototype of that task, up to this many per task "
        "(newest kept; 0: off). Each ingress replica learns from what it serves, in memory.",
    )

    @model_validator(mode="after")
    def _default_route_exists(self) -> RoutingConfig:
        if self.default_route is not None and self.default_route not in self.routes:
            raise ValueError(f"default_route {self.default_route!r} is not a route")
        return self

    def unknown_backend_references(self, backend_names: set[str]) -> list[tuple[str, str]]:
        """(field path, name) for every route entry that names no backend."""
        problems: list[tuple[str, str]] = []
        for route_name, route in self.routes.items():
            for field in ("candidates", "fallbacks"):
                for index, name in enumerate(getattr(route, field)):
                    if name not in backend_names:
                        problems.append((f"routes.{route_name}.{field}.{index}", name))
        return problems
