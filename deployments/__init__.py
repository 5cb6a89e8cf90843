"""Backends: one `Backend` interface and its implementations (vLLM, OpenAI-compatible, fake)."""

from deployments._anthropic import AnthropicBackend
from deployments._anthropic_translate import FINISH_REASONS, chat_usage
from deployments._base import (
    ADAPTER_SEPARATOR,
    ENDPOINTS,
    Backend,
    BackendError,
    BackendUnavailable,
    CredentialsRejected,
    Endpoint,
    Health,
    Recovery,
    adapter_backend,
    client_error,
    deployment_name,
    hosted_by,
    max_output_tokens,
    parse_retry_after,
)
from deployments._bounded import BoundedBackend
from deployments._chat_stream import ChatStreamTranslator
from deployments._config import (
    AdapterConfig,
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
    WarmupConfig,
)
from deployments._fake import FakeBackend
from deployments._openai import OpenAICompatibleBackend

__all__ = [
    "ADAPTER_SEPARATOR",
    "ENDPOINTS",
    "FINISH_REASONS",
    "AdapterConfig",
    "AnthropicBackend",
    "AnthropicBackendConfig",
    "AutoscalingOptions",
    "Backend",
    "BackendConfig",
    "BackendError",
    "BackendUnavailable",
    "BoundedBackend",
    "ChatStreamTranslator",
    "CircuitBreakerConfig",
    "CredentialsRejected",
    "DeploymentOptions",
    "Endpoint",
    "FakeBackend",
    "FakeBackendConfig",
    "Health",
    "OpenAIBackendConfig",
    "OpenAICompatibleBackend",
    "Pricing",
    "Recovery",
    "RetryConfig",
    "TimeoutConfig",
    "VLLMBackendConfig",
    "WarmupConfig",
    "adapter_backend",
    "chat_usage",
    "client_error",
    "deployment_name",
    "hosted_by",
    "max_output_tokens",
    "parse_retry_after",
]
