"""Stopping the gateway loses no record: SIGINT to `serve run`, `serve.shutdown()` (what
`serve shutdown` asks the controller) and a redeploy each leave one ledger row and one
request-log line per answered request, and a row for every request. A redeploy finishes the
requests in flight; a whole-Serve shutdown stops Serve's HAProxy at once, which cuts them
(they are recorded as 499 client_disconnected)."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from llmops import LEDGER_COLUMNS
from tests.helpers import ROOT, cluster_env, free_port, stop_process, wait_until

pytestmark = pytest.mark.e2e
REQUESTS = 500
CONCURRENCY = 16
IN_FLIGHT = 4  # slow streams still running when the stop begins


def serve_config(
    port: int, logs: Path, interval_s: float = 10.0, scope: str = "host"
) -> dict[str, Any]:
    ledger = {"path": str(logs / "ledger.sqlite")}
    if scope == "cluster":
        ledger |= {"scope": "cluster", "spool_path": str(logs / "spool.sqlite")}
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [
            {
                "name": "gateway",
                "route_prefix": "/",
                "import_path": "gateway.app:build_app",
                "args": {
                    "backends": {
                        "echo": {"kind": "fake", "model": "echo-1", "in_ingress": True},
                        "slow": {
                            "kind": "fake",
                            "model": "slow-1",
                            "reply": "one two three four five six",
                            "token_interval_ms": 250,
                            "in_ingress": True,
                        },
                    },
                    "ingress": {"health_check_interval_s": interval_s},
                    "ledger": ledger,
                    "request_log": {"path": str(logs / "requests.jsonl")},
                },
            }
        ],
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """A Ray cluster of its own, started as operators do (`ray start --head`), in its own
    process group so that stopping it stops nothing else."""
    port = free_port()
    env = {
        **os.environ,
        **cluster_env(),
        # One node on loopback: Ray otherwise advertises (and dials) the machine's address.
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        # Token authentication, with a token of this cluster's own for `serve run` and drivers.
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(16),
    }
    ray_cli = Path(sys.executable).with_name("ray")
    log = tmp_path_factory.mktemp("ray") / "ray-start.log"
    start = [str(ray_cli), "start", "--head", "--block", f"--port={port}", "--num-cpus=8",
             "--node-ip-address=127.0.0.1",
             "--include-dashboard=false", "--disable-usage-stats"]  # fmt: skip
    with log.open("wb") as out:
        head = subprocess.Popen(
            start, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_until(lambda: b"Ray runtime started" in log.read_bytes(), 180, "ray", head, log)
        yield f"127.0.0.1:{port}", env
    finally:
        stop_process(head, grace_s=30)
        # `ray start` records its address for later `ray.init()` calls; a dead one would
        # send the next `serve run` (without an address) looking for this cluster.
        recorded = Path("/tmp/ray/ray_current_cluster")
        if recorded.exists() and recorded.read_text().strip().endswith(f":{port}"):
            recorded.unlink()


def serve_run(
    address: str, env: dict[str, str], config: Path, log: Path
) -> subprocess.Popen[bytes]:
    serve_cli = Path(sys.executable).with_name("serve")
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(serve_cli), "run", "--address", address, str(config)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # A background process may inherit an ignored SIGINT; `serve run` needs it.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def driver(address: str, env: dict[str, str], code: str) -> None:
    """Run `code` in a Ray driver attached to the cluster (as `serve` commands do)."""
    prelude = f"import ray\nfrom ray import serve\nray.init(address={address!r})\n"
    subprocess.run(
        [sys.executable, "-c", prelude + code], cwd=ROOT, env=env, check=True, timeout=300
    )


async def drive(base: str) -> tuple[int, list[asyncio.Task[bool]]]:
    """REQUESTS answered requests, half streamed; returns how many were answered in full,
    and IN_FLIGHT slow streams started last and still running."""

    async def one(client: httpx.AsyncClient, index: int, model: str = "echo") -> bool:
        body = {"model": model, "messages": [{"role": "user", "content": f"hello {index}"}],
                "stream": index % 2 == 0 or model == "slow"}  # fmt: skip
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            data = await response.aread()
        complete = not body["stream"] or data.endswith(b"[DONE]\n\n")
        return response.status_code == 200 and complete

    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        answered = 0
        for start in range(0, REQUESTS, CONCURRENCY):
            batch = range(start, min(REQUESTS, start + CONCURRENCY))
            answered += sum(await asyncio.gather(*(one(client, i) for i in batch)))
    slow_client = httpx.AsyncClient(base_url=base, timeout=60)
    slow = [asyncio.create_task(one(slow_client, i, "slow")) for i in range(IN_FLIGHT)]
    await asyncio.sleep(0.3)  # their first tokens are out: they are in flight
    return answered, slow


def counts(logs: Path, spool: bool = False) -> tuple[int, int, int]:
    """Ledger rows of answered requests, log lines of answered requests, all ledger rows; with
    `spool`, also the records an ingress host spooled for the cluster's owner."""
    with sqlite3.connect(logs / "ledger.sqlite") as db:
        statuses = [status for (status,) in db.execute("SELECT status FROM requests")]
    lines = [orjson.loads(line) for line in (logs / "requests.jsonl").read_text().splitlines()]
    logged = [line["status"] for line in lines]
    if spool and (logs / "spool.sqlite").exists():
        with sqlite3.connect(logs / "spool.sqlite") as db:
            for (record,) in db.execute("SELECT record FROM spool"):
                row, line = orjson.loads(record)
                statuses.append(row[LEDGER_COLUMNS.index("status")])
                logged.append(orjson.loads(line)["status"])
    return statuses.count(200), logged.count(200), len(statuses)


