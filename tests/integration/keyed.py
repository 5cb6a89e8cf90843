"""The keyed gateway application the keys and database tests share: `/keyed` beside the shared
stack, two ingress replicas, `auth: {mode: keys}`, and its keys, spend, ledger and stored
responses in the stack's PostgreSQL (`database: {url_env: GATEWAY_DATABASE_URL}`)."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import Any

import httpx
import openai

from tests.helpers import wait_until
from tests.integration.conftest import DATABASE_URL_ENV, MASTER_KEY_ENV, Stack

PREFIX = "/keyed"
QUESTION = [{"role": "user", "content": "one two three four"}]
PRICE = {"input_per_mtok": 5.0, "output_per_mtok": 15.0}  # what fast-dear's stub charges


def keyed_config(stack: Stack, logs: Path) -> dict[str, Any]:
    priced_url = stack.stubs["fast-dear"][0] + "/v1"
    config: dict[str, Any] = {
        "auth": {
            "mode": "keys",
            "master_key_env": MASTER_KEY_ENV,
            "store_path": str(logs / "access.sqlite"),
        },
        "backends": {
            "free": {"kind": "fake", "model": "free-1"},
            "priced": {"kind": "openai", "model": "stub", "base_url": priced_url},
        },
        "routes": {"auto": {"candidates": ["free"]}},
        "ingress": {"deployment": {"num_replicas": 2}, "health_check_interval_s": 2},
        "database": {"url_env": DATABASE_URL_ENV},
        # With a database these files are never made (the spool only in an outage).
        "ledger": {
            "path": str(logs / "keyed-ledger.sqlite"),
            "spool_path": str(logs / "keyed-spool.sqlite"),
        },
        "request_log": {"path": str(logs / "keyed-requests.jsonl"), "bodies": True},
    }
    config["backends"]["priced"]["pricing"] = PRICE
    return config


class Keyed:
    def __init__(self, stack: Stack, logs: Path) -> None:
        self.stack = stack
        self.root = stack.root_url + PREFIX
        self.config = keyed_config(stack, logs)
        master = stack.secrets[3]
        self.admin = httpx.Client(
            base_url=self.root, headers={"authorization": f"Bearer {master}"}, timeout=30
        )

    def deploy(self) -> None:
        from ray import serve

        from gateway.app import build_app

        serve.run(build_app(self.config), name="keyed", route_prefix=PREFIX, blocking=False)
        wait_until(self._ready, 180, "the keyed gateway")

    def _ready(self) -> bool:
        """Every replica is up, not only the first: the tests rely on both ingress replicas
        answering (one still starting would take none of the traffic)."""
        from ray import serve

        application = serve.status().applications.get("keyed")
        if application is None or application.status != "RUNNING":
            return False
        response = self.admin.get("/v1/gateway/keys")
        return response.status_code == 200

    def delete(self) -> None:
        from ray import serve

        serve.delete("keyed")

    def create(self, kind: str, **spec: Any) -> dict[str, Any]:
        response = self.admin.post(f"/v1/gateway/{kind}", json=spec)
        assert response.status_code == 201, response.text
        created = dict(response.json())
        if "key" in created:
            self.stack.secrets.append(created["key"])  # the secrets grep looks for it
        return created

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.root}/v1", api_key=key, max_retries=0)


def burst(call: Any, total: int, clients: int) -> list[Any]:
    """`total` calls from `clients` threads at once; each result or the exception raised."""

    def one(_: int) -> Any:
        try:
            return call()
        except openai.APIStatusError as exc:
            return exc

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, range(total)))
