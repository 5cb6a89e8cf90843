"""Open-weights models on vLLM, hosted by Ray Serve LLM's `LLMServer` deployment.

The gateway talks to `LLMServer` directly through its handle: one hop, no extra wrapper
deployment. vLLM's request types are built here on the caller's side, so invalid sampling
arguments fail before they cross the network.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployments._base import (
    UPSTREAM_HEADERS,
    Backend,
    BackendError,
    Endpoint,
    Health,
    client_error,
    deployment_name,
)
from deployments._config import VLLMBackendConfig
from deployments._remote import HEALTH_TIMEOUT_S, as_backend_error

if TYPE_CHECKING:
    from ray.serve.deployment import Application
    from ray.serve.handle import DeploymentHandle

logger = logging.getLogger("ray.serve")


# CPU features that make bfloat16 arithmetic native (otherwise it is emulated: slower than
# float32, about 3x in vLLM on an AVX2-only CPU).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# Below this size a CPU engine computes in float32 even where bfloat16 is native.
BF16_MIN_PARAMETERS = 1_000_000_000


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU feature flags Linux reports (empty where /proc/cpuinfo cannot be read)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def model_parameters(source: str) -> int | None:
    """The parameter count of a local safetensors model folder, from the files' headers (no
    weights read); None for a hub id or a folder without safetensors."""
    folder = Path(source)
    if not folder.is_dir():
        return None
    total, found = 0, False
    for file in folder.glob("*.safetensors"):
        try:
            with file.open("rb") as handle:
                size = int.from_bytes(handle.read(8), "little")
                header = json.loads(handle.read(size))
        except (OSError, ValueError):
            return None
        for name, tensor in header.items():
            if name != "__metadata__":
                total += math.prod(tensor.get("shape") or [1])
        found = True
    return total if found else None


def engine_dtype(
    config: VLLMBackendConfig,
    flags: set[str] | None = None,
    parameters: int | None = None,
) -> tuple[str, str]:
    """The dtype a vLLM engine is started with, and why. `auto` on a CPU means float32 unless
    the CPU computes bfloat16 natively *and* the model is large enough to be trusted in it
    (`parameters`, counted from the model folder; unknown counts as small). Correct first:
    SmolLM2-135M in bfloat16 answered garbage on an AMX CPU (docs/performance.md); a small
    model gains little from bfloat16 on a CPU anyway. On GPUs vLLM's own `auto` stays."""
    dtype = str(config.engine_kwargs.get("dtype", "auto"))
    if dtype != "auto":
        return dtype, "set in engine_kwargs"
    if config.accelerator != "cpu":
        return "auto", "vLLM chooses (the model's own dtype)"
    flags = cpu_flags() if flags is None else flags
    native = [flag for flag in NATIVE_BF16_FLAGS if flag in flags]
    if not native:
        return "float32", "auto: no native bfloat16 on this CPU (no avx512_bf16 or amx_bf16)"
    if parameters is None or parameters < BF16_MIN_PARAMETERS:
        size = "unknown size" if parameters is None else f"{parameters / 1e6:.0f}M parameters"
        return "float32", (
            f"auto: a small model ({size}, under {BF16_MIN_PARAMETERS / 1e9:g}B) computes in "
            f"float32 even where bfloat16 is native ({', '.join(native)}): small models "
            "degenerate in bfloat16"
        )
    return "bfloat16", (
        f"auto: this CPU computes bfloat16 natively ({', '.join(native)}) and the model has "
        f"{parameters / 1e9:.1f}B parameters"
    )


def engine_threads(config: VLLMBackendConfig) -> tuple[int | None, str]:
    """The threads a CPU engine computes with, and why (None: not a CPU engine)."""
    if config.accelerator != "cpu":
        return None, "GPU engine"
    env_vars = (config.runtime_env.get("env_vars") or {}) if config.runtime_env else {}
    if "OMP_NUM_THREADS" in env_vars:
        return int(env_vars["OMP_NUM_THREADS"]), "runtime_env.env_vars.OMP_NUM_THREADS"
    if config.cpu_threads != "auto":
        return config.cpu_threads, "set in cpu_threads"
    cores = len(os.sched_getaffinity(0))
    return cores, f"auto: the {cores} cores of this machine, as vLLM's own server uses"