@pytest.mark.parametrize(
    ("stop", "scope"),
    [
        ("sigint", "host"),
        ("shutdown", "host"),
        ("redeploy", "host"),
        ("shutdown", "cluster"),
        ("redeploy", "cluster"),
    ],
)
def test_stopping_loses_no_record(
    cluster: tuple[str, dict[str, str]], tmp_path: Path, stop: str, scope: str
) -> None:
    """With `ledger.scope: cluster` the ingress ships records to the owner; what it could not
    ship before the owner stopped waits in its host's spool until the next deployment."""
    address, env = cluster
    port = free_port()
    config_path = tmp_path / "serve.yaml"
    config_path.write_text(yaml.safe_dump(serve_config(port, tmp_path, scope=scope)))
    log = tmp_path / "serve-run.log"
    proc = serve_run(address, env, config_path, log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: httpx.get(f"{base}/v1/models", timeout=5).status_code == 200,
            300, "serve run", proc, log,
        )  # fmt: skip

        async def scenario() -> int:
            answered, slow = await drive(base)
            if stop == "sigint":
                proc.send_signal(signal.SIGINT)
                stopping = asyncio.to_thread(proc.wait, 120)
            elif stop == "shutdown":
                stopping = asyncio.to_thread(driver, address, env, "serve.shutdown()\n")
            else:
                changed = serve_config(port, tmp_path, 11.0, scope)["applications"][0]
                code = (
                    "from gateway.app import build_app\n"
                    f"serve.run(build_app({changed['args']!r}), name='gateway', route_prefix='/')\n"
                )
                stopping = asyncio.to_thread(driver, address, env, code)
            finished = await asyncio.gather(*slow, return_exceptions=True)
            await stopping
            if stop == "redeploy":  # Serve's proxy stays up: the old replica drains
                assert finished == [True] * IN_FLIGHT, f"in-flight streams were cut: {finished}"
            return answered + sum(1 for done in finished if done is True)

        answered = asyncio.run(scenario())
        assert answered >= REQUESTS
        # Every answered request is in the ledger and the log, and every request in the ledger
        # (a redeploy stops the old replica after the new one is up: wait for its last write).
        expected = (answered, answered, REQUESTS + IN_FLIGHT)
        spooled = scope == "cluster"
        wait_until(lambda: counts(tmp_path, spooled) == expected, 60, f"records {expected}")
        if scope == "cluster" and stop == "shutdown":  # the next deployment ships the spool
            stop_process(proc, grace_s=60)
            proc = serve_run(address, env, config_path, log)
            wait_until(
                lambda: httpx.get(f"{base}/v1/models", timeout=5).status_code == 200,
                300, "serve run again", proc, log,
            )  # fmt: skip
        wait_until(lambda: counts(tmp_path) == expected, 60, f"records {expected}, no spool")
    finally:
        stop_process(proc, grace_s=60)
