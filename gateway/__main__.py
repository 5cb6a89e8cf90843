"""Command line.

`python -m gateway check configs/local.yaml` validates a config file the way the deploy will
(plus duplicate YAML keys, which `serve run` itself silently merges).
`python -m gateway report --experiment ab1 [--since 7d] [--format table|json|html]` reports an
A/B experiment from the cost ledger (`--ledger PATH`, or the one `--config` names).
`python -m gateway serve configs/local.yaml [--dashboard]` is `serve run` on a fresh local
Ray cluster without the Ray dashboard (`make serve` uses it; docs/performance.md).
`python -m gateway keys|teams create|list|get|update|revoke ...` calls the admin API
(gateway/keys_cli.py).
`python -m gateway eval|dataset|finetune ...`: the adaptation loop (gateway/eval_cli.py,
gateway/adapt_cli.py).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from gateway import adapt_cli, eval_cli, keys_cli
from gateway.config import ConfigError, GatewayConfig, load_yaml
from gateway.exposure import check_exposure, loopback_haproxy, serve_file_hosts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="validate a Serve config file")
    check.add_argument("paths", nargs="+")
    report = commands.add_parser("report", help="report an A/B experiment from the ledger")
    report.add_argument("--experiment", required=True)
    report.add_argument("--since", default=None, help="Unix time, ISO 8601 or e.g. 7d")
    report.add_argument("--format", choices=("table", "json", "html"), default="table")
    report.add_argument("--ledger", default=None, help="SQLite ledger file")
    report.add_argument("--config", default="configs/local.yaml", help="config naming the ledger")
    report.add_argument("--output", default=None, help="write here instead of stdout")
    serve = commands.add_parser("serve", help="serve a config, like `serve run`")
    serve.add_argument("config")
    serve.add_argument(
        "--dashboard",
        action="store_true",
        help="start the Ray dashboard too (for `serve status`, `serve deploy`, the web UI)",
    )
    keys_cli.add_commands(commands)
    eval_cli.add_commands(commands)
    adapt_cli.add_commands(commands)
    args = parser.parse_args(argv)
    if args.command in ("keys", "teams"):
        return keys_cli.run(args)
    if args.command == "eval":
        return eval_cli.run(args)
    if args.command == "dataset":
        return adapt_cli.run_dataset(args)
    if args.command == "finetune":
        return adapt_cli.run_finetune(args)
    if args.command == "report":
        return _report(args)
    if args.command == "serve":
        return _serve(args.config, args.dashboard)
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


def _serve(config_path: str, dashboard: bool) -> int:
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


def _report(args: argparse.Namespace) -> int:
    import orjson

    from gateway.config import PROJECT_ROOT
    from llmops import Ledger, build_report, parse_since, render_html, render_table

    if args.ledger:
        path = Path(args.ledger)
    else:
        try:
            path = PROJECT_ROOT / GatewayConfig.load(args.config).ledger.path
        except ConfigError as exc:
            print(f"{args.config}: {exc}", file=sys.stderr)
            return 2
    if not path.exists():
        print(f"no ledger at {path}", file=sys.stderr)
        return 2
    try:
        since = parse_since(args.since)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    ledger = Ledger(path)
    result = build_report(ledger, args.experiment, since)
    ledger.close()
    if args.format == "json":
        text = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
    elif args.format == "html":
        text = render_html(result)
    else:
        text = render_table(result)
    if args.output:
        Path(args.output).write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
