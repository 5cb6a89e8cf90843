"""Turn what Ray Serve raises across a handle into the BackendError the gateway understands."""

from __future__ import annotations

from deployments._base import BackendError, BackendUnavailable


def as_backend_error(name: str, exc: BaseException) -> BackendError:
    """Map an exception from a remote backend call; BackendErrors come through unchanged."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, BackendError):
            return cause
        cause = getattr(cause, "cause", None) or cause.__cause__
    kind = type(exc).__name__
    text = str(exc)
    if "BackPressureError" in kind or "BackPressureError" in text:
        return BackendError(
            f"backend {name!r} is at capacity; retry shortly",
            status=429,
            type="rate_limit_error",
            code="backend_overloaded",
        )
    if "EngineDeadError" in text or "ActorDied" in kind or "ActorUnavailable" in kind:
        return BackendUnavailable(
            f"backend {name!r} lost its replica ({kind})", code="backend_replica_lost"
        )
    return BackendError(f"backend {name!r} failed ({kind})", status=502, code="backend_failed")
