"""Resolve a request's `model` to an ordered list of backends to try, and say why."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from router._config import RouteConfig, RoutingConfig
from router._decision import (
    Availability,
    BudgetInfeasible,
    Decision,
    Evaluation,
    ModelNotFound,
    NoBackendAvailable,
    Reason,
    RequestSummary,
    Target,
    spillover_of,
)
from router._estimate import Estimate, estimate
from router._policies import Candidate, Policy, PolicyOptions, policy_class
from router._profile import BackendProfile
from router._stats import BackendStats, LatencySnapshot

NO_REQUEST = RequestSummary()


def _options(route: RouteConfig) -> PolicyOptions:
    return PolicyOptions(
        balance_cost=route.balance.cost,
        balance_latency=route.balance.latency,
        balance_quality=route.balance.quality,
        weights=dict(route.weights),
    )


class Router:
    """Pure decisions over a config, backend profiles, availability and latency stats."""

    def __init__(
        self,
        config: RoutingConfig,
        profiles: Mapping[str, BackendProfile],
        models: Mapping[str, str] | None = None,
    ) -> None:
        """`models` maps backend name -> the model id it serves, which also resolves."""
        self._config = config
        self._profiles = dict(profiles)
        models = models or {}
        self._aliases = {
            model: name
            for name, model in models.items()
            if model not in self._profiles and model not in config.routes
        }
        self._priors: dict[str, LatencySnapshot] = {}
        self._policies: dict[str, Policy] = {
            name: policy_class(route.policy)(_options(route))
            for name, route in config.routes.items()
        }

    def update_profile(self, name: str, **changes: Any) -> None:
        """Replace some of a backend's facts (e.g. its measured quality) for later decisions."""
        self._profiles[name] = replace(self._profiles[name], **changes)

    def count_tokens(self, text: str) -> dict[str, int]:
        """`text`'s length by each backend's token counter (also loads lazy tokenizers)."""
        return {name: profile.count_tokens(text) for name, profile in self._profiles.items()}

    def resolve_target(self, model: str | None) -> tuple[Target, str]:
        """(what it names, name) for a request's `model`, or raise ModelNotFound."""
        if model is None or model == "":
            if self._config.default_route is None:
                raise ModelNotFound(None, self._known())
            return Target.ROUTE, self._config.default_route
        if model in self._config.routes:
            return Target.ROUTE, model
        if model in self._profiles:
            return Target.BACKEND, model
        if model in self._aliases:
            return Target.BACKEND, self._aliases[model]
        raise ModelNotFound(model, self._known())

    def decide(
        self,
        model: str | None,
        availability: Mapping[str, Availability],
        request: RequestSummary = NO_REQUEST,
        stats: Mapping[str, LatencySnapshot] | None = None,
        pinned: str | None = None,
    ) -> Decision:
        """`pinned`: a backend that serves a routed request in place of the policy's choice
        (an experiment arm), unless it is down for good or too small for the request; the
        route's fallbacks still follow it."""
        kind, name = self.resolve_target(model)
        return self.decide_target(kind, name, availability, request, stats, pinned)

    def decide_target(
        self,
        kind: Target,
        name: str,
        availability: Mapping[str, Availability],
        request: RequestSummary = NO_REQUEST,
        stats: Mapping[str, LatencySnapshot] | None = None,
        pinned: str | None = None,
    ) -> Decision:
        """`decide` for a target `resolve_target` already found (`kind`: route or backend)."""
        if kind == Target.BACKEND:
            return self._direct(name, availability, request, stats or {})

        route = self._config.routes[name]
        up = Availability()
        if pinned is not None:
            decision = self._pinned(name, route, pinned, availability, request, stats or {})
            if decision is not None:
                return decision
        evaluations = self._evaluate(route.candidates, route, availability, request, stats or {})
        eligible = [e for e in evaluations if e.eligible]
        infeasible = False
        if not eligible:
            try:
                eligible, infeasible = self._relax(name, route, evaluations, availability, request)
            except NoBackendAvailable:
                fallbacks = [f for f in route.fallbacks if availability.get(f, up).available]
                if not fallbacks:
                    raise
                # Every candidate is down: the route's fallbacks serve, in their order.
                return Decision(
                    route=name,
                    policy=route.policy,
                    chosen=fallbacks[0],
                    attempts=tuple(fallbacks),
                    skipped={e.backend: "; ".join(e.reasons) for e in evaluations},
                    evaluations=evaluations,
                    task=request.task,
                    task_source=request.task_source,
                    task_similarity=request.task_similarity,
                )
        policy = self._policies[name]
        candidates = [
            Candidate(e.backend, e.estimate.cost_usd, e.estimate.latency_ms, e.quality)
            for e in eligible
        ]
        scores = dict(zip([c.name for c in candidates], policy.scores(candidates), strict=True))
        chosen = policy.choose(candidates, request.seed).name
        decision = self._routed(
            name, route, chosen, evaluations, availability, request,
            budget_infeasible=infeasible, scores=scores,
        )  # fmt: skip
        spillover = spillover_of(policy, evaluations, eligible, chosen, request)
        return replace(decision, spillover=spillover) if spillover else decision

    # ---- internals --------------------------------------------------------------------------

    def _direct(
        self,
        name: str,
        availability: Mapping[str, Availability],
        request: RequestSummary,
        stats: Mapping[str, LatencySnapshot],
    ) -> Decision:
        """A request naming a backend itself: that backend, if it can take requests at all."""
        state = availability.get(name, Availability())
        if not state.usable_as_last_resort:
            raise NoBackendAvailable(name, {name: state.reason}, state.retry_after_s)
        (evaluation,) = self._evaluate((name,), None, availability, request, stats)
        return Decision(
            route=None,
            policy=None,
            chosen=name,
            attempts=(name,),
            evaluations=(evaluation,),
            task=request.task,
            task_source=request.task_source,
            task_similarity=request.task_similarity,
        )

    def _routed(
        self,
        name: str,
        route: RouteConfig,
        chosen: str,
        evaluations: tuple[Evaluation, ...],
        availability: Mapping[str, Availability],
        request: RequestSummary,
        *,
        budget_infeasible: bool = False,
        scores: Mapping[str, float] | None = None,
        pinned: bool = False,
    ) -> Decision:
        return Decision(
            route=name,
            policy=route.policy,
            chosen=chosen,
            attempts=self._with_fallbacks(chosen, route, evaluations, availability),
            skipped={e.backend: "; ".join(e.reasons) for e in evaluations if not e.eligible},
            evaluations=evaluations,
            task=request.task,
            task_source=request.task_source,
            task_similarity=request.task_similarity,
            budget_infeasible=budget_infeasible,
            scores=scores or {},
            pinned=pinned,
        )

    def _with_fallbacks(
        self,
        chosen: str,
        route: RouteConfig,
        evaluations: tuple[Evaluation, ...],
        availability: Mapping[str, Availability],
    ) -> tuple[str, ...]:
        """The chosen backend, then the route's fallbacks that are up and big enough."""
        too_small = {e.backend for e in evaluations if Reason.CONTEXT_WINDOW in e.codes}
        attempts = [chosen]
        for fallback in route.fallbacks:
            state = availability.get(fallback, Availability())
            if fallback not in attempts and state.available and fallback not in too_small:
                attempts.append(fallback)
        return tuple(attempts)

    def _pinned(
        self,
        name: str,
        route: RouteConfig,
        pinned: str,
        availability: Mapping[str, Availability],
        request: RequestSummary,
        stats: Mapping[str, LatencySnapshot],
    ) -> Decision | None:
        """The decision for a pinned backend, or None when the route must decide instead."""
        if pinned not in self._profiles:
            raise KeyError(f"pinned backend {pinned!r} is not a backend")
        state = availability.get(pinned, Availability())
        backends = (pinned, *(f for f in route.fallbacks if f != pinned))
        evaluations = self._evaluate(backends, route, availability, request, stats)
        if not state.usable_as_last_resort or Reason.CONTEXT_WINDOW in evaluations[0].codes:
            return None
        return self._routed(
            name, route, pinned, evaluations, availability, request, pinned=True
        )  # fmt: skip

    def _evaluate(
        self,
        backends: tuple[str, ...],
        route: RouteConfig | None,
        availability: Mapping[str, Availability],
        request: RequestSummary,
        stats: Mapping[str, LatencySnapshot],
    ) -> tuple[Evaluation, ...]:
        """Estimate and check every backend; per-request values are looked up once."""
        default_output = route.default_output_tokens if route else 256
        quantile = route.latency_quantile if route else "p90"
        task_name = request.task
        task = self._config.tasks.get(task_name)
        min_quality = task.min_quality if task is not None else 0.0
        tokens: dict[int, int] = {}  # per counter: backends often share a tokenizer
        up = Availability()
        results = []
        for backend in backends:
            profile = self._profiles[backend]
            counter = profile.count_tokens
            prompt_tokens = tokens.get(id(counter))
            if prompt_tokens is None:
                prompt_tokens = tokens[id(counter)] = counter(request.prompt_text)
            snapshot = stats.get(backend) or self._prior_snapshot(backend)
            state = availability.get(backend, up)
            guess = estimate(
                profile,
                snapshot,
                prompt_tokens,
                request.max_tokens,
                default_output,
                quantile,
                state.cold_start_ms,
                request.choices,
                request.output_cap,
            )
            quality = profile.quality_for(task_name)
            codes, reasons = _objections(profile, state, guess, request, quality, min_quality)
            results.append(
                Evaluation(
                    backend,
                    not reasons,
                    tuple(reasons),
                    guess,
                    quality,
                    profile.tokenizer,
                    tuple(codes),
                    profile.quality_source_for(task_name),
                )
            )
        return tuple(results)

    def _prior_snapshot(self, backend: str) -> LatencySnapshot:
        snapshot = self._priors.get(backend)
        if snapshot is None:
            prior = self._profiles[backend].latency_prior
            snapshot = self._priors[backend] = BackendStats(prior).snapshot()
        return snapshot

    def _relax(
        self,
        name: str,
        route: RouteConfig,
        evaluations: tuple[Evaluation, ...],
        availability: Mapping[str, Availability],
        request: RequestSummary,
    ) -> tuple[list[Evaluation], bool]:
        """Eligible candidates when none fully qualified, or raise why there are none."""
        budget = request.hints.latency_budget_ms
        only_slow = [e for e in evaluations if e.only(Reason.LATENCY_BUDGET)]
        if only_slow and budget is not None:
            if route.on_infeasible == "reject":
                fastest = min(e.estimate.latency_ms for e in only_slow)
                raise BudgetInfeasible(name, budget, fastest)
            fastest_one = min(only_slow, key=lambda e: e.estimate.latency_ms)
            return [fastest_one], True
        # Nothing is known to be up: try what is not known to be down for good, as long as
        # the probe is its only problem.
        last_resort = [
            e
            for e in evaluations
            if availability.get(e.backend, Availability()).usable_as_last_resort
            and e.only(Reason.UNAVAILABLE)
        ]
        if last_resort:
            return last_resort, False
        waits = [
            state.retry_after_s
            for e in evaluations
            if (state := availability.get(e.backend, Availability())).retry_after_s is not None
        ]
        raise NoBackendAvailable(
            name,
            {e.backend: "; ".join(e.reasons) for e in evaluations},
            min(waits) if waits else None,
        )

    def _known(self) -> list[str]:
        return sorted(set(self._config.routes) | set(self._profiles))


