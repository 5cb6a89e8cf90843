"""The `gateway` command (`python -m gateway` too): one module per subcommand, each adding
its parser with `add_commands` and its handler as the parser's `run` default.

`gateway check configs/local.yaml` validates a config file the way the deploy will.
`gateway report --experiment ab1 [--since 7d] [--format table|json|html]` reports an A/B
experiment from the cost ledger.
`gateway serve configs/local.yaml [--dashboard]` is `serve run` on a fresh local Ray cluster
without the Ray dashboard.
`gateway keys|teams create|list|get|update|revoke ...` calls the admin API.
`gateway eval|dataset|finetune ...`: the adaptation loop.
"""

from __future__ import annotations

import argparse

from gateway.cli import adapt, check, eval, keys, report, serve

COMMANDS = (check, report, serve, keys, eval, adapt)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_commands(commands)
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


__all__ = ["main"]
