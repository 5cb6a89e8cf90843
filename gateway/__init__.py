"""HTTP + OpenAI protocol layer of the gateway; composes `router` and `deployments`."""

from gateway.config import ConfigError, GatewayConfig

__all__ = ["ConfigError", "GatewayConfig"]
