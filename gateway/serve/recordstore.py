"""The records owner as a Serve deployment (`ledger.scope: cluster`): one replica writes the
ledger and request log of every ingress replica in the cluster, and the transport an ingress
replica reaches it through."""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any

from ray import serve

from gateway.config import PROJECT_ROOT, GatewayConfig
from llmops import (
    LedgerConfig,
    RecordsOp,
    RecordsOwner,
    RecordsTransport,
    RequestLogConfig,
    open_ledger,
    open_request_log,
)

if TYPE_CHECKING:
    from ray.serve.deployment import Application
    from ray.serve.handle import DeploymentHandle

# How long the owner outlives a shutdown that began while it was idle: the ingress replicas
# stopping beside it ship their last records meanwhile (later ones are spooled on their host).
OWNER_LINGER_S = 5.0
CALL_TIMEOUT_S = 10.0


@serve.deployment(
    num_replicas=1,
    ray_actor_options={"num_cpus": 0},
    max_ongoing_requests=1024,
    graceful_shutdown_wait_loop_s=OWNER_LINGER_S,
)
class RecordsDeployment:
    """A thin wrapper: every operation is `RecordsOwner.call`."""

    def __init__(self, ledger_config: dict[str, Any], log_config: dict[str, Any]) -> None:
        ledger = LedgerConfig.model_validate(ledger_config)
        log = RequestLogConfig.model_validate(log_config)
        self.owner = RecordsOwner(
            open_ledger(ledger, PROJECT_ROOT / ledger.path) if ledger.enabled else None,
            open_request_log(log, PROJECT_ROOT / log.path) if log.enabled else None,
        )

    def call(self, op: RecordsOp, payload: dict[str, Any]) -> Any:
        return self.owner.call(op, payload)

    def __del__(self) -> None:
        self.owner.close()


class HandleRecordsTransport(RecordsTransport):
    """Blocking calls through the owner's handle, made from the records writer thread or a
    read run in a thread. The handle call itself runs on the replica's event loop: in Serve's
    throughput-optimized mode the handle's router lives on that loop, not a thread of its own."""

    def __init__(self, handle: DeploymentHandle[Any]) -> None:
        """Made on the replica's event loop (its constructor runs there)."""
        self.handle = handle
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()

    async def _call(self, op: RecordsOp, payload: dict[str, Any]) -> Any:
        return await self.handle.call.remote(op, payload)

    def call(self, op: RecordsOp, payload: dict[str, Any]) -> Any:
        if threading.get_ident() == self.loop_thread:
            raise RuntimeError("records calls block: make them from a thread, not the loop")
        future = asyncio.run_coroutine_threadsafe(self._call(op, payload), self.loop)
        try:
            return future.result(CALL_TIMEOUT_S)
        except BaseException:
            future.cancel()
            raise


def records_application(config: GatewayConfig) -> Application | None:
    """The owner's deployment when the config keeps one ledger for the cluster."""
    if config.ledger.scope != "cluster":
        return None
    if not (config.ledger.enabled or config.request_log.enabled):
        return None
    options: dict[str, Any] = {}
    if config.ledger.owner_node:
        options["ray_actor_options"] = {
            "num_cpus": 0,
            "resources": {config.ledger.owner_node: 0.001},
        }
    # Only its own sections: a change elsewhere in the config does not restart the owner.
    app: Application = RecordsDeployment.options(**options).bind(  # type: ignore[attr-defined]
        config.ledger.model_dump(mode="json"), config.request_log.model_dump(mode="json")
    )
    return app
