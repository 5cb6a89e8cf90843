"""The shared access state as a Serve deployment (one replica, owning the SQLite file of keys,
teams and spend), and the transport an ingress replica reaches it through."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ray import serve

from access import AccessClient, AccessState, AuthConfig, Op, Transport
from gateway.config import PROJECT_ROOT, ConfigError
from gateway.core.keys import KeyGate
from gateway.core.stores import open_store
from storage import DatabaseConfig

if TYPE_CHECKING:
    from ray.serve.deployment import Application
    from ray.serve.handle import DeploymentHandle

MASTER_KEY_MIN_CHARS = 16


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=4096)
class AccessStateDeployment:
    """A thin wrapper: every operation is `AccessState.call`. Its methods run on the
    replica's event loop one at a time, so the state needs no locks."""

    def __init__(self, auth: dict[str, Any], database: dict[str, Any]) -> None:
        config = AuthConfig.model_validate(auth)
        settings = DatabaseConfig.model_validate(database)
        self.state = AccessState(
            open_store(settings, PROJECT_ROOT / config.store_path),
            config.lease_fraction,
            config.lease_ttl_s,
            budgeted_max_parallel=config.budgeted_max_parallel,
        )

    def call(self, op: Op, payload: dict[str, Any]) -> dict[str, Any]:
        return self.state.call(op, payload)

    def __del__(self) -> None:
        self.state.close()


class HandleTransport(Transport):
    def __init__(self, handle: DeploymentHandle[Any]) -> None:
        self.handle = handle

    async def call(self, op: Op, payload: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = await self.handle.call.remote(op, payload)
        return answer


def state_application(auth: AuthConfig, database: DatabaseConfig) -> Application:
    options: dict[str, Any] = {}
    if auth.state_node:
        options["ray_actor_options"] = {"num_cpus": 0, "resources": {auth.state_node: 0.001}}
    app: Application = AccessStateDeployment.options(**options).bind(  # type: ignore[attr-defined]
        auth.model_dump(mode="json"), database.model_dump(mode="json")
    )
    return app


def master_key(auth: AuthConfig) -> str:
    """The master key from its environment variable; a clear deploy error without it."""
    value = os.environ.get(auth.master_key_env, "")
    if len(value) < MASTER_KEY_MIN_CHARS:
        problem = "is not set" if not value else f"is shorter than {MASTER_KEY_MIN_CHARS} chars"
        raise ConfigError(
            f"auth.master_key_env: environment variable {auth.master_key_env} {problem} where "
            "the gateway runs (auth mode `keys` needs a master key; never put it in the config)"
        )
    return value


def key_gate(auth: AuthConfig, handle: DeploymentHandle[Any] | None) -> KeyGate | None:
    """The ingress replica's keys step, or None without keys."""
    if not auth.keys:
        return None
    if handle is None:
        raise ConfigError("auth: keys are on but no access state was deployed")
    client = AccessClient(auth, HandleTransport(handle), master_key(auth))
    return KeyGate(client)
