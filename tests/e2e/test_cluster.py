"""The gateway on a real two-node Ray cluster on this machine, deployed with `serve deploy`:
a head node (Serve controller, HAProxy, the gateway's ingress replicas and its key state) and
a worker node (`--resources '{"worker": ...}'`) where the vLLM replica is placed by the
config's resources. Requests cross both nodes; limits hold whichever ingress replica answers;
killing the worker node under load loses no request (the route's fallback serves), the backend
is reported down, and a node that comes back gets the replica and the traffic again. A second
application spreads its ingress over both nodes and keeps one ledger (`ledger.scope: cluster`)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.helpers import ROOT, TINY_MODEL, cluster_env, free_port, stop_process, wait_until

pytestmark = pytest.mark.e2e
TINY_ENGINE = {"enforce_eager": True, "kv_cache_memory_bytes": 64 << 20, "max_model_len": 512}
MASTER_ENV = "GATEWAY_MASTER_KEY"
STUB = ROOT / "bench" / "stub_upstream.py"


@dataclass
class Cluster:
    address: str
    dashboard: str
    env: dict[str, str]
    logs: Path
    head: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes] | None = None

    def start_worker(self) -> None:
        ray_cli = Path(sys.executable).with_name("ray")
        ports = [free_port() for _ in range(4)]
        command = [str(ray_cli), "start", "--block", f"--address={self.address}",
                   "--num-cpus=4", '--resources={"worker": 100}',
                   "--node-ip-address=127.0.0.1", "--disable-usage-stats",
                   f"--dashboard-agent-listen-port={ports[0]}",
                   f"--dashboard-agent-grpc-port={ports[1]}",
                   f"--metrics-export-port={ports[2]}", f"--runtime-env-agent-port={ports[3]}",
                   "--min-worker-port=22001", "--max-worker-port=24000"]  # fmt: skip
        log = self.logs / f"worker-{time.monotonic():.0f}.log"
        # Both nodes share this machine's loopback: the worker's ingress replicas listen on
        # ports of their own (Serve's defaults start at 30000 and 40000 on every node).
        ports_env = {"RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": "32000",
                     "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": "33000",
                     "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": "42000",
                     "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": "43000"}  # fmt: skip
        with log.open("wb") as out:
            self.worker = subprocess.Popen(
                command, env={**self.env, **ports_env}, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        wait_until(lambda: b"Ray runtime started" in log.read_bytes(), 180, "worker node",
                   self.worker, log)  # fmt: skip

    def kill_worker(self) -> None:
        """The whole worker node at once: its raylet and every process it started."""
        assert self.worker is not None
        os.killpg(self.worker.pid, 9)
        self.worker.wait(10)

    def driver(self, code: str) -> str:
        prelude = f"import json, ray\nfrom ray import serve\nray.init(address={self.address!r})\n"
        done = subprocess.run([sys.executable, "-c", prelude + code], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=300, check=True)  # fmt: skip
        return done.stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    logs = tmp_path_factory.mktemp("cluster")
    port, dashboard = free_port(), free_port()
    env = {
        **os.environ, **cluster_env(),
        "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
        MASTER_ENV: "sk-master-" + secrets.token_hex(16),  # every node's replicas get it
    }  # fmt: skip
    env.pop("RAY_ADDRESS", None)
    ray_cli = Path(sys.executable).with_name("ray")
    command = [str(ray_cli), "start", "--head", "--block", f"--port={port}", "--num-cpus=4",
               '--resources={"head": 100}', "--node-ip-address=127.0.0.1",
               "--include-dashboard=true", "--dashboard-host=127.0.0.1",
               f"--dashboard-port={dashboard}", f"--metrics-export-port={free_port()}",
               "--disable-usage-stats", "--min-worker-port=20000",
               "--max-worker-port=22000"]  # fmt: skip
    log = logs / "head.log"
    with log.open("wb") as out:
        head = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    cluster = Cluster(f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard}", env, logs, head)
    try:
        wait_until(lambda: b"Ray runtime started" in log.read_bytes(), 180, "head node", head, log)
        cluster.start_worker()
        yield cluster
    finally:
        if cluster.worker is not None:
            stop_process(cluster.worker, grace_s=20)
        stop_process(head, grace_s=30)
        recorded = Path("/tmp/ray/ray_current_cluster")
        if recorded.exists() and recorded.read_text().strip().endswith(f":{port}"):
            recorded.unlink()


def serve_config(http_port: int, stub_url: str, logs: Path) -> dict[str, Any]:
    on_head = {"resources": {"head": 1}, "num_cpus": 0.25}
    args = {
        "auth": {"mode": "keys", "master_key_env": MASTER_ENV,
                 "store_path": str(logs / "access.sqlite"), "state_node": "head"},
        "backends": {
            "tiny": {"kind": "vllm", "model": "tiny", "source": str(TINY_MODEL),
                     "accelerator": "cpu", "engine_kwargs": TINY_ENGINE,
                     "deployment": {"num_replicas": 1,
                                    "ray_actor_options": {"num_cpus": 1,
                                                          "resources": {"worker": 1}}},
                     "retry": {"max_retries": 0},
                     # A dead node's requests fail over after this (Ray notices a dead node
                     # only after its health checks time out).
                     "timeouts": {"first_token_s": 10, "total_s": 20}},
            "api": {"kind": "openai", "model": "stub", "base_url": stub_url,
                    "pricing": {"input_per_mtok": 1, "output_per_mtok": 2}},
        },
        "routes": {"auto": {"candidates": ["tiny"], "fallbacks": ["api"]}},
        "ingress": {"deployment": {"num_replicas": 2, "ray_actor_options": on_head},
                    "health_check_interval_s": 1},
        "ledger": {"path": str(logs / "ledger.sqlite")},
        "request_log": {"path": str(logs / "requests.jsonl")},
    }  # fmt: skip
    # A second application with an ingress replica on each node, keeping one ledger for both.
    spread = {
        "backends": {"api": args["backends"]["api"]},
        "routes": {"auto": {"candidates": ["api"]}},
        "ingress": {
            "deployment": {
                "num_replicas": 2,
                "max_replicas_per_node": 1,
                "ray_actor_options": {"num_cpus": 0.25},
            }
        },
        "ledger": {
            "path": str(logs / "spread-ledger.sqlite"),
            "scope": "cluster",
            "owner_node": "head",
            "spool_path": str(logs / "spread-spool.sqlite"),
        },
        "request_log": {"path": str(logs / "spread-requests.jsonl")},
    }
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": http_port},
        "applications": [{"name": "gateway", "route_prefix": "/",
                          "import_path": "gateway.app:build_app", "args": args},
                         {"name": "spread", "route_prefix": "/spread",
                          "import_path": "gateway.app:build_app", "args": spread}],
    }  # fmt: skip


@dataclass
class Deployed:
    cluster: Cluster
    root: str
    admin: httpx.Client


def tiny_ready(root: str, admin: httpx.Client) -> bool:
    response = admin.get(f"{root}/v1/gateway/backends", timeout=10)
    if not response.headers.get("content-type", "").startswith("application/json"):
        return False  # Serve's own plain-text answer while the app deploys
    tiny = next(entry for entry in response.json()["data"] if entry["id"] == "tiny")
    return bool(
        tiny["health"]["available"] and tiny["deployment"].get("replicas", {}).get("RUNNING")
    )


@pytest.fixture(scope="module")
def deployed(cluster: Cluster) -> Iterator[Deployed]:
    stub_port, http_port = free_port(), free_port()
    with (cluster.logs / "stub.log").open("wb") as out:
        stub = subprocess.Popen(
            [sys.executable, str(STUB), "--port", str(stub_port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    config = cluster.logs / "serve.yaml"
    config.write_text(yaml.safe_dump(serve_config(http_port, f"http://127.0.0.1:{stub_port}/v1",
                                                  cluster.logs)))  # fmt: skip
    serve_cli = Path(sys.executable).with_name("serve")
    subprocess.run([str(serve_cli), "deploy", "--address", cluster.dashboard, str(config)],
                   cwd=ROOT, env=cluster.env, check=True, timeout=120)  # fmt: skip
    root = f"http://127.0.0.1:{http_port}"
    admin = httpx.Client(headers={"authorization": f"Bearer {cluster.env[MASTER_ENV]}"})
    try:
        wait_until(lambda: tiny_ready(root, admin), 420, "the gateway on the cluster")
        yield Deployed(cluster, root, admin)
    finally:
        admin.close()
        stop_process(stub)


def placement(cluster: Cluster, app: str = "gateway") -> dict[str, str]:
    """Deployment name -> the custom resource of the nodes its replicas run on."""
    code = (
        "nodes = {n['NodeID']: ('worker' if 'worker' in n['Resources'] else 'head')"
        " for n in ray.nodes() if n['Alive']}\n"
        "details = serve.context._get_global_client().get_serve_details()\n"
        "where = {name: sorted({nodes.get(r['node_id'], '?') for r in d['replicas']})"
        f" for name, d in details['applications'][{app!r}]['deployments'].items()}}\n"
        "print(json.dumps(where))\n"
    )
    return {
        name: ",".join(nodes)
        for name, nodes in json.loads(cluster.driver(code).splitlines()[-1]).items()
    }


def test_replicas_are_placed_by_resources_and_requests_cross_both_nodes(deployed: Deployed) -> None:
    where = placement(deployed.cluster)
    assert where["backend-tiny"] == "worker"
    assert where["GatewayIngress"] == "head" and where["AccessStateDeployment"] == "head"
    key = deployed.admin.post(
        f"{deployed.root}/v1/gateway/keys", json={"name": "c", "rpm": 20}
    ).json()
    client = httpx.Client(headers={"authorization": f"Bearer {key['key']}"}, timeout=60)
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    statuses, backends = [], set()
    for _ in range(30):
        response = client.post(f"{deployed.root}/v1/chat/completions", json=body)
        statuses.append(response.status_code)
        if response.status_code == 200:
            backends.add(response.headers.get("x-gateway-backend"))
    assert statuses.count(200) == 20 and statuses.count(429) == 10  # one limit, two ingresses
    assert backends == {"tiny"}  # answered by the engine on the worker node
    # One ledger for the cluster: whichever ingress replica answers, the same totals.
    time.sleep(1.0)  # each replica's batch writer runs every 0.25 s

    def totals() -> list[tuple[str, int]]:
        usage = deployed.admin.get(f"{deployed.root}/v1/gateway/usage?group_by=key").json()
        return sorted((row["key_name"], row["requests"]) for row in usage["data"])

    seen = [totals() for _ in range(8)]
    assert all(answer == seen[0] for answer in seen) and ("c", 30) in seen[0]


def test_ingress_replicas_on_both_nodes_keep_one_ledger(deployed: Deployed) -> None:
    """`ledger.scope: cluster`: the owner on the head writes what both ingress replicas (one
    per node) answered; usage is the same whichever of them answers."""
    root = f"{deployed.root}/spread"
    wait_until(
        lambda: placement(deployed.cluster, "spread").get("GatewayIngress") == "head,worker",
        180, "an ingress replica on each node",
    )  # fmt: skip
    assert placement(deployed.cluster, "spread")["RecordsDeployment"] == "head"
    body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}

    async def send() -> list[int]:
        async with httpx.AsyncClient(timeout=60) as client:
            calls = [client.post(f"{root}/v1/chat/completions", json=body) for _ in range(40)]
            return [response.status_code for response in await asyncio.gather(*calls)]

    assert asyncio.run(send()) == [200] * 40

    def ledger() -> list[tuple[str, int]]:
        with sqlite3.connect(deployed.cluster.logs / "spread-ledger.sqlite") as db:
            return db.execute("SELECT ingress, COUNT(*) FROM requests GROUP BY ingress").fetchall()

    wait_until(lambda: sum(count for _, count in ledger()) == 40, 30, "40 rows in one ledger")
    nodes = {ingress.split("/")[0] for ingress, _ in ledger()}
    assert len(nodes) == 2, ledger()  # rows from the head's and the worker's ingress replica
    lines = (deployed.cluster.logs / "spread-requests.jsonl").read_text().splitlines()
    assert len(lines) == 40
    answers = [httpx.get(f"{root}/v1/gateway/usage", timeout=30).json() for _ in range(8)]
    assert all(answer["data"] == answers[0]["data"] for answer in answers)
    assert answers[0]["data"][0]["requests"] == 40


def test_a_dead_worker_node_loses_no_request_and_a_new_one_takes_the_traffic_back(
    deployed: Deployed,
) -> None:
    root, admin = deployed.root, deployed.admin
    key = admin.post(f"{root}/v1/gateway/keys", json={"name": "load"}).json()["key"]
    body = {"model": "auto", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16}
    answers: list[tuple[int, str]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(headers={"authorization": f"Bearer {key}"}, timeout=120) as client:
            while not stop.is_set():
                response = client.post(f"{root}/v1/chat/completions", json=body)
                answers.append(
                    (response.status_code, response.headers.get("x-gateway-backend", ""))
                )

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(answers) >= 20, 60, "load on the engine")
        killed_at = len(answers)
        deployed.cluster.kill_worker()
        wait_until(lambda: not tiny_ready(root, admin), 60, "the engine reported down")
        down_at = len(answers)
        wait_until(lambda: len(answers) >= down_at + 20, 120, "load after the node died")
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert {status for status, _ in answers} == {200}, "a request was lost"
    # Once the engine is reported down, everything goes to the fallback (bar the 4 requests
    # that were already on their way).
    assert {backend for _, backend in answers[down_at + 4 :]} == {"api"}
    after_kill = [backend for _, backend in answers[killed_at:]]
    # A node with the resource comes back: Serve places the replica there, traffic returns.
    deployed.cluster.start_worker()
    started = time.monotonic()
    wait_until(lambda: tiny_ready(root, admin), 420, "the engine rescheduled on the new node")
    with httpx.Client(headers={"authorization": f"Bearer {key}"}, timeout=60) as client:
        response = client.post(f"{root}/v1/chat/completions", json=body)
    assert response.status_code == 200 and response.headers["x-gateway-backend"] == "tiny"
    print(f"\nworker node killed under load: {len(answers)} requests, all 200; after the kill "
          f"{after_kill.count('tiny')} answered by the engine (its process outlived its "
          "raylet briefly), "
          f"{after_kill.count('api')} by the fallback; reported down after "
          f"{down_at - killed_at} answers; engine back on a new node in "
          f"{time.monotonic() - started:.0f}s")  # fmt: skip
