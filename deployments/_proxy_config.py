"""The configs of backends that call an upstream (OpenAI-compatible, Anthropic) or fake one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from deployments._base import Endpoint
from deployments._config_base import _BackendBase
from deployments._options import (
    DeploymentOptions,
)

Placement = Literal["ingress", "deployment"]

# Per ingress replica, for a backend placed in the ingress: as many calls as the proxy's
# connection pool holds, then a bounded line, then 429 (the route's fallbacks serve it).
INGRESS_MAX_ONGOING = 256
INGRESS_MAX_QUEUED = 1024


class _ProxyBase(_BackendBase):
    placement: Placement = Field(
        default="ingress",
        description="Where this proxy runs. `ingress` (default): inside each ingress replica, "
        "no Ray hop (about 2-3 ms less per request here), bounded by "
        "`deployment.max_ongoing_requests` / `max_queued_requests` per ingress replica. "
        "`deployment`: its own Serve deployment with its own replicas and autoscaling, so it "
        "scales, fails and restarts apart from the gateway, for one handle hop per request.",
    )

    @model_validator(mode="before")
    @classmethod
    def _older_spelling(cls, data: Any) -> Any:
        """`in_ingress: true|false`, the older spelling, becomes `placement`."""
        if not isinstance(data, dict) or "in_ingress" not in data:
            return data
        data = dict(data)
        in_ingress = data.pop("in_ingress")
        if not isinstance(in_ingress, bool):
            raise ValueError("in_ingress: must be true or false (or use placement)")
        spelled = "ingress" if in_ingress else "deployment"
        if data.setdefault("placement", spelled) != spelled:
            raise ValueError(
                f"in_ingress: {str(in_ingress).lower()} contradicts placement: "
                f"{data['placement']} (in_ingress is the older spelling; keep placement)"
            )
        return data

    @model_validator(mode="after")
    def _deployment_options_fit_placement(self) -> _ProxyBase:
        if self.placement == "ingress":
            fields = DeploymentOptions.model_fields
            only_for_deployment = [
                name
                for name in ("num_replicas", "autoscaling_config", "ray_actor_options",
                             "health_check_period_s")
                # Set to something (a dumped config carries every field, unset ones as None).
                if getattr(self.deployment, name)
                != fields[name].get_default(call_default_factory=True)
            ]  # fmt: skip
            if only_for_deployment:
                raise ValueError(
                    f"deployment.{only_for_deployment[0]} applies only to `placement: "
                    "deployment`; this backend runs in the ingress (the default placement): "
                    "set placement: deployment to give it replicas of its own"
                )
        return self

    @property
    def runs_in_ingress(self) -> bool:
        return self.placement == "ingress"

    def ingress_limits(self) -> tuple[int, int]:
        """(max ongoing, max queued) calls per ingress replica; queued -1 is unbounded."""
        ongoing = self.deployment.max_ongoing_requests or INGRESS_MAX_ONGOING
        queued = self.deployment.max_queued_requests
        return ongoing, INGRESS_MAX_QUEUED if queued is None else queued


class _HTTPBackendBase(_ProxyBase):
    """A provider reached over HTTP with a key read from the environment or a file."""

    base_url: str = Field(description="API root of the provider.")
    api_key_env: str | None = Field(
        default=None,
        description="Name of the environment variable holding the key; the backend is reported "
        "unavailable while it is unset. None sends no key.",
    )
    api_key_file: str | None = Field(
        default=None, description="Path of a file holding the key (instead of api_key_env)."
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Extra headers sent upstream (no secrets: use env)."
    )

    @model_validator(mode="after")
    def _one_key_source(self) -> _HTTPBackendBase:
        if self.api_key_env and self.api_key_file:
            raise ValueError("set either api_key_env or api_key_file, not both")
        return self

    def api_key(self) -> tuple[str | None, str]:
        """(key, '') when usable, (None, reason) when the backend cannot authenticate."""
        if self.api_key_env:
            value = os.environ.get(self.api_key_env, "").strip()
            if not value:
                return None, f"environment variable {self.api_key_env} is not set"
            return value, ""
        if self.api_key_file:
            path = Path(self.api_key_file).expanduser()
            try:
                value = path.read_text().strip()
            except OSError as exc:
                return None, f"cannot read api_key_file {path}: {exc.strerror}"
            return (value, "") if value else (None, f"api_key_file {path} is empty")
        return None, ""


class OpenAIBackendConfig(_HTTPBackendBase):
    """OpenAI, or any service speaking its HTTP API (Together, Groq, a remote vLLM, ...)."""

    kind: Literal["openai"] = Field(description="Discriminator: an OpenAI-compatible proxy.")
    base_url: str = Field(
        default="https://api.openai.com/v1", description="API root, up to and including /v1."
    )
    max_connections: int = Field(default=256, ge=1, description="Pooled connections per replica.")
    responses_api: bool = Field(
        default=False,
        description="The upstream serves OpenAI's Responses API (`<base_url>/responses`: "
        "OpenAI, vLLM): the gateway's `/v1/responses` requests pass through, untranslated "
        "(state stays in the gateway's store: the upstream gets the whole conversation and "
        "`store: false`).",
    )

    @property
    def native_apis(self) -> frozenset[Endpoint]:
        return frozenset({"responses"}) if self.responses_api else frozenset()


class AnthropicBackendConfig(_HTTPBackendBase):
    """Anthropic's Messages API, translated to and from OpenAI chat completions; requests to
    the gateway's own `/v1/messages` pass through untranslated."""

    @property
    def native_apis(self) -> frozenset[Endpoint]:
        return frozenset({"messages"})

    kind: Literal["anthropic"] = Field(description="Discriminator: the Anthropic Messages API.")
    base_url: str = Field(default="https://api.anthropic.com", description="API root, without /v1.")
    default_max_tokens: int = Field(
        default=4096,
        ge=1,
        description="max_tokens sent when the request sets none (Anthropic requires one).",
    )


class FakeBackendConfig(_ProxyBase):
    """A scripted in-process backend for tests and demos; no model behind it."""

    kind: Literal["fake"] = Field(description="Discriminator: the fake backend.")
    reply: str = Field(
        default="", description="Fixed answer; empty echoes the last user message back."
    )
    latency_ms: float = Field(default=0.0, ge=0, description="Delay before the first token.")
    token_interval_ms: float = Field(default=0.0, ge=0, description="Delay between tokens.")
    fail_status: int | None = Field(
        default=None, ge=400, le=599, description="Fail requests with this status."
    )
    fail_times: int | None = Field(
        default=None,
        ge=1,
        description="Fail only the first this many requests with `fail_status` (unset: all).",
    )
    fail_after_tokens: int | None = Field(
        default=None,
        ge=0,
        description="Streams break off with an upstream error after this many tokens.",
    )
    drift_after_calls: int | None = Field(
        default=None,
        ge=0,
        description="After this many calls, answer `drift_reply` instead of `reply`: a model "
        "whose behaviour changed (drift monitors' tests and demos).",
    )
    drift_reply: str = Field(default="", description="The answer once it has drifted.")