def _objections(
    profile: BackendProfile,
    state: Availability,
    guess: Estimate,
    request: RequestSummary,
    quality: float,
    min_quality: float,
) -> tuple[list[Reason], list[str]]:
    """Why a backend may not take a request (empty: it may), as codes and in words."""
    task_name = request.task
    budget, max_cost = request.hints.latency_budget_ms, request.hints.max_cost_usd
    reasons: list[str] = []
    codes: list[Reason] = []
    if not state.available:
        codes.append(Reason.UNAVAILABLE)
        reasons.append(f"unavailable: {state.reason or 'health check failed'}")
    window = profile.context_window
    if window is not None and guess.prompt_tokens + guess.output_tokens > window:
        codes.append(Reason.CONTEXT_WINDOW)
        reasons.append(
            f"context window {window} < {guess.prompt_tokens} prompt + "
            f"{guess.output_tokens} output tokens"
        )
    if request.endpoint not in profile.endpoints:
        codes.append(Reason.ENDPOINT_NOT_SERVED)
        reasons.append(f"does not serve {request.endpoint}")
    elif profile.tasks is not None and task_name not in profile.tasks:
        codes.append(Reason.TASK_NOT_SERVED)
        reasons.append(f"does not serve task {task_name!r}")
    if quality < min_quality:
        codes.append(Reason.QUALITY)
        reasons.append(
            f"quality {quality:.2f} < min_quality {min_quality:.2f} for task {task_name!r}"
        )
    if max_cost is not None and guess.cost_usd > max_cost:
        codes.append(Reason.COST)
        reasons.append(f"estimated cost ${guess.cost_usd:.6f} > max_cost_usd ${max_cost:.6f}")
    if budget is not None and guess.latency_ms > budget:
        codes.append(Reason.LATENCY_BUDGET)
        reasons.append(f"predicted latency {guess.latency_ms:.0f} ms > budget {budget:.0f} ms")
    return codes, reasons
