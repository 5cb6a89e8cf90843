"""Resolve a request's `model` to an ordered list of backends to try."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from router._config import RouteConfig, RoutingConfig
from router._policies import Candidate, Policy, policy_class


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
    def __init__(self, target: str, reasons: Mapping[str, str]) -> None:
        self.target = target
        self.reasons = dict(reasons)
        detail = "; ".join(f"{name}: {why}" for name, why in self.reasons.items())
        super().__init__(f"no backend available for {target!r} ({detail})")


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

    @property
    def usable_as_last_resort(self) -> bool:
        return self.available or not self.definite


@dataclass(frozen=True, slots=True)
class Decision:
    """The router's answer: what to try, in order, and why."""

    route: str | None  # None when the request named a backend directly
    policy: str | None
    chosen: str
    attempts: tuple[str, ...]  # chosen first, then usable fallbacks
    skipped: Mapping[str, str] = field(default_factory=dict)  # backend -> why not eligible


class Router:
    """Stateless resolution of `model` names; build one per config."""

    def __init__(self, config: RoutingConfig, backend_models: Mapping[str, str]) -> None:
        """`backend_models` maps backend name -> the model id it serves, which also resolves."""
        self._config = config
        self._backends = set(backend_models)
        self._aliases = {
            model: name
            for name, model in backend_models.items()
            if model not in backend_models and model not in config.routes
        }
        self._policies: dict[str, Policy] = {
            name: policy_class(route.policy)() for name, route in config.routes.items()
        }

    @property
    def route_names(self) -> list[str]:
        return list(self._config.routes)

    def route(self, name: str) -> RouteConfig:
        return self._config.routes[name]

    def resolve_target(self, model: str | None) -> tuple[str, str]:
        """('route' | 'backend', name) for a request's `model`, or raise ModelNotFound."""
        if model is None or model == "":
            if self._config.default_route is None:
                raise ModelNotFound(None, self._known())
            return "route", self._config.default_route
        if model in self._config.routes:
            return "route", model
        if model in self._backends:
            return "backend", model
        if model in self._aliases:
            return "backend", self._aliases[model]
        raise ModelNotFound(model, self._known())

    def decide(self, model: str | None, availability: Mapping[str, Availability]) -> Decision:
        kind, name = self.resolve_target(model)
        if kind == "backend":
            state = availability.get(name, Availability())
            if not state.usable_as_last_resort:
                raise NoBackendAvailable(name, {name: state.reason})
            return Decision(route=None, policy=None, chosen=name, attempts=(name,))

        route = self._config.routes[name]
        skipped: dict[str, str] = {}
        eligible: list[Candidate] = []
        for candidate in route.candidates:
            state = availability.get(candidate, Availability())
            if state.available:
                eligible.append(Candidate(candidate))
            else:
                skipped[candidate] = state.reason or "unavailable"
        if not eligible:
            # Nothing is known to be up: try what is not known to be down for good.
            eligible = [
                Candidate(c)
                for c in route.candidates
                if availability.get(c, Availability()).usable_as_last_resort
            ]
        if not eligible:
            raise NoBackendAvailable(name, skipped)
        chosen = self._policies[name].choose(eligible).name
        attempts = [chosen]
        for fallback in route.fallbacks:
            state = availability.get(fallback, Availability())
            if fallback not in attempts and state.available:
                attempts.append(fallback)
        return Decision(
            route=name,
            policy=route.policy,
            chosen=chosen,
            attempts=tuple(attempts),
            skipped=skipped,
        )

    def _known(self) -> list[str]:
        return sorted(set(self._config.routes) | self._backends)
