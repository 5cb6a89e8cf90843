"""`python -m gateway eval`: send a labelled dataset through a running gateway to each
candidate (a backend, an adapter `<backend>:<adapter>`, or a route) and report score with a
95% interval, actual cost per request and latency; `--write-quality` keeps the scores in the
quality file the router reads.

Real requests through the gateway, so cost comes from the ledger's own figure for each answer
(`x-gateway-cost-usd`) and latency is what a client sees.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from gateway.config import PROJECT_ROOT, GatewayConfig
from llmops import (
    JUDGE_RUBRIC,
    SCORERS,
    CandidateResult,
    answer_text,
    eval_as_dict,
    judge_score,
    load_examples,
    render_eval_html,
    render_eval_table,
    summarise,
    write_quality,
)


def add_commands(commands: Any) -> None:
    command = commands.add_parser("eval", help="score candidates on a labelled dataset")
    command.set_defaults(run=run)
    command.add_argument("--dataset", required=True, help="JSONL: messages + expected")
    command.add_argument("--candidates", required=True, help="comma-separated model names")
    command.add_argument("--task", default="default", help="the task it measures (routing)")
    command.add_argument(
        "--metric", default="exact", help="exact | contains | json_fields | judge:<backend>"
    )
    command.add_argument(
        "--gateway", default=os.environ.get("GATEWAY_URL", "http://127.0.0.1:8000")
    )
    command.add_argument("--api-key-env", default="GATEWAY_API_KEY", help="variable with a key")
    command.add_argument("--concurrency", type=int, default=4)
    command.add_argument("--max-tokens", type=int, default=128)
    command.add_argument("--limit", type=int, default=None, help="first N examples only")
    command.add_argument("--format", choices=("table", "json", "html"), default="table")
    command.add_argument("--output", default=None, help="write the report here")
    command.add_argument(
        "--write-quality",
        nargs="?",
        const="",
        default=None,
        help="record scores as quality[task] in this file (default: the config's quality_file)",
    )
    command.add_argument("--config", default="configs/local.yaml", help="config naming it")


class Evaluator:
    def __init__(self, client: httpx.AsyncClient, args: argparse.Namespace) -> None:
        self.client = client
        self.args = args
        self.limit = asyncio.Semaphore(max(1, args.concurrency))

    async def ask(self, model: str, messages: list[Any], task: str | None) -> tuple[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "max_tokens": self.args.max_tokens,
            "temperature": 0,
        }
        if task:
            body["routing"] = {"task": task}
        async with self.limit:
            started = time.perf_counter()
            response = await self.client.post("/v1/chat/completions", json=body)
            elapsed_ms = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise RuntimeError(f"{model}: HTTP {response.status_code}: {response.text[:200]}")
        answer = response.json()["choices"][0]["message"]["content"] or ""
        return answer, (response.headers, elapsed_ms)

    async def score(self, answer: str, example: dict[str, Any]) -> float:
        metric: str = self.args.metric
        if not metric.startswith("judge:"):
            return SCORERS[metric](answer, example["expected"])
        question = example["messages"][-1]["content"]
        prompt = JUDGE_RUBRIC.format(
            question=question, expected=answer_text(example["expected"]), answer=answer
        )
        verdict, _ = await self.ask(
            metric.split(":", 1)[1], [{"role": "user", "content": prompt}], None
        )
        found = judge_score(verdict)
        return 0.0 if found is None else found

    async def candidate(self, name: str, examples: list[dict[str, Any]]) -> CandidateResult:
        async def one(example: dict[str, Any]) -> tuple[float, float, float | None, str] | None:
            try:
                answer, (headers, elapsed_ms) = await self.ask(
                    name, example["messages"], self.args.task
                )
            except (RuntimeError, httpx.HTTPError) as exc:
                print(f"error: {exc}", file=sys.stderr)
                return None
            cost = headers.get("x-gateway-cost-usd")
            backend = headers.get("x-gateway-backend", name)
            score = await self.score(answer, example)
            return score, elapsed_ms, float(cost) if cost else None, backend

        done = await asyncio.gather(*(one(example) for example in examples))
        answered = [d for d in done if d is not None]
        return summarise(
            name,
            [d[0] for d in answered],
            [d[1] for d in answered],
            [d[2] for d in answered if d[2] is not None],
            errors=len(done) - len(answered),
            backend=answered[-1][3] if answered else None,
        )


async def evaluate(
    args: argparse.Namespace, examples: list[dict[str, Any]]
) -> list[CandidateResult]:
    key = os.environ.get(args.api_key_env)
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(base_url=args.gateway, headers=headers, timeout=600) as client:
        evaluator = Evaluator(client, args)
        names = [name.strip() for name in args.candidates.split(",") if name.strip()]
        return [await evaluator.candidate(name, examples) for name in names]


def run(args: argparse.Namespace) -> int:
    metric: str = args.metric
    if metric not in SCORERS and not metric.startswith("judge:"):
        print(f"--metric: expected one of {', '.join(SCORERS)} or judge:<backend>", file=sys.stderr)
        return 2
    try:
        examples = load_examples(Path(args.dataset))[: args.limit]
    except (OSError, ValueError) as exc:
        print(f"--dataset: {exc}", file=sys.stderr)
        return 2
    results = asyncio.run(evaluate(args, examples))
    if args.format == "json":
        import json

        text = json.dumps(
            {"task": args.task, "metric": metric, "results": [eval_as_dict(r) for r in results]},
            indent=2,
        )
    elif args.format == "html":
        text = render_eval_html(results, args.task, metric)
    else:
        text = render_eval_table(results, args.task, metric)
    if args.output:
        Path(args.output).write_text(text + "\n")
    else:
        print(text)
    if args.write_quality is not None:
        path = Path(args.write_quality) if args.write_quality else _configured_quality_file(args)
        if path is None:
            print("--write-quality: the config names no quality_file; give a path", file=sys.stderr)
            return 2
        write_quality(path, results, args.task, metric, args.dataset)
        print(f"quality for task {args.task!r} written to {path}", file=sys.stderr)
    return 0 if all(r.errors < r.n for r in results) else 1


def _configured_quality_file(args: argparse.Namespace) -> Path | None:
    config = GatewayConfig.load(args.config)
    return PROJECT_ROOT / config.quality_file if config.quality_file else None
