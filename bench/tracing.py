"""What tracing costs a request, over HTTP as users run it (`gateway serve`, HAProxy ingress, a
proxy backend in the ingress over an instant upstream) at c=1: two applications of one Serve
instance, the same config but `tracing.enabled`, the traced one exporting every trace
(`sample_ratio: 1`) over OTLP/HTTP to a sink in this process that reads and drops each
export. Requests go one at a time, one to each application in turn, whole and streamed.

Run: .venv/bin/python bench/tracing.py [--rounds 3 --requests 300]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.floor import start  # noqa: E402
from tests.helpers import cluster_env, free_port, stop_process, wait_until  # noqa: E402


class Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that counts what it is sent and keeps none of it."""

    exports = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        Sink.exports += 1
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def config(port: int, upstream: str, folder: Path, sink: str) -> dict[str, Any]:
    def app(name: str, tracing: bool) -> dict[str, Any]:
        args = {
            "backends": {"proxy": {"kind": "openai", "model": "stub", "base_url": upstream}},
            "tracing": {"enabled": tracing, "endpoint": sink},
            "ledger": {"path": str(folder / f"{name}-ledger.sqlite")},
            "request_log": {"path": str(folder / f"{name}-requests.jsonl")},
        }
        return {"name": name, "route_prefix": f"/{name}",
                "import_path": "gateway.app:build_app", "args": args}  # fmt: skip

    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [app("plain", False), app("traced", True)],
    }


def timed(client: httpx.Client, url: str, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    if body.get("stream"):
        with client.stream("POST", url, json=body) as response:
            for _ in response.iter_bytes():
                pass
    else:
        response = client.post(url, json=body)
    took = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"{url}: {response.status_code}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-tracing-"))
    sink = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    sink_url = f"http://127.0.0.1:{sink.server_address[1]}/v1/traces"
    stub_port, port = free_port(), free_port()
    python = sys.executable
    stub = start([python, "bench/stub_upstream.py", "--port", str(stub_port)], folder / "stub.log")
    settings = config(port, f"http://127.0.0.1:{stub_port}/v1", folder, sink_url)
    (folder / "serve.yaml").write_text(yaml.safe_dump(settings))
    env = {**os.environ, **cluster_env(), "RAY_ADDRESS": "local",
           "RAY_OVERRIDE_RESOURCES": '{"CPU": 8}'}  # fmt: skip
    gateway = start([python, "-m", "gateway", "serve", str(folder / "serve.yaml")],
                    folder / "serve.log", env)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    results: dict[str, list[float]] = {}
    counter = itertools.count()
    try:
        with httpx.Client(timeout=30) as client:
            probe = {"model": "proxy", "messages": [{"role": "user", "content": "warm"}]}
            for name in ("plain", "traced"):
                url = f"{base}/{name}/v1/chat/completions"
                wait_until(lambda u=url: client.post(u, json=probe).status_code == 200,
                           600, name)  # fmt: skip
            for _ in range(20 + args.rounds * args.requests):
                for stream in (False, True):
                    for name in ("plain", "traced"):
                        ask = [{"role": "user", "content": f"q {next(counter)}"}]
                        body = {"model": "proxy", "max_tokens": 16, "stream": stream,
                                "messages": ask}  # fmt: skip
                        took = timed(client, f"{base}/{name}/v1/chat/completions", body)
                        results.setdefault(f"{name}{' stream' if stream else ''}", []).append(took)
    finally:
        stop_process(gateway, grace_s=60)
        stop_process(stub)
        sink.shutdown()
    summary = {}
    for name, values in results.items():
        kept = sorted(values[20:])  # the first 20 of each warm up
        summary[name] = {
            "p50_ms": statistics.median(kept),
            "p99_ms": kept[int(len(kept) * 0.99) - 1],
        }
    print(json.dumps({**summary, "otlp_exports": Sink.exports}, indent=1))
    print("| path | p50 ms plain | p50 ms traced | added p50 ms | p99 ms plain | p99 ms traced |")
    print("|---|---|---|---|---|---|")
    for kind in ("", " stream"):
        plain, traced = summary[f"plain{kind}"], summary[f"traced{kind}"]
        print(f"| chat{kind or ' whole'} | {plain['p50_ms']:.2f} | {traced['p50_ms']:.2f} | "
              f"{traced['p50_ms'] - plain['p50_ms']:+.2f} | {plain['p99_ms']:.2f} | "
              f"{traced['p99_ms']:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
