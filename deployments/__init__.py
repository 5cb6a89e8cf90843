"""Backends: one `Backend` interface and its implementations (vLLM, OpenAI-compatible, fake)."""

from deployments._anthropic import AnthropicBackend
from deployments._base import (
    ENDPOINTS,
    Backend,
    BackendError,
    BackendUnavailable,
    Endpoint,
    Health,
    parse_retry_after,
)
from deployments._config import (
    AnthropicBackendConfig,
    AutoscalingOptions,
    BackendConfig,
    CircuitBreakerConfig,
    DeploymentOptions,
    FakeBackendConfig,
    OpenAIBackendConfig,
    Pricing,
    RetryConfig,
    TimeoutConfig,
    VLLMBackendConfig,
)
from deployments._fake import FakeBackend
from deployments._openai import OpenAICompatibleBackend

__all__ = [
    "ENDPOINTS",
    "AnthropicBackend",
    "AnthropicBackendConfig",
    "AutoscalingOptions",
    "Backend",
    "BackendConfig",
    "BackendError",
    "BackendUnavailable",
    "CircuitBreakerConfig",
    "DeploymentOptions",
    "Endpoint",
    "FakeBackend",
    "FakeBackendConfig",
    "Health",
    "OpenAIBackendConfig",
    "OpenAICompatibleBackend",
    "Pricing",
    "RetryConfig",
    "TimeoutConfig",
    "VLLMBackendConfig",
    "parse_retry_after",
]
