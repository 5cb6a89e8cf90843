"""The Serve entry point the configs name (`import_path: gateway.app:build_app`): the ingress
deployment and its application builder, from `gateway.serve.ingress`."""

from gateway.config import PROJECT_ROOT
from gateway.serve.ingress import GatewayIngress, build_app

__all__ = ["PROJECT_ROOT", "GatewayIngress", "build_app"]
