"""What `GET /v1/gateway/backends` reports about one backend."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from deployments import Backend, BackendConfig, BoundedBackend, deployment_name
from router import Availability, LatencySnapshot


def replica_states(names: list[str]) -> dict[str, Any]:
    """Serve status and replica states per backend deployment (blocking: a controller call)."""
    from ray import serve

    try:
        app_name = serve.get_replica_context().app_name
        deployments = serve.status().applications[app_name].deployments
    except Exception as exc:  # outside Serve, or the controller is busy
        return {"error": type(exc).__name__}
    states: dict[str, Any] = {}
    for name in names:
        deployment = deployments.get(deployment_name(name))
        if deployment is not None:
            states[name] = {
                "status": str(getattr(deployment.status, "value", deployment.status)),
                "replicas": {
                    str(getattr(state, "value", state)): count
                    for state, count in deployment.replica_states.items()
                },
            }
    return states


def placement(backend: Backend) -> dict[str, Any]:
    """Where a backend without a deployment of its own runs."""
    if not backend.deployed:
        return {"status": "NOT_DEPLOYED"}
    if isinstance(backend, BoundedBackend):
        return {"status": "IN_INGRESS", **backend.load()}
    return {"status": "UNKNOWN"}


def backend_state(
    name: str,
    config: BackendConfig,
    health: Availability,
    stats: LatencySnapshot,
    circuit: dict[str, Any],
    deployment: dict[str, Any],
    facts: Mapping[str, str],
) -> dict[str, Any]:
    state = {
        "id": name,
        "kind": config.kind,
        "model": config.model,
        "health": {"available": health.available, "reason": health.reason or None},
        "circuit": circuit,
        "latency": {
            "source": stats.source,
            "samples": stats.samples,
            "ttft_ms": round(stats.ttft_ms, 1),
            "ttft_p90_ms": round(stats.ttft_p90_ms, 1),
            "tpot_ms": round(stats.tpot_ms, 2),
            "tpot_p90_ms": round(stats.tpot_p90_ms, 2),
        },
        "in_flight": stats.in_flight,
        "deployment": deployment,
    }
    if facts:
        state["engine"] = dict(facts)
    return state
