"""`gateway check CONFIG...`: validate config files the way the deploy will (plus duplicate
YAML keys, which `serve run` itself silently merges, and listeners unsafe for the auth)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from gateway.config import ConfigError, GatewayConfig, load_yaml
from gateway.serve.exposure import check_exposure, serve_file_hosts


def add_commands(commands: Any) -> None:
    check = commands.add_parser("check", help="validate a Serve config file")
    check.add_argument("paths", nargs="+")
    check.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    failed = False
    for path in args.paths:
        try:
            config = load_checked(path)
        except ConfigError as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            failed = True
            continue
        print(f"{path}: ok ({len(config.backends)} backends, {len(config.routes)} routes)")
    return 1 if failed else 0


def load_checked(path: str) -> GatewayConfig:
    """The gateway config in a file, and whether the file's listeners are safe with its auth
    settings (Serve's HAProxy mode, when on, binds every interface unless told a host)."""
    config = GatewayConfig.load(path)
    data = load_yaml(Path(path))
    if isinstance(data, dict) and "applications" in data:
        haproxy = os.environ.get("RAY_SERVE_ENABLE_HA_PROXY", "0") == "1"
        check_exposure(config.auth, serve_file_hosts(data, haproxy))
    return config
