"""Read-only views of a running gateway: models, health, backend states."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gateway.config import GatewayConfig
from gateway.core.pipeline import Gateway
from gateway.core.status import backend_state

ReplicaStates = Callable[[list[str]], dict[str, Any]]


def model_cards(config: GatewayConfig, gateway: Gateway) -> list[dict[str, Any]]:
    availability = gateway.availability()
    cards = [
        {
            "id": name,
            "object": "model",
            "created": 0,
            "owned_by": "gateway",
            "route": {
                "policy": route.policy,
                "candidates": list(route.candidates),
                "fallbacks": list(route.fallbacks),
            },
        }
        for name, route in config.routes.items()
    ]
    cards += [
        {
            "id": name,
            "object": "model",
            "created": 0,
            "owned_by": backend.kind,
            "upstream_model": backend.model,
        }
        for name, backend in config.backends.items()
        if availability[name].available
    ]
    return cards


async def health_report(config: GatewayConfig, gateway: Gateway) -> tuple[int, dict[str, Any]]:
    availability = await gateway.fresh_availability()
    backends = {
        name: {
            "available": state.available,
            "reason": state.reason or None,
            "kind": config.backends[name].kind,
        }
        for name, state in availability.items()
    }
    up = sum(state.available for state in availability.values())
    status = "ok" if up == len(backends) else "degraded" if up else "unavailable"
    report: dict[str, Any] = {"status": status, "backends": backends}
    if gateway.warming:  # not ready: the first requests would run cold
        report["status"], report["warming"] = "starting", sorted(gateway.warming)
        return 503, report
    return (200 if up else 503), report


def backend_states(
    config: GatewayConfig,
    gateway: Gateway,
    replicas: Mapping[str, Any],
    facts: Mapping[str, Mapping[str, str]],
) -> list[dict[str, Any]]:
    views = gateway.backend_views()
    states = []
    for name, backend in config.backends.items():
        view = views[name]
        deployment = replicas.get(name) or view.placement
        state = backend_state(name, backend, view.health, view.stats, view.circuit, deployment,
                              facts.get(name, {}))  # fmt: skip
        if view.cold_start is not None:
            state["cold_start"] = view.cold_start
        states.append(state)
    return states
