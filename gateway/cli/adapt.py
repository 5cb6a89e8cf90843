"""`python -m gateway dataset` (training pairs from the request log and feedback) and
`python -m gateway finetune` (a LoRA adapter from them). See llmops/_dataset.py and
llmops/_finetune.py."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from gateway.config import PROJECT_ROOT, GatewayConfig
from llmops import Ledger, parse_since


def add_commands(commands: Any) -> None:
    dataset = commands.add_parser("dataset", help="export prompt/answer pairs from traffic")
    dataset.set_defaults(run=run_dataset)
    dataset.add_argument("--config", default="configs/local.yaml", help="names log and ledger")
    dataset.add_argument("--request-log", default=None, help="instead of the config's")
    dataset.add_argument("--ledger", default=None, help="instead of the config's")
    dataset.add_argument("--since", default=None, help="Unix time, ISO 8601 or e.g. 7d")
    dataset.add_argument("--min-score", type=float, default=None, help="feedback at least this")
    dataset.add_argument("--task", default=None)
    dataset.add_argument("--heldout-percent", type=int, default=10)
    dataset.add_argument("--out", required=True)
    tune = commands.add_parser("finetune", help="train a LoRA adapter on a dataset")
    tune.set_defaults(run=run_finetune)
    tune.add_argument("--base", required=True, help="the model folder (transformers format)")
    tune.add_argument("--data", required=True, help="JSONL: messages + expected")
    tune.add_argument("--out", required=True, help="the adapter folder to write")
    tune.add_argument("--steps", type=int, default=60)
    tune.add_argument("--batch-size", type=int, default=8)
    tune.add_argument("--learning-rate", type=float, default=2e-3)
    tune.add_argument("--rank", type=int, default=8)
    tune.add_argument("--seed", type=int, default=0)


def run_dataset(args: argparse.Namespace) -> int:
    from llmops import export_dataset

    if args.request_log and args.ledger:
        log, ledger_path = Path(args.request_log), Path(args.ledger)
    else:
        config = GatewayConfig.load(args.config)
        log = Path(args.request_log or PROJECT_ROOT / config.request_log.path)
        ledger_path = Path(args.ledger or PROJECT_ROOT / config.ledger.path)
    try:
        since = parse_since(args.since)
    except ValueError as exc:
        print(f"--since: {exc}", file=sys.stderr)
        return 2
    scores: dict[str, float] = {}
    if ledger_path.exists():
        ledger = Ledger(ledger_path)
        scores = ledger.feedback_scores()
        ledger.close()
    result = export_dataset(
        log,
        scores,
        Path(args.out),
        since=since,
        min_score=args.min_score,
        task=args.task,
        heldout_percent=args.heldout_percent,
    )
    print(
        f"{result.train_examples} training and {result.heldout_examples} held-out examples "
        f"({result.train}, {result.heldout}) from {result.read} logged requests"
    )
    if result.without_body:
        print(
            f"{result.without_body} answered requests were logged without bodies "
            "(set request_log.bodies: true to collect them)",
            file=sys.stderr,
        )
    return 0 if result.train_examples else 1


def run_finetune(args: argparse.Namespace) -> int:
    from llmops import FinetuneConfig, finetune

    config = FinetuneConfig(
        base=Path(args.base),
        data=Path(args.data),
        out=Path(args.out),
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        rank=args.rank,
        seed=args.seed,
    )
    started = time.perf_counter()

    def progress(step: int, steps: int, loss: float) -> None:
        done = int(30 * step / steps)
        elapsed = time.perf_counter() - started
        bar = "#" * done + "." * (30 - done)
        print(f"\r[{bar}] {step}/{steps} loss {loss:.3f} {elapsed:.0f}s", end="", flush=True)

    try:
        result = finetune(config, progress)
    except (OSError, ValueError) as exc:
        print(f"finetune: {exc}", file=sys.stderr)
        return 2
    print(
        f"\nadapter written to {result.out}: {result.steps} steps "
        f"(resumed at {result.resumed_from}), loss {result.first_loss:.3f} -> "
        f"{result.last_loss:.3f}, {result.seconds:.0f} s, {result.adapter_bytes / 2**20:.1f} MiB"
    )
    return 0
