"""The gateway against the floor of what Python can do, under closed-loop load.

Starts an instant upstream (`bench/stub_upstream.py`), the bare relay (`bench/relay.py`) and
the gateway as users run it (`serve run`, HAProxy ingress, a proxy backend in the ingress,
the default placement, and one with `placement: deployment`). Then, in interleaved rounds,
each target gets c=1 and c=32 closed-loop load, streamed and not. Prints JSON and a table:
added latency over calling the upstream directly (p50/p99), its ratio to the relay's,
requests/s, CPU ms per request (everything but the load generator and the upstream), and the
PSS of each target.

Run: make bench   (or .venv/bin/python bench/floor.py --rounds 2)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import loadgen  # noqa: E402
from tests.helpers import cluster_env, free_port, stop_process, wait_until  # noqa: E402

BODY = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 16}
LOADS = ((1, 4), (32, 5))  # (connections, seconds of load per round)


def start(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env or dict(os.environ),
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def pss_mb(pid: int) -> float:
    total = 0
    for process in tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += process.memory_full_info().pss
    return round(total / 2**20, 1)


def cpu_s(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
        except psutil.NoSuchProcess:
            pass
    return total


def busy_cpu_s() -> float:
    times = psutil.cpu_times()
    return times.user + times.system + times.nice + times.irq + times.softirq


def measure(url: str, model: str, stream: bool, connections: int, seconds: float,
            excluded: list[psutil.Process]) -> dict[str, float]:  # fmt: skip
    """Closed-loop load from wrk; CPU ms per request is the machine's busy time less wrk's and
    the excluded processes' (the upstream's)."""
    body = {**BODY, "model": model, "stream": stream}
    me = psutil.Process()
    busy, others = busy_cpu_s(), cpu_s([me, *excluded])
    outcome = loadgen.run(url, body, connections, seconds)
    cpu = (busy_cpu_s() - busy) - (cpu_s([me, *excluded]) - others) - outcome["generator_cpu_s"]
    if outcome["failed"]:
        raise RuntimeError(f"{url} {model}: {outcome['failed']} requests failed")
    requests = outcome["rps"] * seconds
    return {
        "p50_ms": outcome["p50_ms"],
        "p99_ms": outcome["p99_ms"],
        "rps": outcome["rps"],
        "cpu_ms_per_request": max(0.0, cpu) * 1000 / requests,
    }


def serve_app(port: int, args: dict[str, Any]) -> dict[str, Any]:
    """A Serve config running the gateway with `args` on 127.0.0.1:`port`."""
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [{"name": "gateway", "route_prefix": "/",
                          "import_path": "gateway.app:build_app", "args": args}],
    }  # fmt: skip


def gateway_config(port: int, upstream: str, folder: Path, replicas: int = 1) -> dict[str, Any]:
    backends = {
        "proxy": {"kind": "openai", "model": "stub", "base_url": upstream},
        "proxy-deployment": {"kind": "openai", "model": "stub", "base_url": upstream,
                             "placement": "deployment"},
    }  # fmt: skip
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [{
            "name": "gateway", "route_prefix": "/", "import_path": "gateway.app:build_app",
            "args": {"backends": backends,
                     "ledger": {"path": str(folder / "ledger.sqlite")},
                     "request_log": {"path": str(folder / "requests.jsonl")},
                     "ingress": {"deployment": {"num_replicas": replicas}}},
        }],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ingress-replicas", type=int, default=1)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-floor-"))
    stub_port, relay_port, gateway_port = free_port(), free_port(), free_port()
    upstream = f"http://127.0.0.1:{stub_port}/v1"
    python = sys.executable
    stub = start([python, "bench/stub_upstream.py", "--port", str(stub_port)], folder / "stub.log")
    relay = start([python, "bench/relay.py", "--port", str(relay_port), "--upstream", upstream],
                  folder / "relay.log")  # fmt: skip
    config = folder / "serve.yaml"
    config.write_text(
        yaml.safe_dump(gateway_config(gateway_port, upstream, folder, args.ingress_replicas))
    )
    env = {**os.environ, **cluster_env(), "RAY_ADDRESS": "local",
           "RAY_OVERRIDE_RESOURCES": '{"CPU": 8}'}  # fmt: skip
    gateway = start([python, "-m", "gateway", "serve", str(config)], folder / "serve.log", env)
    targets = {
        "direct": (f"{upstream}/chat/completions", "stub"),
        "relay": (f"http://127.0.0.1:{relay_port}/v1/chat/completions", "stub"),
        "gateway": (f"http://127.0.0.1:{gateway_port}/v1/chat/completions", "proxy"),
        "gateway-deployment": (f"http://127.0.0.1:{gateway_port}/v1/chat/completions",
                               "proxy-deployment"),
    }  # fmt: skip
    results: dict[str, list[dict[str, float]]] = {}
    try:
        for name, (url, model) in targets.items():
            wait_until(lambda url=url, model=model: httpx.post(url, json={**BODY, "model": model},
                       timeout=10).status_code == 200, 300, name)  # fmt: skip
        excluded = tree(stub.pid)
        memory = {
            "relay_pss_mb_rest": pss_mb(relay.pid),
            "gateway_pss_mb_rest": pss_mb(gateway.pid),
        }
        for _ in range(args.rounds):
            for connections, seconds in LOADS:
                for stream in (False, True):
                    for name, (url, model) in targets.items():
                        key = f"{name} c={connections} {'stream' if stream else 'plain'}"
                        outcome = measure(url, model, stream, connections, seconds, excluded)
                        results.setdefault(key, []).append(outcome)
        memory |= {"relay_pss_mb_loaded": pss_mb(relay.pid),
                   "gateway_pss_mb_loaded": pss_mb(gateway.pid)}  # fmt: skip
    finally:
        for process in (gateway, relay, stub):
            stop_process(process, grace_s=60)
    print(json.dumps({"runs": results, "memory": memory}, indent=1))
    print(table(results, memory))


def table(results: dict[str, list[dict[str, float]]], memory: dict[str, float]) -> str:
    """At c=1: latency added over a direct call, and its ratio to the relay's. At c=32 the
    target, the upstream and wrk share the 2 cores, so added latency means little: throughput
    and p99, each against the relay's."""

    def median(key: str, field: str) -> float:
        return statistics.median(run[field] for run in results[key])

    lines = ["| target | load | added p50 / p99 ms (x relay) | req/s (x relay) | p99 ms "
             "(x relay) | CPU ms/req |", "|---|---|---|---|---|---|"]  # fmt: skip
    for key in results:
        name, load, kind = key.split(" ")
        direct, relay = f"direct {load} {kind}", f"relay {load} {kind}"
        added = [median(key, f) - median(direct, f) for f in ("p50_ms", "p99_ms")]
        floor = [median(relay, f) - median(direct, f) for f in ("p50_ms", "p99_ms")]
        shown = f"{added[0]:.1f} / {added[1]:.1f}"
        if load == "c=1" and name not in ("direct", "relay") and min(floor) > 0:
            shown += f" ({added[0] / floor[0]:.2f}x / {added[1] / floor[1]:.2f}x)"
        elif load != "c=1":
            shown = "-"
        rps, p99 = median(key, "rps"), median(key, "p99_ms")
        rps_ratio = rps / median(relay, "rps")
        p99_ratio = p99 / median(relay, "p99_ms")
        lines.append(
            f"| {name} | {load} {kind} | {shown} | {rps:.0f} ({rps_ratio:.2f}x) | "
            f"{p99:.1f} ({p99_ratio:.2f}x) | {median(key, 'cpu_ms_per_request'):.1f} |"
        )
    lines.append(f"\nPSS (whole process tree), MB: {memory}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
