"""`gateway serve CONFIG [--dashboard]`: `serve run` on a fresh local Ray cluster without the
Ray dashboard (`make serve` uses it; docs/performance.md)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any

from gateway.cli.check import load_checked
from gateway.config import ConfigError
from gateway.serve.exposure import loopback_haproxy


def add_commands(commands: Any) -> None:
    serve = commands.add_parser("serve", help="serve a config, like `serve run`")
    serve.add_argument("config")
    serve.add_argument(
        "--dashboard",
        action="store_true",
        help="start the Ray dashboard too (for `serve status`, `serve deploy`, the web UI)",
    )
    serve.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return serve_config(args.config, args.dashboard)


def serve_config(config_path: str, dashboard: bool) -> int:
    """`serve run CONFIG`, on a local Ray cluster started here unless RAY_ADDRESS names one.

    Started here, the cluster leaves out the dashboard's head processes (about 250 MB here):
    the gateway does not use them, and Ray's Prometheus endpoint (the per-node agent) stays.
    `serve run` keeps the cluster it finds, so everything else is `serve run`'s own behaviour.
    """
    try:
        load_checked(config_path)
    except ConfigError as exc:
        print(f"{config_path}: {exc}", file=sys.stderr)
        return 2
    import ray
    from ray.serve._private.constants import SERVE_NAMESPACE
    from ray.serve.scripts import cli

    if os.environ.get("RAY_ADDRESS", "local") == "local":
        loopback_haproxy(os.environ)  # before the cluster starts: its processes inherit it
        ray.init(
            address="local",
            namespace=SERVE_NAMESPACE,
            include_dashboard=dashboard,
            log_to_driver=True,
        )
    with contextlib.suppress(KeyboardInterrupt):  # serve run shut Serve down already
        cli.main(["run", config_path], prog_name="serve", standalone_mode=False)
    return 0
