"""Ray Serve's own floor: a trivial Starlette app (a fixed JSON answer) under plain uvicorn
and as a Serve replica the way the gateway runs (throughput-optimized, HAProxy, no access
log), each at c=1 with wrk, through HAProxy and on the replica's own port. What the replica
adds here, no gateway code involved, bounds what the gateway can reach on Ray Serve.

Run: .venv/bin/python bench/bare_replica.py [--rounds 2]   (needs wrk: apt-get install wrk)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
from ray import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import loadgen  # noqa: E402
from tests.helpers import cluster_env, free_port, wait_until  # noqa: E402

ANSWER = b'{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":' \
         b'"assistant","content":"hi"},"finish_reason":"stop"}]}'  # fmt: skip
BODY = {"model": "x", "messages": [{"role": "user", "content": "hello"}]}
PATH = "/v1/chat/completions"


async def chat(request: Request) -> Response:
    await request.body()
    return Response(ANSWER, media_type="application/json")


app = Starlette(routes=[Route(PATH, chat, methods=["POST"])])


@serve.deployment(logging_config={"enable_access_log": False})
@serve.ingress(app)
class Bare:
    """The app as a Serve replica, nothing else."""


def replica_url(name: str) -> str:
    """The replica's own HTTP port (direct ingress), found among its listening sockets."""
    replica = next(p for p in psutil.process_iter(["cmdline"])
                   if any(name in part for part in p.info["cmdline"] or []))  # fmt: skip
    for port in sorted({c.laddr.port for c in replica.net_connections() if c.status == "LISTEN"}):
        url = f"http://127.0.0.1:{port}{PATH}"
        try:
            if httpx.post(url, json=BODY, timeout=3).status_code == 200:
                return url
        except httpx.HTTPError:
            continue
    raise RuntimeError("no HTTP port of the replica answered")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--uvicorn-port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.uvicorn_port:  # the plain-uvicorn target, started as a child of the bench
        import uvicorn

        uvicorn.run(app, host="127.0.0.1", port=args.uvicorn_port, log_level="warning",
                    access_log=False)  # fmt: skip
        return
    os.environ.update(cluster_env())
    import ray

    ray.init(address="local", include_dashboard=False, num_cpus=8, log_to_driver=False)
    port, plain_port = free_port(), free_port()
    plain = subprocess.Popen([sys.executable, __file__, "--uvicorn-port", str(plain_port)])
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(Bare.bind(), name="bare", route_prefix="/")  # type: ignore[attr-defined]
        targets = {"uvicorn": f"http://127.0.0.1:{plain_port}{PATH}",
                   "serve, via HAProxy": f"http://127.0.0.1:{port}{PATH}"}  # fmt: skip
        for url in targets.values():
            wait_until(lambda url=url: httpx.post(url, json=BODY).status_code == 200, 60, url)
        targets["serve, replica port"] = replica_url("ServeReplica:bare")
        for round_index in range(args.rounds):
            for name, url in targets.items():
                result = loadgen.run(url, BODY, 1, 6)
                line = (f"round {round_index + 1} {name:20s} p50 {result['p50_ms']:.2f} ms  "
                        f"p99 {result['p99_ms']:.2f} ms  {result['rps']:.0f} req/s")  # fmt: skip
                print(line, flush=True)
    finally:
        plain.terminate()  # SIGTERM: a child started in the background may ignore SIGINT
        plain.wait(30)
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
