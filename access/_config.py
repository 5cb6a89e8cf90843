"""The `auth:` section of the gateway config, owned by `access`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class AuthConfig(BaseModel):
    """Who may call the gateway, and how limits are shared between ingress replicas."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["keys", "none"] | None = Field(
        default=None,
        description="`keys`: every request needs a virtual key (or the master key); `none`: no "
        "authentication. Unset: `none`, allowed only while every listener is on loopback.",
    )
    master_key_env: str = Field(
        default="GATEWAY_MASTER_KEY",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the master (admin) key. Never put the key "
        "itself in the config file.",
    )
    allow_open: bool = Field(
        default=False,
        description="With `mode: none`, allow listening on a non-loopback address without "
        "authentication (for a gateway behind your own authenticating proxy).",
    )
    store_path: str = Field(
        default="var/access.sqlite",
        description="SQLite file of keys, teams and spend, on the node running the access "
        "state deployment; relative paths resolve against the project root.",
    )
    on_state_unavailable: Literal["fail_closed", "fail_open"] = Field(
        default="fail_closed",
        description="When the shared state cannot be reached: `fail_closed` answers 503; "
        "`fail_open` serves keys this replica already knows on their last record and the "
        "leases it holds, counting use locally until the state is back.",
    )
    lease_fraction: float = Field(
        default=0.05,
        gt=0,
        le=0.5,
        description="Share of a limit one replica takes per lease (at least 1 request or "
        "token). Worst-case overshoot of a per-minute limit is replicas x lease size.",
    )
    lease_ttl_s: float = Field(
        default=2.0, gt=0, le=60, description="A lease not renewed by then goes back."
    )
    sync_interval_s: float = Field(
        default=0.25,
        gt=0,
        le=1,
        description="How often each replica fetches key changes (revocations take effect "
        "within this) and returns idle leases.",
    )
    state_timeout_s: float = Field(
        default=2.0, gt=0, description="Timeout of one call to the shared state."
    )
    budgeted_max_parallel: int | None = Field(
        default=16,
        ge=1,
        description="Requests in flight at once for a key or team with a budget and no "
        "max_parallel of its own (None: no default cap).",
    )
    budgeted_max_tokens: int = Field(
        default=4096,
        ge=1,
        description="The output limit (`max_tokens`) a request from a key or team with a "
        "budget gets when it sets none (within the backend's context window), so that its "
        "worst case can be reserved against the budget before it runs.",
    )
    state_node: str | None = Field(
        default=None,
        description="A Ray resource pinning the state deployment (and its SQLite file) to one "
        "node: `node:__internal_head__` is the head node's; or a custom resource of yours.",
    )

    @property
    def keys(self) -> bool:
        return self.mode == "keys"
