"""Turn what Ray Serve raises across a handle into the BackendError the gateway understands."""

from __future__ import annotations

from functools import cache

from deployments._base import BackendError, BackendUnavailable, Recovery

HEALTH_TIMEOUT_S = 5.0


@cache
def _overload_types() -> tuple[type[BaseException], ...]:
    from ray.serve.exceptions import BackPressureError

    return (BackPressureError,)


@cache
def _lost_replica_types() -> tuple[type[BaseException], ...]:
    from ray.exceptions import RayActorError
    from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError

    found: list[type[BaseException]] = [
        RayActorError,  # ActorDiedError, ActorUnavailableError
        DeploymentUnavailableError,
        ReplicaUnavailableError,
    ]
    try:
        from vllm.v1.engine.exceptions import EngineDeadError

        found.append(EngineDeadError)
    except ImportError:  # a gateway host without vLLM cannot receive vLLM's errors
        pass
    return tuple(found)


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and what it wraps (Ray's `cause`, Python's `__cause__`)."""
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = getattr(cause, "cause", None) or cause.__cause__
    return chain


def as_backend_error(name: str, exc: BaseException) -> BackendError:
    """Map an exception from a remote backend call; BackendErrors come through unchanged.

    Ray re-raises a replica's exception as a `RayTaskError` that is also an instance of the
    original class, so the checks are by type, never by message text."""
    chain = _causes(exc)
    for cause in chain:
        if isinstance(cause, BackendError):
            return cause
    kind = type(exc).__name__
    if any(isinstance(cause, _overload_types()) for cause in chain):
        return BackendError(
            f"backend {name!r} is at capacity; retry shortly",
            status=429,
            type="rate_limit_error",
            code="backend_overloaded",
        )
    if any(isinstance(cause, _lost_replica_types()) for cause in chain):
        # Serve replaces a lost replica: a later try may reach the new one.
        return BackendUnavailable(
            f"backend {name!r} lost its replica ({kind})",
            code="backend_replica_lost",
            recovery=Recovery.RETRY,
        )
    return BackendError(f"backend {name!r} failed ({kind})", status=502, code="backend_failed")
