"""`gateway report --experiment NAME [--since 7d] [--format table|json|html]`: an A/B
experiment from the cost ledger (`--ledger PATH`, or the one `--config` names)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from gateway.config import PROJECT_ROOT, ConfigError, GatewayConfig
from gateway.core.stores import open_store
from llmops import Ledger, build_report, parse_since, render_html, render_table
from storage import DatabaseUnavailable


def add_commands(commands: Any) -> None:
    report = commands.add_parser("report", help="report an A/B experiment from the ledger")
    report.add_argument("--experiment", required=True)
    report.add_argument("--since", default=None, help="Unix time, ISO 8601 or e.g. 7d")
    report.add_argument("--format", choices=("table", "json", "html"), default="table")
    report.add_argument("--ledger", default=None, help="SQLite ledger file (else the config's)")
    report.add_argument("--config", default="configs/local.yaml", help="config naming the ledger")
    report.add_argument("--output", default=None, help="write here instead of stdout")
    report.set_defaults(run=run)


def open_config_ledger(args: argparse.Namespace) -> Ledger | str:
    """`--ledger FILE`, or the config's ledger: its PostgreSQL database when it names one
    (`database.url_env`), else its SQLite file; a message when there is none."""
    if args.ledger:
        path = Path(args.ledger)
        return Ledger(path) if path.exists() else f"no ledger at {path}"
    try:
        config = GatewayConfig.load(args.config)
        if config.database.url_env is not None:
            return Ledger(open_store(config.database, PROJECT_ROOT / config.ledger.path))
    except (ConfigError, ValueError, DatabaseUnavailable) as exc:
        return f"{args.config}: {exc}"
    path = PROJECT_ROOT / config.ledger.path
    return Ledger(path) if path.exists() else f"no ledger at {path}"


def run(args: argparse.Namespace) -> int:
    try:
        since = parse_since(args.since)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    ledger = open_config_ledger(args)
    if isinstance(ledger, str):
        print(ledger, file=sys.stderr)
        return 2
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
