"""Backends: one `Backend` interface and its implementations (vLLM, OpenAI-compatible, fake)."""

from deployments._base import (
    ENDPOINTS,
    Backend,
    BackendError,
    BackendUnavailable,
    Endpoint,
    Health,
)
from deployments._config import (
    AutoscalingOptions,
    BackendConfig,
    DeploymentOptions,
    FakeBackendConfig,
    OpenAIBackendConfig,
    Pricing,
    VLLMBackendConfig,
)
from deployments._fake import FakeBackend
from deployments._openai import OpenAICompatibleBackend

__all__ = [
    "ENDPOINTS",
    "AutoscalingOptions",
    "Backend",
    "BackendConfig",
    "BackendError",
    "BackendUnavailable",
    "DeploymentOptions",
    "Endpoint",
    "FakeBackend",
    "FakeBackendConfig",
    "Health",
    "OpenAIBackendConfig",
    "OpenAICompatibleBackend",
    "Pricing",
    "VLLMBackendConfig",
]
