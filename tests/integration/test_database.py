"""The keyed application's state in a real PostgreSQL (`database: {url_env: ...}`), with two
ingress replicas: a response stored through one replica is continued through the other; a
restart of every gateway process keeps keys, spend, the ledger and stored responses; killing
PostgreSQL under load loses no record of an answered request once it is back."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from typing import Any

import httpx
import psycopg
import pytest

from tests.helpers import wait_until
from tests.integration.conftest import DATABASE_URL_ENV, Stack
from tests.integration.keyed import QUESTION, Keyed
from tests.postgres import PostgresServer

pytestmark = pytest.mark.integration


def _rows(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(os.environ[DATABASE_URL_ENV]) as db:
        return list(db.execute(sql, params).fetchall())


def _ingress_of(request_ids: list[str]) -> dict[str, str]:
    found = _rows("SELECT request_id, ingress FROM requests WHERE request_id = ANY(%s)",
                  (request_ids,))  # fmt: skip
    return {request_id: ingress for request_id, ingress in found}


def _chat(client: httpx.Client, key: str) -> httpx.Response:
    body = {"model": "free", "messages": QUESTION, "max_tokens": 4}
    return client.post("/v1/chat/completions", json=body,
                       headers={"authorization": f"Bearer {key}"})  # fmt: skip


def test_a_response_stored_through_one_replica_is_continued_through_the_other(
    keyed: Keyed,
) -> None:
    key = keyed.create("keys", name="conversations")["key"]
    client = keyed.client(key)
    pairs: list[tuple[str, str]] = []
    where: dict[str, str] = {}
    # In rounds of 8 conversations: a replica Serve reports running can take a moment more
    # to get traffic from HAProxy, so the first round may all land on the other one.
    for index in range(32):
        first = client.responses.with_raw_response.create(
            model="free", input=f"remember {index}", store=True
        )
        second = client.responses.with_raw_response.create(
            model="free", input="and now?", previous_response_id=first.parse().id
        )
        assert second.parse().status == "completed"
        pairs.append((first.headers["x-request-id"], second.headers["x-request-id"]))
        if index % 8 < 7:
            continue
        ids = [request_id for pair in pairs for request_id in pair]
        wait_until(lambda ids=ids: len(_ingress_of(ids)) == len(ids), 15,
                   "the requests in the ledger")  # fmt: skip
        where = _ingress_of(ids)
        if any(where[first] != where[second] for first, second in pairs):
            break
    assert len(set(where.values())) == 2  # both replicas answered
    assert any(where[first] != where[second] for first, second in pairs)  # across replicas


def test_a_restart_of_every_gateway_process_keeps_keys_spend_ledger_and_responses(
    keyed: Keyed, stack: Stack
) -> None:
    created = keyed.create("keys", name="durable", budget_usd=5.0)
    client = keyed.client(created["key"])
    for _ in range(3):
        client.chat.completions.create(model="priced", messages=QUESTION, max_tokens=8)
    stored = client.responses.create(model="free", input="keep this", store=True)

    def usage() -> dict[str, Any]:
        rows = keyed.admin.get("/v1/gateway/usage", params={"group_by": "key"}).json()["data"]
        return next((row for row in rows if row["key"] == created["id"]), {})

    wait_until(lambda: usage().get("requests") == 4, 15, "the key's four requests")
    time.sleep(1.0)  # spend is written behind, every 0.25 s
    before = keyed.admin.get(f"/v1/gateway/keys/{created['id']}").json()["usage"]
    assert before["spend_usd"] > 0
    keyed.delete()  # every replica of the application: ingress and access state
    keyed.deploy()
    after = keyed.admin.get(f"/v1/gateway/keys/{created['id']}").json()["usage"]
    assert after["spend_usd"] == pytest.approx(before["spend_usd"])
    assert usage()["requests"] == 4 and usage()["cost_usd"] == pytest.approx(before["spend_usd"])
    again = client.responses.create(model="free", input="and?", previous_response_id=stored.id)
    assert again.status == "completed"
    # Nothing of it was ever in a SQLite file of this host (the spool is there, empty).
    for name in ("keyed-ledger.sqlite", "access.sqlite"):
        assert not (stack.logs / name).exists(), name
    with sqlite3.connect(stack.logs / "keyed-spool.sqlite") as spool:
        assert spool.execute("SELECT COUNT(*) FROM spool").fetchone() == (0,)


def test_killing_postgres_under_load_loses_no_record_of_an_answered_request(
    keyed: Keyed, postgres_server: PostgresServer
) -> None:
    key = keyed.create("keys", name="outage")["key"]
    answered: list[str] = []
    refused: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=keyed.root, timeout=30) as client:
            while not stop.is_set():
                response = _chat(client, key)
                if response.status_code == 200:
                    answered.append(response.headers["x-request-id"])
                else:
                    refused.append(response.status_code)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2.0)
        postgres_server.kill()
        killed_at = len(answered)
        time.sleep(4.0)
        during = len(answered) - killed_at
    finally:
        postgres_server.start()
    time.sleep(2.0)
    stop.set()
    for thread in threads:
        thread.join(30)
    print(f"\n{len(answered)} answered, {during} while PostgreSQL was down; refused {refused}")
    assert during > 0  # keys and limits are held in memory: the gateway kept answering
    assert not refused

    def missing() -> set[str]:
        return set(answered) - set(_ingress_of(answered))

    wait_until(lambda: not missing(), 60, "every answered request in the ledger")
    assert len(set(answered)) == len(answered)
