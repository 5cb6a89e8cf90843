"""What the guardrail step costs, over HTTP as users run it (`gateway serve`, HAProxy ingress,
a proxy backend in the ingress over an instant upstream), at c=1, for a 1 kB prompt:

- `plain`: a route without guardrails (the baseline);
- `guarded`: the same backend behind a `pii` policy (restore mode, every default entity type):
  the prompt scanned (Presidio's recognizers, spaCy's NER), masked, the answer restored.

Each path runs twice, with a prompt carrying personal data and secrets (`pii`: a name, an
email, a phone number, a card, an IBAN, an API key; values new on every request, so the
detector's cache never answers) and with a clean one of the same length. The step's cost is
its p50 less the plain route's for the same prompts. One request of each path in turn.

Run: .venv/bin/python bench/guardrail_step.py [--rounds 3 --requests 100]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.floor import serve_app, start  # noqa: E402
from tests.helpers import cluster_env, free_port, stop_process, wait_until  # noqa: E402

FILLER = (
    "We are preparing the quarterly review for the logistics team and need a short summary "
    "of the open issues, the delivery delays in the northern region, and the plan for the "
    "next sprint. Please keep the tone neutral and list the actions with their owners. "
)


def prompt(n: int, pii: bool, rng: random.Random) -> str:
    """About 1 kB: filler text, and (`pii`) six values made new for request `n`."""
    head = ""
    if pii:
        card = "4111 1111 1111 1111" if n % 2 else "5555 5555 5555 4444"
        head = (
            f"Hello, I am Maria Gonzalez (ticket {n}). Write to maria.{n}@example.com or call "
            f"+1 415-555-01{rng.randint(10, 99)}. Card {card}, IBAN DE89 3704 0044 0532 0130 "
            f"00. My key is sk-proj-{rng.getrandbits(128):032x}. "
        )
    text = head + f"[{n}] " + FILLER * 5
    return text[:1024]


def bodies(route: str, pii: bool) -> Iterator[dict[str, Any]]:
    rng = random.Random(route)
    for n in itertools.count():
        yield {"model": route, "max_tokens": 16,
               "messages": [{"role": "user", "content": prompt(n, pii, rng)}]}  # fmt: skip


def config(port: int, upstream: str, folder: Path) -> dict[str, Any]:
    args = {
        "backends": {"proxy": {"kind": "openai", "model": "stub", "base_url": upstream},
                     "external": {"kind": "openai", "model": "stub", "base_url": upstream}},
        "routes": {"plain": {"candidates": ["proxy"]}, "guarded": {"candidates": ["external"]}},
        "default_route": "plain",
        "guardrails": {"policies": {"pii": {"pii": {"mode": "restore"}}},
                       "backends": {"external": ["pii"]}},
        "ledger": {"path": str(folder / "ledger.sqlite")},
        "request_log": {"path": str(folder / "requests.jsonl")},
    }  # fmt: skip
    return serve_app(port, args)


def timed(client: httpx.Client, url: str, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    response = client.post(url, json=body)
    took = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"{response.status_code} {response.text}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-guardrails-"))
    stub_port, port = free_port(), free_port()
    python = sys.executable
    stub = start([python, "bench/stub_upstream.py", "--port", str(stub_port)], folder / "stub.log")
    settings = config(port, f"http://127.0.0.1:{stub_port}/v1", folder)
    (folder / "serve.yaml").write_text(yaml.safe_dump(settings))
    env = {**os.environ, **cluster_env(), "RAY_ADDRESS": "local",
           "RAY_OVERRIDE_RESOURCES": '{"CPU": 8}'}  # fmt: skip
    gateway = start([python, "-m", "gateway", "serve", str(folder / "serve.yaml")],
                    folder / "serve.log", env)  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    streams = {f"{route} {kind}": bodies(route, kind == "pii")
               for route in ("plain", "guarded") for kind in ("pii", "clean")}  # fmt: skip
    results: dict[str, list[float]] = {name: [] for name in streams}
    try:
        with httpx.Client(timeout=30) as client:
            probe = next(bodies("guarded", True))
            wait_until(lambda: client.post(url, json=probe).status_code == 200, 600, "gateway")
            for source in streams.values():  # warm every path
                for _ in range(20):
                    timed(client, url, next(source))
            for _ in range(args.rounds * args.requests):
                for name, source in streams.items():
                    results[name].append(timed(client, url, next(source)))
    finally:
        stop_process(gateway, grace_s=60)
        stop_process(stub)
    summary = {
        name: {"p50_ms": statistics.median(v), "p99_ms": sorted(v)[int(len(v) * 0.99) - 1]}
        for name, v in results.items()
    }
    for name, figures in summary.items():
        kind = name.split()[1]
        figures["added_p50_ms"] = figures["p50_ms"] - summary[f"plain {kind}"]["p50_ms"]
    print(json.dumps(summary, indent=1))
    print("| path | p50 ms | p99 ms | p50 less plain's, ms |\n|---|---|---|---|")
    for name, f in summary.items():
        print(f"| {name} | {f['p50_ms']:.2f} | {f['p99_ms']:.2f} | {f['added_p50_ms']:+.2f} |")


if __name__ == "__main__":
    main()