@dataclass(frozen=True, slots=True)
class EngineChoices:
    """What the deploy decides for an engine where the config says `auto`, and why."""

    dtype: str
    dtype_why: str
    threads: int | None  # None: not a CPU engine
    threads_why: str

    def facts(self) -> dict[str, str]:
        """As logged at deploy and shown under `engine` in `GET /v1/gateway/backends`."""
        facts = {"dtype": self.dtype, "dtype_choice": self.dtype_why}
        if self.threads is not None:
            facts |= {"cpu_threads": str(self.threads), "cpu_threads_choice": self.threads_why}
        return facts


def engine_choices(config: VLLMBackendConfig, project_root: Path) -> EngineChoices:
    dtype = engine_dtype(config, parameters=model_parameters(config.resolved_source(project_root)))
    return EngineChoices(*dtype, *engine_threads(config))


def _runtime_env(config: VLLMBackendConfig, threads: int | None) -> dict[str, Any] | None:
    runtime_env = dict(config.runtime_env)
    if threads is not None:
        env_vars = dict(runtime_env.get("env_vars") or {})
        env_vars["OMP_NUM_THREADS"] = str(threads)  # engine_threads kept a value set here
        runtime_env["env_vars"] = env_vars
    return runtime_env or None


def llm_config_for(
    name: str,
    config: VLLMBackendConfig,
    project_root: Path,
    choices: EngineChoices | None = None,
) -> Any:
    """The Ray Serve LLM `LLMConfig` for one backend (`choices`: decided once per deploy)."""
    from ray.serve.llm import LLMConfig

    deployment = config.deployment.serve_options()
    if "num_replicas" not in deployment and "autoscaling_config" not in deployment:
        deployment["num_replicas"] = 1
    engine_kwargs = dict(config.engine_kwargs)
    choices = choices or engine_choices(config, project_root)
    if choices.dtype != "auto":
        engine_kwargs["dtype"] = choices.dtype
    if config.context_window and "max_model_len" not in engine_kwargs:
        engine_kwargs["max_model_len"] = config.context_window
    # Set in engine_kwargs, a LoRA argument wins over the one derived from the adapters.
    engine_kwargs = {**config.lora_engine_kwargs(project_root), **engine_kwargs}
    return LLMConfig(
        model_loading_config={
            "model_id": config.model,
            "model_source": config.resolved_source(project_root),
        },
        accelerator_config={"kind": config.accelerator},  # type: ignore[arg-type]
        accelerator_type=config.accelerator_type,
        engine_kwargs=engine_kwargs,
        deployment_config=deployment,
        experimental_configs={"stream_batching_interval_ms": config.stream_batching_interval_ms},
        runtime_env=_runtime_env(config, choices.threads),
    )


def build_vllm_application(
    name: str, config: VLLMBackendConfig, project_root: Path, choices: EngineChoices
) -> Application:
    from ray.serve.llm import build_llm_deployment

    options: dict[str, Any] = {}
    scaling = config.deployment.autoscaling_config
    if scaling is not None and scaling.signal == "tokens_in_flight":
        from deployments._autoscaling import LoadReportingLLMServer

        options["deployment_cls"] = LoadReportingLLMServer  # reports what the policy reads
    return build_llm_deployment(
        llm_config_for(name, config, project_root, choices),
        override_serve_options={"name": deployment_name(name)},
        **options,
    )


def _is_error(item: Any) -> bool:
    # LLMServer yields vLLM's own ErrorResponse, which is not the class Ray re-exports.
    return getattr(item, "error", None) is not None and not hasattr(item, "choices")


def _error_from_vllm(name: str, error: Any) -> BackendError:
    """vLLM's ErrorResponse -> BackendError, keeping its status and OpenAI fields."""
    info = getattr(error, "error", error)
    status = int(getattr(info, "code", 500) or 500)
    message = str(getattr(info, "message", "") or f"backend {name!r} failed")
    if status >= 500:
        return BackendError(f"backend {name!r} failed: {message}", status=502)
    return client_error(message, status=status, param=getattr(info, "param", None))


