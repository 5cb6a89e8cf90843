"""Serve's own view of the backend deployments: status, replicas by state, the autoscaler's
target (`GET /v1/gateway/backends` shows it)."""

from __future__ import annotations

from typing import Any

from deployments import deployment_name


def replica_states(names: list[str]) -> dict[str, Any]:
    """Per backend deployment: Serve's status, replicas by state and the autoscaler's target
    (blocking: one controller call)."""
    from ray import serve
    from ray.serve.context import _get_global_client

    try:
        app_name = serve.get_replica_context().app_name
        details = _get_global_client().get_serve_details()  # type: ignore[union-attr]
        deployments = details["applications"][app_name]["deployments"]
    except Exception as exc:  # outside Serve, or the controller is busy
        return {"error": type(exc).__name__}
    states: dict[str, Any] = {}
    for name in names:
        deployment = deployments.get(deployment_name(name))
        if deployment is not None:
            counts: dict[str, int] = {}
            for replica in deployment.get("replicas") or ():
                state = _name(replica["state"])
                counts[state] = counts.get(state, 0) + 1
            states[name] = {
                "status": _name(deployment.get("status")),
                "target_replicas": deployment.get("target_num_replicas"),
                "replicas": counts,
            }
    return states


def _name(value: Any) -> str:
    """An enum's value (the controller's details may hold enums or their strings)."""
    return str(getattr(value, "value", value))
