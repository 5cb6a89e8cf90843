"""The one interface every backend implements, and the errors it may raise."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Literal

# What a backend is called with: the routed OpenAI endpoints, and the client's own body in
# another API for backends that speak it natively: "messages" (Anthropic's Messages API),
# "responses" (OpenAI's Responses API).
Endpoint = Literal["chat/completions", "completions", "embeddings", "messages", "responses"]
# The endpoints requests are routed by (a Messages request is routed as the chat it is).
ENDPOINTS: tuple[Endpoint, ...] = ("chat/completions", "completions", "embeddings")
# What a backend serves unless its config says otherwise (`endpoints:`).
GENERATION: tuple[Endpoint, ...] = ("chat/completions", "completions")


# Headers the current backend attempt sends upstream beside the backend's own (W3C
# `traceparent`): set by the gateway around each attempt, read by the backends that call out.
UPSTREAM_HEADERS: ContextVar[Mapping[str, str]] = ContextVar("upstream_headers", default={})  # noqa: B039


def send_upstream(headers: Mapping[str, str] | None) -> None:
    """Set the headers this task's backend calls send upstream (none: leave them). A function,
    so that Serve deployments pickled by value refer to it rather than to the variable."""
    if headers:
        UPSTREAM_HEADERS.set(headers)


# A LoRA adapter of a vLLM backend is a backend of its own, named `<backend>:<adapter>`.
ADAPTER_SEPARATOR = ":"


def adapter_backend(base: str, adapter: str) -> str:
    """The backend name of `base`'s adapter `adapter`."""
    return f"{base}{ADAPTER_SEPARATOR}{adapter}"


def hosted_by(backend: str) -> str:
    """The backend whose replicas serve `backend`: itself, or an adapter's base."""
    return backend.partition(ADAPTER_SEPARATOR)[0]


def deployment_name(backend: str) -> str:
    """The Serve deployment that hosts a backend (vLLM replicas or a proxy); an adapter's
    candidate is hosted by its backend's."""
    return f"backend-{hosted_by(backend)}"


def max_output_tokens(body: Mapping[str, Any]) -> int | None:
    """The output limit a request sets: `max_completion_tokens`, else the older `max_tokens`."""
    value = body.get("max_completion_tokens") or body.get("max_tokens")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class Recovery(StrEnum):
    """What may mend a failed call. Set once, where a failure is classified."""

    NONE = "none"  # the request itself is wrong: the client hears it now
    FALLBACK = "fallback"  # another backend may serve it; this one would fail again
    RETRY = "retry"  # another try may succeed, on this backend after a backoff or another