class VLLMBackend(Backend):
    """Client side of an `LLMServer` deployment."""

    def __init__(self, name: str, config: VLLMBackendConfig, handle: DeploymentHandle[Any]) -> None:
        from ray.serve.llm.openai_api_models import (
            ChatCompletionRequest,
            CompletionRequest,
        )

        self.name = name
        self.config = config
        self._handle = handle
        self._stream_handle = handle.options(stream=True)
        try:
            from vllm.exceptions import VLLMClientError

            self._client_errors: type[Exception] = VLLMClientError
        except ImportError:  # older vLLM: its checks raise ValueError
            self._client_errors = ValueError
        # `EmbeddingRequest` in ray.serve.llm is a Union alias: the concrete class is here.
        from ray.llm._internal.serve.core.configs.openai_api_models import (
            EmbeddingCompletionRequest,
        )

        self._request_types = {
            "chat/completions": (ChatCompletionRequest, "chat"),
            "completions": (CompletionRequest, "completions"),
            "embeddings": (EmbeddingCompletionRequest, "embeddings"),
        }

    def _engine_request(self, endpoint: Endpoint, body: dict[str, Any]) -> tuple[Any, str]:
        from pydantic import ValidationError

        request_type, method = self._request_types[endpoint]
        try:
            body = {**body, "model": self.config.model}
            return request_type.model_validate(body), method  # type: ignore[attr-defined]
        except ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(str(part) for part in first["loc"]) or None
            message = f"{param}: {first['msg']}" if param else first["msg"]
            raise client_error(message, param=param, code="invalid_value") from None
        except (ValueError, self._client_errors) as exc:  # vLLM's own checks name the field
            param = getattr(exc, "parameter", None)
            raise client_error(str(exc), param=param, code="invalid_value") from None

    def _call(self, method: str, request: Any) -> Any:
        """The engine call; with the attempt's trace headers as the raw request's (vLLM
        takes `traceparent` from them for its own spans when its tracing is on)."""
        call = getattr(self._stream_handle, method)
        extra = UPSTREAM_HEADERS.get()
        if not extra:
            return call.remote(request)
        from ray.llm._internal.serve.core.protocol import RawRequestInfo

        return call.remote(request, RawRequestInfo(headers=dict(extra)))

    async def complete(self, endpoint: Endpoint, body: dict[str, Any]) -> dict[str, Any]:
        unstreamed = body if endpoint == "embeddings" else {**body, "stream": False}
        request, method = self._engine_request(endpoint, unstreamed)
        responses = self._call(method, request)
        try:
            async for item in responses:
                if _is_error(item):
                    raise _error_from_vllm(self.name, item)
                result: dict[str, Any] = item.model_dump(mode="json")
                return result
        except BackendError:
            raise
        except Exception as exc:
            raise as_backend_error(self.name, exc) from None
        finally:
            responses.cancel()
        raise BackendError(f"backend {self.name!r} returned nothing")

    async def stream(self, endpoint: Endpoint, body: dict[str, Any]) -> AsyncIterator[bytes]:
        request, method = self._engine_request(endpoint, {**body, "stream": True})
        responses = self._call(method, request)
        finished = False
        try:
            async for batch in responses:
                items = batch if isinstance(batch, list) else [batch]
                for item in items:
                    if isinstance(item, str):
                        yield item.encode()
                    elif _is_error(item):
                        raise _error_from_vllm(self.name, item)
            finished = True
        except BackendError:
            raise
        except Exception as exc:
            raise as_backend_error(self.name, exc) from None
        finally:
            if not finished:
                # Propagates to LLMServer, which aborts the request in the engine.
                responses.cancel()

    async def health(self) -> Health:
        if self.config.scales_to_zero:
            # A probe would be queued until a replica starts, and keep one alive for good:
            # the gateway's capacity watcher reports a scaled-to-zero engine instead.
            return Health(available=True)
        try:
            await asyncio.wait_for(self._handle.check_health.remote(), HEALTH_TIMEOUT_S)
        except Exception as exc:
            return Health(
                available=False, reason=f"engine health check failed: {type(exc).__name__}"
            )
        return Health(available=True)

    async def wake(self) -> None:
        """A request Serve queues for the deployment: its autoscaler starts a replica for it
        (scale from zero); the call returns when the replica answers."""
        try:
            await self._handle.check_health.remote()
        except Exception as exc:
            logger.warning("waking backend %s failed: %s", self.name, type(exc).__name__)
