"""What keys cost a request: the same gateway served twice in one Serve instance, once with
`auth: {mode: keys}` (a key with a requests, tokens and USD limit, so every check and lease
runs) and once without, each in front of an instant upstream. wrk at c=1, interleaved rounds;
the figure is the difference of the two p50s (and p99s).

Also times the keys step alone in process (authenticate, admit, settle; leases held), which
is what the difference should be made of.

Run: .venv/bin/python bench/keys.py --rounds 3     (docs/performance.md has the figures)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import loadgen  # noqa: E402
from bench.floor import BODY, start  # noqa: E402
from tests.helpers import cluster_env, free_port, stop_process, wait_until  # noqa: E402

MASTER_ENV = "BENCH_GATEWAY_MASTER_KEY"
LIMITS = {"rpm": 10**7, "tpm": 10**9, "budget_usd": 10**6, "budget_period": "day"}


def serve_config(port: int, upstream: str, folder: Path) -> dict[str, Any]:
    def app(name: str, auth: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": name, "route_prefix": f"/{name}", "import_path": "gateway.app:build_app",
            "args": {
                "auth": auth,
                "backends": {"proxy": {"kind": "openai", "model": "stub", "base_url": upstream}},
                "ledger": {"path": str(folder / f"{name}-ledger.sqlite")},
                "request_log": {"path": str(folder / f"{name}-requests.jsonl")},
            },
        }  # fmt: skip

    keyed = {"mode": "keys", "master_key_env": MASTER_ENV,
             "store_path": str(folder / "access.sqlite")}  # fmt: skip
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [app("open", {"mode": "none"}), app("keyed", keyed)],
    }


def in_process(samples: int) -> dict[str, float]:
    """Microseconds per request of the keys step alone (authenticate, admit, settle)."""
    from access import AccessClient, AccessState, AuthConfig, LocalTransport, Need

    async def run() -> list[float]:
        folder = Path(tempfile.mkdtemp(prefix="bench-keys-"))
        state = AccessState(folder / "access.sqlite", 0.05, 2.0)
        spec = {"name": "bench", **LIMITS}
        key = state.call("create", {"kind": "key", "spec": spec, "master": True})["ok"]["key"]
        client = AccessClient(AuthConfig(mode="keys"), LocalTransport(state), None)
        header, took = f"Bearer {key}", []
        for _ in range(samples):
            started = time.perf_counter()
            caller = await client.authenticate(header)
            client.check_model(caller, "proxy")
            ticket = await client.admit(caller, Need(tokens=20, usd=1e-6))
            client.finish(ticket, 20, 1e-6)
            took.append((time.perf_counter() - started) * 1e6)
        return took

    took = sorted(asyncio.run(run())[samples // 10 :])  # leave out the first leases
    return {
        "p50_us": round(statistics.median(took), 1),
        "p99_us": round(took[int(len(took) * 0.99)], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-keys-"))
    stub_port, gateway_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{stub_port}/v1"
    python = sys.executable
    stub = start([python, "bench/stub_upstream.py", "--port", str(stub_port)], folder / "stub.log")
    config = folder / "serve.yaml"
    config.write_text(yaml.safe_dump(serve_config(gateway_port, upstream, folder)))
    master = "sk-bench-" + secrets.token_hex(16)
    env = {**os.environ, **cluster_env(), "RAY_ADDRESS": "local",
           "RAY_OVERRIDE_RESOURCES": '{"CPU": 8}', MASTER_ENV: master}  # fmt: skip
    gateway = start([python, "-m", "gateway", "serve", str(config)], folder / "serve.log", env)
    root = f"http://127.0.0.1:{gateway_port}"
    results: dict[str, list[dict[str, float]]] = {"open": [], "keyed": []}
    try:
        admin = {"authorization": f"Bearer {master}"}
        wait_until(lambda: httpx.get(f"{root}/keyed/v1/gateway/keys", headers=admin,
                   timeout=10).status_code == 200, 300, "keyed gateway")  # fmt: skip
        created = httpx.post(f"{root}/keyed/v1/gateway/keys", headers=admin,
                             json={"name": "bench", **LIMITS}, timeout=10).json()  # fmt: skip
        headers = {"open": {}, "keyed": {"Authorization": f"Bearer {created['key']}"}}
        body = {**BODY, "model": "proxy"}
        for name in results:
            url = f"{root}/{name}/v1/chat/completions"
            wait_until(lambda url=url, name=name: httpx.post(url, json=body, headers=headers[name],
                       timeout=10).status_code == 200, 120, name)  # fmt: skip
            loadgen.run(url, body, 1, 2, headers[name])  # warm
        for _ in range(args.rounds):
            for name in results:
                url = f"{root}/{name}/v1/chat/completions"
                outcome = loadgen.run(url, body, 1, args.seconds, headers[name])
                if outcome["failed"]:
                    raise RuntimeError(f"{name}: {outcome['failed']} requests failed")
                results[name].append(outcome)
    finally:
        stop_process(gateway, grace_s=60)
        stop_process(stub)

    def median(name: str, field: str) -> float:
        return statistics.median(run[field] for run in results[name])

    summary = {
        field: {
            "open": median("open", field),
            "keyed": median("keyed", field),
            "added": round(median("keyed", field) - median("open", field), 3),
        }
        for field in ("p50_ms", "p99_ms", "rps")
    }
    print(json.dumps({"runs": results, "summary": summary, "keys_step_alone": in_process(20000)},
                     indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