class BackendError(Exception):
    """A failure with an OpenAI-shaped description and an HTTP status for the client.

    `recovery` tells the gateway what may still serve the request; `retry_after_s` is the
    upstream's `Retry-After`, when it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 502,
        type: str = "upstream_error",
        param: str | None = None,
        code: str | None = None,
        recovery: Recovery = Recovery.RETRY,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.param = param
        self.code = code
        self.recovery = recovery
        self.retry_after_s = retry_after_s

    @property
    def retryable(self) -> bool:
        """Whether anything (another backend, another try) may still serve the request."""
        return self.recovery is not Recovery.NONE

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only fields must survive pickling across Ray Serve handles.
        return (
            _rebuild_error,
            (
                type(self),
                self.message,
                self.to_dict()["error"],
                self.status,
                self.recovery.value,
                self.retry_after_s,
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def _rebuild_error(
    cls: type[BackendError],
    message: str,
    error: dict[str, Any],
    status: int,
    recovery: str,
    retry_after_s: float | None = None,
) -> BackendError:
    return cls(
        message,
        status=status,
        type=error["type"],
        param=error["param"],
        code=error["code"],
        recovery=Recovery(recovery),
        retry_after_s=retry_after_s,
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date), if valid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    import time

    return max(0.0, when.timestamp() - time.time())


def client_error(
    message: str, *, status: int = 400, param: str | None = None, code: str | None = None
) -> BackendError:
    """A request the upstream rejected as invalid: not retryable, shaped as OpenAI does it
    (engines name their types differently, e.g. vLLM's `BadRequestError`)."""
    if "maximum context length" in message or "prompt is too long" in message:
        code = "context_length_exceeded"
    return BackendError(
        message,
        status=status,
        type="invalid_request_error",
        param=param,
        code=code if isinstance(code, str) else None,
        recovery=Recovery.NONE,
    )


class BackendUnavailable(BackendError):
    """The backend cannot serve at all (missing key, disabled, engine dead): another may."""

    def __init__(self, message: str, **kwargs: Any) -> None:
        kwargs.setdefault("status", 503)
        kwargs.setdefault("type", "service_unavailable")
        kwargs.setdefault("code", "backend_unavailable")
        kwargs.setdefault("recovery", Recovery.FALLBACK)
        super().__init__(message, **kwargs)


class CredentialsRejected(BackendUnavailable):
    """The provider refused our key: out of rotation until someone fixes the config."""


def provider_error(
    name: str,
    status: int,
    *,
    message: str | None = None,
    param: str | None = None,
    code: str | None = None,
    retry_after_s: float | None = None,
) -> BackendError:
    """The one map from a provider's HTTP error status to what the gateway does with it.

    `message`, `param` and `code` are the provider's, used only for the client's own errors
    (4xx about the request); for the rest the provider's text is never repeated, since it may
    quote the key or account details.
    """
    if status in (400, 413, 422):
        text = message or f"backend {name!r} rejected the request (HTTP {status})"
        return client_error(text, status=400 if status == 422 else status, param=param, code=code)
    if status in (401, 403):
        return CredentialsRejected(
            f"backend {name!r} is misconfigured: the provider rejected its credentials",
            status=502,
            code="backend_auth_failed",
        )
    if status == 404:
        return BackendError(
            f"backend {name!r} is misconfigured: the provider does not know its model or URL",
            status=502,
            code="backend_not_found",
            recovery=Recovery.FALLBACK,
        )
    if status == 429:
        return BackendError(
            f"backend {name!r} is rate limited by its provider",
            status=429,
            type="rate_limit_error",
            code="upstream_rate_limited",
            retry_after_s=retry_after_s,
        )
    # 500, 502, 503, 529 (overloaded) and the rest: the provider's problem, worth another try.
    return BackendError(
        f"backend {name!r} failed upstream (HTTP {status})", status=502, retry_after_s=retry_after_s
    )


@dataclass(frozen=True, slots=True)
class Health:
    """A backend's own view of whether it can take requests."""

    available: bool
    reason: str = ""
    detail: dict[str, Any] | None = None


class Backend(ABC):
    """Serves OpenAI-shaped requests for one model.

    `body` is the client's validated JSON object; the backend substitutes its own upstream
    model id. A non-streamed call returns the response object; a streamed call yields
    Server-Sent-Event bytes (`data: ...\\n\\n`, ending with `data: [DONE]\\n\\n`) as the
    upstream produces them. Failures before any output raise `BackendError`.
    """

    deployed: ClassVar[bool] = True  # False for a stand-in of a backend that is not deployed

    @abstractmethod
    async def complete(self, endpoint: Endpoint, body: dict[str, Any]) -> dict[str, Any]:
        """One non-streamed chat completion or completion."""

    @abstractmethod
    def stream(self, endpoint: Endpoint, body: dict[str, Any]) -> AsyncIterator[bytes]:
        """A streamed chat completion or completion, as SSE bytes."""

    async def health(self) -> Health:
        return Health(available=True)

    async def wake(self) -> None:  # noqa: B027 - optional hook: only deployments can sleep
        """Ask for capacity: a deployment scaled to zero starts a replica. Returns once asked
        (or once a replica answers), never raises."""

    async def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release connections; called when the hosting replica stops."""

    # Conveniences matching the OpenAI resource names.
    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.complete("chat/completions", body)

    async def completions(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.complete("completions", body)
