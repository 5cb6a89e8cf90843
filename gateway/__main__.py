"""Command line: `python -m gateway check configs/local.yaml` validates a config file the way
the deploy will (plus duplicate YAML keys, which `serve run` itself silently merges)."""

from __future__ import annotations

import argparse
import sys

from gateway.config import ConfigError, GatewayConfig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="validate a Serve config file")
    check.add_argument("paths", nargs="+")
    args = parser.parse_args(argv)
    failed = False
    for path in args.paths:
        try:
            config = GatewayConfig.load(path)
        except ConfigError as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            failed = True
            continue
        print(f"{path}: ok ({len(config.backends)} backends, {len(config.routes)} routes)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
