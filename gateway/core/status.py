"""What `GET /v1/gateway/backends` reports about one backend (Serve's replica states come
from `gateway.serve.status`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from deployments import Backend, BackendConfig, BoundedBackend
from router import Availability, LatencySnapshot


@dataclass(frozen=True, slots=True)
class BackendView:
    """What this replica knows of one backend right now."""

    health: Availability
    stats: LatencySnapshot
    circuit: dict[str, Any]
    placement: dict[str, Any]  # where it runs, when it has no deployment of its own
    cold_start: dict[str, Any] | None  # scaling from zero, for backends that do


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
    view = dict(deployment)
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
        "deployment": view,
    }
    scaling = config.deployment.autoscaling_config if config.deployment else None
    if scaling is not None and "status" in deployment:
        view["autoscaling"] = {
            "min_replicas": scaling.min_replicas,
            "max_replicas": scaling.max_replicas,
            "target_ongoing_requests": scaling.target_ongoing_requests,
        }
    if facts:
        state["engine"] = dict(facts)
    return state
