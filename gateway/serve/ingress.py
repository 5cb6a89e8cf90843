"""The Serve adapter: one deployment class that builds a `Gateway`, serves it over HTTP and
closes it on shutdown; and `build_app`, the application builder `gateway.app` re-exports for
the configs (`import_path: gateway.app:build_app`)."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from ray import serve

from deployments import hosted_by
from deployments.serving import connect_backend, plan_backend
from gateway.config import PROJECT_ROOT, ConfigError, GatewayConfig
from gateway.core.build import build_gateway
from gateway.http.app import create_app
from gateway.serve.exposure import check_exposure, check_haproxy, running_serve_hosts
from gateway.serve.keystore import key_gate, master_key, state_application
from gateway.serve.recordstore import HandleRecordsTransport, records_application
from gateway.serve.status import replica_states
from llmops import GatewayMetrics

if TYPE_CHECKING:
    from ray.serve.deployment import Application
    from ray.serve.handle import DeploymentHandle

logger = logging.getLogger("ray.serve")
__all__ = ["PROJECT_ROOT", "GatewayIngress", "build_app"]


def replica_name() -> str:
    """This ingress replica as its records name it: its Ray node (the id's first 12 hex
    digits, as `ray status` shows them) and Serve's replica id."""
    import ray

    node = ray.get_runtime_context().get_node_id()[:12]
    return f"{node}/{serve.get_replica_context().replica_id.unique_id}"


def leads_monitors() -> bool:
    """Whether this replica runs the drift monitors' schedules: Serve's rank 0 (one replica
    at a time; ranks are given again as replicas come and go)."""
    try:
        return int(serve.get_replica_context().rank.rank) == 0
    except Exception:  # no rank from this Serve: every replica would run them; the first does
        return True


def serve_request_id(request: Request) -> str:
    """Serve's id for the request (the client's `x-request-id`, or a new one), which its
    proxy also puts in the response's `x-request-id` header."""
    try:
        return str(serve.context._get_serve_request_context().request_id)
    except Exception:  # no Serve request context: the header is all there is
        return request.headers.get("x-request-id") or ""


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=1024)
@serve.ingress()
class GatewayIngress:
    """Builds the gateway in the replica; Serve's graceful shutdown lets requests in flight
    finish, then `__del__` writes every record still queued."""

    def __init__(
        self,
        config: dict[str, Any],
        handles: dict[str, DeploymentHandle[Any]],
        unavailable: dict[str, str],
        facts: dict[str, dict[str, str]] | None = None,
        access_state: DeploymentHandle[Any] | None = None,
        records: DeploymentHandle[Any] | None = None,
    ) -> None:
        self.config = GatewayConfig.load(config)
        check_exposure(self.config.auth, running_serve_hosts() or ())
        check_haproxy(os.environ)
        backends = {
            name: connect_backend(
                name, backend, handles.get(hosted_by(name)), unavailable.get(name, "")
            )
            for name, backend in self.config.backends.items()
        }
        self.gateway, self.ledger = build_gateway(
            self.config,
            backends,
            PROJECT_ROOT,
            unavailable=unavailable,
            metrics=GatewayMetrics(),
            keys=key_gate(self.config.auth, access_state),
            replica_states=replica_states,
            records=None if records is None else HandleRecordsTransport(records),
            ingress=replica_name(),
        )
        self.facts = facts or {}
        self.gateway.start(monitors=leads_monitors())

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_app(
            self.gateway,
            self.config,
            self.ledger,
            request_id=serve_request_id,
            replica_states=replica_states,
            facts=self.facts,
        )

    async def __del__(self) -> None:
        gateway = getattr(self, "gateway", None)  # None: `__init__` failed (Serve still calls this)
        if gateway is not None:
            await gateway.aclose()  # after Serve ran the app's lifespan shutdown


def check_adapters(config: GatewayConfig) -> None:
    """An adapter folder vLLM cannot load would stop its engine from starting: say so now."""
    problems = []
    for name, backend in config.backends.items():
        for adapter, settings in getattr(backend, "adapters", {}).items():
            folder = settings.resolved_path(PROJECT_ROOT)
            if not (folder / "adapter_config.json").is_file():
                problems.append(
                    f"backends.{name}.adapters.{adapter}.path: no adapter at {folder} (an "
                    "adapter_config.json is missing; `python -m gateway finetune` writes one)"
                )
    if problems:
        raise ConfigError("\n".join(problems))


def build_app(args: dict[str, Any]) -> Application:
    """Serve application builder: validates the config, then binds one deployment per backend
    and the ingress. Config mistakes raise here, so the deploy fails with the field path."""
    config = GatewayConfig.load(args)
    check_exposure(config.auth, running_serve_hosts() or ())  # when Serve is already up
    check_haproxy(os.environ)
    if config.auth.keys:
        master_key(config.auth)  # fail the deploy here, not in every replica
    try:
        config.database.url()  # its variable must be set where the gateway runs
    except ValueError as exc:
        raise ConfigError(f"database.url_env: {exc}") from None
    applications: dict[str, Application] = {}
    unavailable: dict[str, str] = {}
    facts: dict[str, dict[str, str]] = {}
    check_adapters(config)
    for name, backend in config.backends.items():
        if name != hosted_by(name):
            continue  # an adapter: served by its backend's replicas
        plan = plan_backend(name, backend, PROJECT_ROOT)
        if plan.facts:
            facts[name] = plan.facts
            told = ", ".join(f"{key}={value}" for key, value in plan.facts.items())
            logger.info("backend %s: %s", name, told)
        if plan.unavailable_reason:
            unavailable[name] = plan.unavailable_reason
            logger.warning("backend %s is unavailable: %s", name, plan.unavailable_reason)
        elif plan.application is not None:
            applications[name] = plan.application
    for name in config.backends:
        base = hosted_by(name)
        if base in unavailable and name != base:
            unavailable[name] = f"its backend {base!r} is unavailable: {unavailable[base]}"
    options = config.ingress.deployment.serve_options()
    options["logging_config"] = {"enable_access_log": config.ingress.serve_access_log}
    state = state_application(config.auth, config.database) if config.auth.keys else None
    records = records_application(config)
    # The config as written (`exclude_unset`): the replica validates what the user said, so a
    # check that depends on whether a section was given agrees with this one.
    written = config.model_dump(mode="json", exclude_unset=True)
    application: Application = GatewayIngress.options(**options).bind(  # type: ignore[attr-defined]
        written, applications, unavailable, facts, state, records
    )
    return application
