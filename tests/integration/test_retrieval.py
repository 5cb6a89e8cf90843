"""Files, vector stores and `file_search` on real Serve, with the official openai and
anthropic SDKs: documents of data/retrieval (Markdown, HTML, PDF) embedded by all-MiniLM-L6-v2
on vLLM through the gateway's own embedding route, searched, and given to a capture upstream
that records every byte it receives; keys own what they store."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.helpers import MODELS, ROOT, wait_until
from tests.integration.conftest import ANTHROPIC_KEY_ENV, MASTER_KEY_ENV, Stack, warmed

pytestmark = pytest.mark.integration
PREFIX = "/rag"
DOCS = ROOT / "data" / "retrieval" / "docs"
MIB = 1024 * 1024
QUESTION = "In 2031, which booking tool did staff have to use for flights and hotels?"
ANSWER = "Wayfarer"  # in the 2031 policy only (2032 has another portal)


def rag_config(stack: Stack, store_ids: tuple[str, ...] = ()) -> dict[str, Any]:
    capture = f"{stack.stubs['capture'][0]}/v1"
    config: dict[str, Any] = {
        "auth": {"mode": "keys", "master_key_env": MASTER_KEY_ENV,
                 "store_path": str(stack.logs / "rag-access.sqlite")},
        "backends": {
            "minilm": {
                "kind": "vllm", "model": "all-MiniLM-L6-v2",
                "source": str(MODELS / "all-minilm-l6-v2"), "accelerator": "cpu",
                "endpoints": ["embeddings"],
                "engine_kwargs": {"runner": "pooling", "dtype": "float32", "max_model_len": 256,
                                  "kv_cache_memory_bytes": 32 << 20, "enforce_eager": True},
                "deployment": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0.5}},
                "timeouts": {"first_token_s": 60, "total_s": 60},
            },
            "capture": {"kind": "openai", "model": "capture", "base_url": capture},
            "capture-claude": {"kind": "anthropic", "model": "claude-capture",
                               "base_url": stack.stubs["capture"][0],
                               "api_key_env": ANTHROPIC_KEY_ENV},
        },
        "routes": {"embed": {"candidates": ["minilm"]}},
        "retrieval": {"max_file_bytes": MIB, "quota_bytes": 3 * MIB,
                      "chunking": {"max_chunk_size_tokens": 120, "chunk_overlap_tokens": 30}},
        "ledger": {"path": str(stack.logs / "rag-ledger.sqlite")},
        "request_log": {"path": str(stack.logs / "rag-requests.jsonl")},
    }  # fmt: skip
    if store_ids:
        retrieval = {"vector_store_ids": list(store_ids), "max_num_results": 3}
        config["routes"]["docs"] = {"candidates": ["capture"], "retrieval": retrieval}
        config["routes"]["docs-claude"] = {"candidates": ["capture-claude"], "retrieval": retrieval}
    return config


class Rag:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.root = stack.root_url + PREFIX
        self.master = stack.secrets[3]
        self.admin = httpx.Client(base_url=self.root, timeout=60,
                                  headers={"authorization": f"Bearer {self.master}"})  # fmt: skip

    def deploy(self, store_ids: tuple[str, ...] = ()) -> None:
        from ray import serve

        from gateway.app import build_app

        app = build_app(rag_config(self.stack, store_ids))
        serve.run(app, name="rag", route_prefix=PREFIX, blocking=False)
        wait_until(lambda: warmed(self.root), 300, "the rag app")
        wait_until(self._running, 300, "every rag replica")
        probe = {"model": "embed", "input": "x"}
        wait_until(
            lambda: self.admin.post("/v1/embeddings", json=probe).status_code == 200,
            300, "the embedding engine",
        )  # fmt: skip

    @staticmethod
    def _running() -> bool:
        from ray import serve

        application = serve.status().applications.get("rag")
        return application is not None and application.status == "RUNNING"

    def key(self, name: str, team: str | None = None) -> str:
        spec = {"name": name + secrets.token_hex(3), **({"team": team} if team else {})}
        response = self.admin.post("/v1/gateway/keys", json=spec)
        assert response.status_code == 201, response.text
        key = str(response.json()["key"])
        self.stack.secrets.append(key)
        return key

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.root}/v1", api_key=key, max_retries=0, timeout=120)

    def captured(self) -> bytes:
        return httpx.get(f"{self.stack.stubs['capture'][0]}/_capture").content

    def ledger(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.stack.logs / "rag-ledger.sqlite") as db:
            return db.execute(sql, params).fetchall()


@pytest.fixture(scope="module")
def rag(stack: Stack) -> Iterator[Rag]:
    from ray import serve

    app = Rag(stack)
    app.deploy()
    yield app
    serve.delete("rag")


@pytest.fixture(scope="module")
def library(rag: Rag) -> dict[str, Any]:
    """Six documents of the corpus (two of each format, two travel policies that differ
    only in details) in one store made by key `owner`."""
    key = rag.key("owner")
    client = rag.client(key)
    names = ["travel-policy-2031.md", "travel-policy-2032.md", "cafeteria-menu.html",
             "loomstack-release-4-2.html", "annual-report-2031.pdf",
             "parental-leave-policy.pdf"]  # fmt: skip
    files = {}
    for name in names:
        with (DOCS / name).open("rb") as handle:
            files[name] = client.files.create(file=(name, handle), purpose="assistants")
    store = client.vector_stores.create(name="handbook", file_ids=[files[n].id for n in names[:4]])
    batch = client.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id, file_ids=[files[n].id for n in names[4:]]
    )
    assert batch.status == "completed" and batch.file_counts.completed == 2
    return {"key": key, "client": client, "store": store, "files": files}


def test_files_are_stored_ingested_and_searched_with_the_sdk(
    rag: Rag, library: dict[str, Any]
) -> None:
    client, store, files = library["client"], library["store"], library["files"]
    travel = files["travel-policy-2031.md"]
    assert client.files.retrieve(travel.id).bytes == (DOCS / "travel-policy-2031.md").stat().st_size
    assert client.files.content(travel.id).read() == (DOCS / "travel-policy-2031.md").read_bytes()
    stored = client.vector_stores.retrieve(store.id)
    assert stored.file_counts.completed == 6 and stored.file_counts.failed == 0
    assert stored.usage_bytes > 0 and stored.name == "handbook"
    listed = client.vector_stores.files.list(vector_store_id=store.id)
    assert {f.status for f in listed.data} == {"completed"} and len(listed.data) == 6
    page = client.vector_stores.search(vector_store_id=store.id, query=QUESTION, max_num_results=5)
    assert page.data[0].filename == "travel-policy-2031.md"
    assert any(ANSWER in r.content[0].text for r in page.data[:3])
    assert [r.score for r in page.data] == sorted((r.score for r in page.data), reverse=True)
    pdf = client.vector_stores.search(
        vector_store_id=store.id, query="How many weeks of paid parental leave are there?"
    )
    assert pdf.data[0].filename == "parental-leave-policy.pdf"
    # The embeddings of ingest and search were requests of this key, in the ledger.
    sql = (
        "SELECT COUNT(*), SUM(prompt_tokens) FROM requests WHERE endpoint = 'embeddings' "
        "AND key_name LIKE 'owner%' AND status = 200"
    )  # six ingests, two searches
    wait_until(lambda: rag.ledger(sql)[0][0] >= 8, 15, "the embedding requests in the ledger")
    assert rag.ledger(sql)[0][1] > 1000


def test_attributes_filter_a_search_and_a_removed_file_is_not_found(
    rag: Rag, library: dict[str, Any]
) -> None:
    client, store, files = library["client"], library["store"], library["files"]
    for name, year in (("travel-policy-2031.md", 2031), ("travel-policy-2032.md", 2032)):
        client.vector_stores.files.update(file_id=files[name].id, vector_store_id=store.id,
                                          attributes={"year": year})  # fmt: skip
    newer = {"type": "eq", "key": "year", "value": 2032}
    found = client.vector_stores.search(vector_store_id=store.id, query=QUESTION, filters=newer)
    assert {r.filename for r in found.data} == {"travel-policy-2032.md"}
    strict = client.vector_stores.search(vector_store_id=store.id, query=QUESTION,
                                         ranking_options={"score_threshold": 0.99})  # fmt: skip
    assert strict.data == []
    menu = files["cafeteria-menu.html"]
    client.vector_stores.files.delete(file_id=menu.id, vector_store_id=store.id)
    after = client.vector_stores.search(vector_store_id=store.id, query="cafeteria menu soup",
                                        max_num_results=20)  # fmt: skip
    assert "cafeteria-menu.html" not in {r.filename for r in after.data}
    assert client.files.retrieve(menu.id).id == menu.id  # still a file, no longer in the store


def test_another_key_gets_404_for_everything_an_admin_sees_it(
    rag: Rag, library: dict[str, Any]
) -> None:
    store, files = library["store"], library["files"]
    stranger = rag.client(rag.key("stranger"))
    calls = [
        lambda: stranger.vector_stores.retrieve(store.id),
        lambda: stranger.vector_stores.search(vector_store_id=store.id, query="x"),
        lambda: stranger.vector_stores.files.list(vector_store_id=store.id),
        lambda: stranger.files.retrieve(files["cafeteria-menu.html"].id),
        lambda: stranger.files.content(files["cafeteria-menu.html"].id),
        lambda: stranger.files.delete(files["cafeteria-menu.html"].id),
        lambda: stranger.vector_stores.create(file_ids=[files["cafeteria-menu.html"].id]),
        lambda: stranger.responses.create(
            model="capture", input=QUESTION,
            tools=[{"type": "file_search", "vector_store_ids": [store.id]}],
        ),
    ]  # fmt: skip
    for call in calls:
        with pytest.raises(openai.NotFoundError):
            call()
    assert stranger.vector_stores.list().data == [] and stranger.files.list().data == []
    assert rag.admin.get(f"/v1/vector_stores/{store.id}").json()["id"] == store.id
    # A team's keys share what either of them stored.
    rag.admin.post("/v1/gateway/teams", json={"name": "readers"})
    first, second = rag.client(rag.key("a", "readers")), rag.client(rag.key("b", "readers"))
    shared = first.vector_stores.create(name="team")
    assert second.vector_stores.retrieve(shared.id).id == shared.id


def _file_search(store_id: str) -> dict[str, Any]:
    return {"type": "file_search", "vector_store_ids": [store_id], "max_num_results": 3}


def test_file_search_gives_the_passages_to_the_backend_and_cites_them(
    rag: Rag, library: dict[str, Any]
) -> None:
    client, store = library["client"], library["store"]
    httpx.post(f"{rag.stack.stubs['capture'][0]}/_reset")
    response = client.responses.create(
        model="capture", input=QUESTION, tools=[_file_search(store.id)],
        include=["file_search_call.results"],
    )  # fmt: skip
    call, message = response.output[0], response.output[1]
    assert call.type == "file_search_call" and call.status == "completed"
    assert call.queries == [QUESTION] and call.results
    assert call.results[0].filename == "travel-policy-2031.md"
    assert message.type == "message"
    annotations = message.content[0].annotations
    assert annotations and {a.type for a in annotations} == {"file_citation"}
    assert all(a.index == len(message.content[0].text) for a in annotations)
    assert ANSWER.encode() in rag.captured()  # the passage reached the backend
    without = client.responses.create(
        model="capture", input=QUESTION, tools=[_file_search(store.id)]
    )
    assert without.output[0].results is None  # results only when `include` asks


def test_file_search_streams_its_events_and_is_stored_for_a_follow_up(
    rag: Rag, library: dict[str, Any]
) -> None:
    client, store = library["client"], library["store"]
    events = list(client.responses.create(
        model="capture", input=QUESTION, tools=[_file_search(store.id)], stream=True, store=True,
    ))  # fmt: skip
    kinds = [e.type for e in events]
    searching = ["response.file_search_call.in_progress", "response.file_search_call.searching",
                 "response.file_search_call.completed"]  # fmt: skip
    assert [k for k in kinds if k.startswith("response.file_search_call")] == searching
    assert kinds.index(searching[-1]) < kinds.index("response.output_text.delta")
    assert "response.output_text.annotation.added" in kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response
    assert final.status == "completed"
    assert [item.type for item in final.output] == ["file_search_call", "message"]
    assert final.output[1].content[0].annotations
    again = client.responses.create(model="capture", input="And in 2032?",
                                    previous_response_id=final.id)  # fmt: skip
    assert again.status == "completed"


def test_a_route_with_retrieval_adds_passages_for_chat_and_messages(
    rag: Rag, library: dict[str, Any]
) -> None:
    store = library["store"]
    rag.deploy((store.id,))
    key = rag.key("router")
    httpx.post(f"{rag.stack.stubs['capture'][0]}/_reset")
    chat = rag.client(key).chat.completions.with_raw_response.create(
        model="docs", messages=[{"role": "user", "content": QUESTION}]
    )
    assert chat.parse().choices[0].message.content
    assert ANSWER.encode() in rag.captured()
    sql = "SELECT retrieved FROM requests WHERE request_id = ?"
    rid = (chat.headers["x-request-id"],)
    wait_until(lambda: rag.ledger(sql, rid) != [], 15, "the chat request in the ledger")
    assert rag.ledger(sql, rid)[0][0] == 3
    httpx.post(f"{rag.stack.stubs['capture'][0]}/_reset")
    claude = anthropic.Anthropic(base_url=rag.root, api_key=key, max_retries=0)
    answer = claude.messages.create(model="docs-claude", max_tokens=32,
                                    messages=[{"role": "user", "content": QUESTION}])  # fmt: skip
    assert answer.content
    assert ANSWER.encode() in rag.captured()


def test_bad_files_and_requests_get_clear_errors(rag: Rag, tmp_path: Path) -> None:
    client = rag.client(rag.key("careless"))
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("a.md", b"hello"), purpose="fine-tune")
    assert caught.value.param == "purpose"
    with pytest.raises(openai.APIStatusError) as caught:
        client.files.create(file=("big.txt", b"x" * (MIB + 1)), purpose="assistants")
    assert caught.value.status_code == 413
    odd = client.files.create(file=("photo.png", b"\x89PNG not text"), purpose="assistants")
    store = client.vector_stores.create(file_ids=[odd.id])
    assert store.file_counts.failed == 1
    failed = client.vector_stores.files.retrieve(file_id=odd.id, vector_store_id=store.id)
    assert failed.status == "failed" and failed.last_error.code == "unsupported_file"
    with pytest.raises(openai.BadRequestError) as caught:
        client.vector_stores.search(vector_store_id=store.id, query="x",
                                    filters={"type": "near", "key": "a", "value": 1})  # fmt: skip
    assert caught.value.param == "filters.type"
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.search(vector_store_id=store.id, query="x", max_num_results=51)
    for _ in range(3):  # the quota: 3 MiB per key
        client.files.create(file=("part.txt", b"y" * (MIB - 100)), purpose="user_data")
    with pytest.raises(openai.APIStatusError) as caught:
        client.files.create(file=("more.txt", b"z" * 1000), purpose="user_data")
    assert caught.value.status_code == 413 and caught.value.code == "storage_quota_exceeded"
