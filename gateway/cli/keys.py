"""`python -m gateway keys|teams ...`: the admin API from a shell.

    export GATEWAY_MASTER_KEY=...            # the gateway's own master key
    python -m gateway teams create search --budget-usd 100/month --rpm 1000
    python -m gateway keys create --team search --models 'auto,smollm2' \\
        --budget-usd 20/day --rpm 600 --tpm 200000 --expires 30d
    python -m gateway keys list | get ID | update ID --rpm 100 | revoke ID

It calls the running gateway (`--url`, default $GATEWAY_URL or http://127.0.0.1:8000) with the
master key, so every check and the shared state are the server's own.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from typing import Any

DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def add_commands(commands: Any) -> None:
    for collection in ("keys", "teams"):
        parser = commands.add_parser(collection, help=f"manage the gateway's {collection}")
        parser.set_defaults(run=run)
        parser.add_argument("--url", default=os.environ.get("GATEWAY_URL", "http://127.0.0.1:8000"))
        parser.add_argument(
            "--master-key-env",
            default="GATEWAY_MASTER_KEY",
            help="environment variable holding the master key (never pass the key itself)",
        )
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create")
        if collection == "teams":
            create.add_argument("name")
        else:
            create.add_argument("--name", default=None, help="default: <team>-<date>")
            create.add_argument("--team", default=None)
            create.add_argument("--admin", action="store_true", help="an admin key")
        _limit_options(create, collection)
        actions.add_parser("list")
        for action in ("get", "revoke"):
            actions.add_parser(action).add_argument("id")
        update = actions.add_parser("update")
        update.add_argument("id")
        _limit_options(update, collection)


def _limit_options(parser: argparse.ArgumentParser, collection: str) -> None:
    parser.add_argument("--models", help="comma-separated names or globs, e.g. 'auto,gpt-4o*'")
    parser.add_argument("--budget-usd", help="e.g. 20/day, 500/month or 1000 (in total)")
    parser.add_argument("--rpm", type=int)
    parser.add_argument("--tpm", type=int)
    parser.add_argument("--max-parallel", type=int)
    parser.add_argument("--metadata", action="append", default=[], help="KEY=VALUE, repeatable")
    if collection == "keys":
        parser.add_argument("--expires", help="a duration (30d, 12h) or an ISO 8601 time")


def budget(text: str) -> tuple[float, str]:
    amount, _, period = text.partition("/")
    period = {"": "total", "d": "day", "m": "month"}.get(period, period)
    if period not in ("day", "month", "total"):
        raise ValueError(f"budget period must be day, month or total, not {period!r}")
    return float(amount), period


def expiry(text: str, now: float | None = None) -> float | str:
    match = DURATION.match(text)
    if match is None:
        return text  # an ISO 8601 time: the server validates it
    return (now or time.time()) + float(match[1]) * SECONDS[match[2]]


def spec_from(args: argparse.Namespace) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if getattr(args, "name", None):
        spec["name"] = args.name
    if getattr(args, "team", None):
        spec["team"] = args.team
    if getattr(args, "admin", False):
        spec["role"] = "admin"
    if args.models:
        spec["models"] = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.budget_usd:
        spec["budget_usd"], spec["budget_period"] = budget(args.budget_usd)
    for name in ("rpm", "tpm", "max_parallel"):
        if getattr(args, name) is not None:
            spec[name] = getattr(args, name)
    if args.metadata:
        spec["metadata"] = dict(item.partition("=")[::2] for item in args.metadata)
    if getattr(args, "expires", None):
        spec["expires_at"] = expiry(args.expires)
    return spec


def run(args: argparse.Namespace) -> int:
    import httpx
    import orjson

    master = os.environ.get(args.master_key_env)
    if not master:
        print(f"set {args.master_key_env} to the gateway's master key", file=sys.stderr)
        return 2
    try:
        spec = spec_from(args) if args.action in ("create", "update") else {}
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command == "keys" and args.action == "create" and "name" not in spec:
        spec["name"] = f"{args.team or 'key'}-{time.strftime('%Y%m%d-%H%M%S')}"
    base = f"{args.url.rstrip('/')}/v1/gateway/{args.command}"
    method, url = {
        "create": ("POST", base),
        "list": ("GET", base),
        "get": ("GET", f"{base}/{getattr(args, 'id', '')}"),
        "update": ("PATCH", f"{base}/{getattr(args, 'id', '')}"),
        "revoke": ("DELETE", f"{base}/{getattr(args, 'id', '')}"),
    }[args.action]
    headers = {"authorization": f"Bearer {master}"}
    try:
        response = httpx.request(
            method, url, headers=headers, json=spec if spec else None, timeout=30
        )
    except httpx.HTTPError as exc:
        print(f"cannot reach the gateway at {args.url}: {exc}", file=sys.stderr)
        return 1
    body = response.json() if response.content else {}
    print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
    if response.status_code >= 400:
        return 1
    if args.action == "create" and "key" in body:
        print("The key above is shown once; store it now.", file=sys.stderr)
    return 0
