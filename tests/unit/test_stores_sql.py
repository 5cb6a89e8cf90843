"""Keys, spend and stored responses on SQLite and on a real PostgreSQL: what one process
stored, the next finds (a restart of the state's replica, or another ingress replica); spend
counted while PostgreSQL is down reaches it once it is back."""

from __future__ import annotations

import time
from pathlib import Path

from access._records import Principal
from access._store import Store
from llmops import ResponseStore
from storage import open_database
from tests.postgres import PostgresServer


def _key(name: str) -> Principal:
    return Principal(id=f"key_{name}", kind="key", name=name, created_at=time.time())


def test_keys_and_spend_outlive_the_process_that_stored_them(
    database_url: str | None, tmp_path: Path
) -> None:
    store = Store(open_database(database_url, tmp_path / "keys.sqlite"))
    stored = store.put(_key("app"), key_hash="h1")
    store.add_spend("key:key_app", "2026-12", 0.25)
    store.add_spend("key:key_app", "2026-12", 0.5)
    store.close()
    again = Store(open_database(database_url, tmp_path / "keys.sqlite"))
    assert again.find_key("h1") == stored and again.version == stored.version
    assert again.spent("key:key_app", "2026-12") == 0.75
    again.close()


def test_spend_counted_in_an_outage_is_written_once_the_database_is_back(
    postgres_url: str, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    store = Store(open_database(postgres_url, tmp_path / "unused.sqlite"))
    store.put(_key("app"), key_hash="h1")
    postgres_server.kill()
    try:
        store.add_spend("key:key_app", "total", 1.5)
        assert store.spent("key:key_app", "total") == 1.5  # the limits read memory
        assert not store.save_spend()
    finally:
        postgres_server.start()
    store.add_spend("key:key_app", "total", 0.5)
    deadline = time.monotonic() + 30
    while not store.save_spend() and time.monotonic() < deadline:
        time.sleep(0.5)
    store.close()
    again = Store(open_database(postgres_url, tmp_path / "unused.sqlite"))
    assert again.spent("key:key_app", "total") == 2.0
    again.close()
    assert not (tmp_path / "unused.sqlite").exists()


def test_a_response_stored_by_one_replica_is_found_by_another(
    database_url: str | None, tmp_path: Path
) -> None:
    path = tmp_path / "ledger.sqlite"
    one = ResponseStore(open_database(database_url, path), retention_s=3600)
    other = ResponseStore(open_database(database_url, path), retention_s=3600)
    one.save({"id": "resp_1", "output": []}, [{"role": "user", "content": "hi"}], "key_a")
    one.save({"id": "resp_2"}, [], None)  # no keys: anyone's
    assert other.get("resp_1", "key_a") == ({"id": "resp_1", "output": []},
                                            [{"role": "user", "content": "hi"}])  # fmt: skip
    assert other.get("resp_1", "key_b") is None and other.get("resp_1", None) is None
    assert other.get("resp_2", None) == ({"id": "resp_2"}, [])
    assert not other.delete("resp_1", "key_b") and other.delete("resp_1", "key_a")
    assert one.get("resp_1", "key_a") is None
    one.close()
    other.close()
