"""`gateway report --experiment NAME [--since 7d] [--format table|json|html]`: an A/B
experiment from the cost ledger (`--ledger PATH`, or the one `--config` names)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson

from gateway.config import PROJECT_ROOT, ConfigError, GatewayConfig
from llmops import Ledger, build_report, parse_since, render_html, render_table


def add_commands(commands: Any) -> None:
    report = commands.add_parser("report", help="report an A/B experiment from the ledger")
    report.add_argument("--experiment", required=True)
    report.add_argument("--since", default=None, help="Unix time, ISO 8601 or e.g. 7d")
    report.add_argument("--format", choices=("table", "json", "html"), default="table")
    report.add_argument("--ledger", default=None, help="SQLite ledger file")
    report.add_argument("--config", default="configs/local.yaml", help="config naming the ledger")
    report.add_argument("--output", default=None, help="write here instead of stdout")
    report.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
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
