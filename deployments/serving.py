"""Ray Serve glue: one deployment per backend, and the handle-side `Backend` that calls it.

Imports Ray, so it is kept out of the package root.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray import serve

from deployments._anthropic import AnthropicBackend
from deployments._base import (
    UPSTREAM_HEADERS,
    Backend,
    BackendUnavailable,
    Endpoint,
    Health,
    deployment_name,
    send_upstream,
)
from deployments._bounded import BoundedBackend
from deployments._config import (
    AnthropicBackendConfig,
    BackendConfig,
    FakeBackendConfig,
    OpenAIBackendConfig,
    VLLMBackendConfig,
)
from deployments._fake import FakeBackend
from deployments._openai import OpenAICompatibleBackend
from deployments._remote import HEALTH_TIMEOUT_S, as_backend_error
from deployments._vllm import VLLMBackend, build_vllm_application, engine_choices

if TYPE_CHECKING:
    from ray.serve.deployment import Application
    from ray.serve.handle import DeploymentHandle


def make_local_backend(name: str, config: BackendConfig) -> Backend:
    """The in-process implementation for a proxy-style backend config."""
    if isinstance(config, OpenAIBackendConfig):
        return OpenAICompatibleBackend(name, config)
    if isinstance(config, AnthropicBackendConfig):
        return AnthropicBackend(name, config)
    if isinstance(config, FakeBackendConfig):
        return FakeBackend(config)
    raise TypeError(f"{type(config).__name__} has no in-process implementation")


_END = object()


async def coalesce(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Yield each chunk as soon as it arrives, joined with any others already waiting.

    Every item of a streamed handle call costs a Ray message (about 1 ms here), so a burst
    of SSE events read together upstream crosses as one item; nothing waits for more data.
    """
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for chunk in chunks:
                queue.put_nowait(chunk)
        except BaseException as exc:  # handed to the consumer, raised there
            queue.put_nowait(exc)
        else:
            queue.put_nowait(_END)

    task = asyncio.create_task(pump())
    try:
        while True:
            items = [await queue.get()]
            while not queue.empty():
                items.append(queue.get_nowait())
            data = [item for item in items if isinstance(item, bytes)]
            if data:
                yield b"".join(data)
            last = items[-1]
            if last is _END:
                return
            if isinstance(last, BaseException):
                raise last
    finally:
        task.cancel()  # the consumer went away: stop reading upstream (closes the connection)


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.25})
class BackendDeployment:
    """Hosts one in-process backend (OpenAI-compatible proxy, fake) as its own deployment,
    so that it scales, fails and restarts independently of the gateway."""

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        from pydantic import TypeAdapter

        parsed: BackendConfig = TypeAdapter(BackendConfig).validate_python(config)
        self._backend = make_local_backend(name, parsed)

    async def complete(
        self, endpoint: Endpoint, body: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        send_upstream(headers)  # the ingress's, across the handle
        return await self._backend.complete(endpoint, body)

    async def stream(
        self, endpoint: Endpoint, body: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[bytes]:
        send_upstream(headers)
        async for chunk in coalesce(self._backend.stream(endpoint, body)):
            yield chunk

    async def health(self) -> Health:
        return await self._backend.health()

    async def __del__(self) -> None:
        await self._backend.close()


class RemoteBackend(Backend):
    """Calls a `BackendDeployment` through its handle."""

    def __init__(self, name: str, handle: DeploymentHandle[Any]) -> None:
        self.name = name
        self._handle = handle
        self._stream = handle.options(stream=True).stream

    async def complete(self, endpoint: Endpoint, body: dict[str, Any]) -> dict[str, Any]:
        try:
            extra = UPSTREAM_HEADERS.get()  # passed on only when there are any
            args = (endpoint, body, extra) if extra else (endpoint, body)
            result: dict[str, Any] = await self._handle.complete.remote(*args)
        except Exception as exc:
            raise as_backend_error(self.name, exc) from None
        return result

    async def stream(self, endpoint: Endpoint, body: dict[str, Any]) -> AsyncIterator[bytes]:
        extra = UPSTREAM_HEADERS.get()
        chunks: Any = (
            self._stream.remote(endpoint, body, extra)
            if extra
            else self._stream.remote(endpoint, body)
        )
        finished = False
        try:
            async for chunk in chunks:
                yield chunk
            finished = True
        except Exception as exc:
            raise as_backend_error(self.name, exc) from None
        finally:
            if not finished:
                chunks.cancel()  # the replica closes the upstream connection

    async def health(self) -> Health:
        try:
            health: Health = await asyncio.wait_for(self._handle.health.remote(), HEALTH_TIMEOUT_S)
        except Exception as exc:
            return Health(available=False, reason=f"health check failed: {type(exc).__name__}")
        return health


class UnavailableBackend(Backend):
    """Stands in for a backend that could not be deployed, saying why on every call."""

    deployed = False

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    def _error(self) -> BackendUnavailable:
        return BackendUnavailable(f"backend {self.name!r} is unavailable: {self.reason}")

    async def complete(self, endpoint: Endpoint, body: dict[str, Any]) -> dict[str, Any]:
        raise self._error()

    async def stream(self, endpoint: Endpoint, body: dict[str, Any]) -> AsyncIterator[bytes]:
        raise self._error()
        yield b""  # pragma: no cover - makes this an async generator

    async def health(self) -> Health:
        return Health(available=False, reason=self.reason)


@dataclass(frozen=True)
class BackendPlan:
    """What to deploy for one backend, or why nothing is deployed."""

    name: str
    config: BackendConfig
    application: Application | None  # None: runs in the ingress, or unavailable (see reason)
    unavailable_reason: str = ""
    facts: dict[str, str] = field(default_factory=dict)  # decided at deploy, e.g. the dtype


def plan_backend(name: str, config: BackendConfig, project_root: Path) -> BackendPlan:
    """Decide how one configured backend is deployed (without deploying it)."""
    if not config.enabled:
        return BackendPlan(name, config, None, "disabled in config (enabled: false)")
    if isinstance(config, VLLMBackendConfig):
        choices = engine_choices(config, project_root)  # reads the CPU once: facts = engine
        application = build_vllm_application(name, config, project_root, choices)
        return BackendPlan(name, config, application, facts=choices.facts())
    if isinstance(config, OpenAIBackendConfig | AnthropicBackendConfig):
        key, reason = config.api_key()
        if key is None and isinstance(config, AnthropicBackendConfig):
            reason = reason or "no api_key_env or api_key_file configured"
        if key is None and reason:
            return BackendPlan(name, config, None, reason)
    if config.runs_in_ingress:
        return BackendPlan(name, config, None)
    options = {"name": deployment_name(name), **config.deployment.serve_options()}
    deployment = BackendDeployment.options(**options)  # type: ignore[attr-defined]
    app = deployment.bind(name, config.model_dump(mode="json"))
    return BackendPlan(name, config, app)


def connect_backend(
    name: str,
    config: BackendConfig,
    handle: DeploymentHandle[Any] | None,
    unavailable_reason: str = "",
) -> Backend:
    """The gateway-side `Backend` for a planned backend, given the handle Serve bound."""
    if unavailable_reason:
        return UnavailableBackend(name, unavailable_reason)
    if not isinstance(config, VLLMBackendConfig) and config.runs_in_ingress:
        return BoundedBackend(name, make_local_backend(name, config), *config.ingress_limits())
    if handle is None:
        return UnavailableBackend(name, "not deployed")
    if isinstance(config, VLLMBackendConfig):
        return VLLMBackend(name, config, handle)
    return RemoteBackend(name, handle)
