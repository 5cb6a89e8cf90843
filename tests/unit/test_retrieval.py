"""The vector stores as plain Python (retrieval/): extraction of each format, chunking,
filters, pages of lists, and the service on SQLite and PostgreSQL, two replicas over one
database included. Embeddings here hash words into a vector (what is tested is storage,
ownership and ranking plumbing; retrieval quality is measured with the real MiniLM in
bench/retrieval_eval.py)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from retrieval import (
    Chunking,
    Owner,
    RetrievalConfig,
    RetrievalError,
    SearchOptions,
    SqlStore,
    VectorStores,
    chunk,
    compile_filter,
    count_tokens,
    extract,
)
from retrieval._objects import page
from scripts.text_to_pdf import pdf
from storage import open_database

DIMENSIONS = 128


async def embed(texts: list[str], context: Any) -> list[list[float]]:
    vectors = np.zeros((len(texts), DIMENSIONS))
    for row, text in enumerate(texts):
        for word in re.findall(r"\w+", text.lower()):
            vectors[row, int(hashlib.sha1(word.encode()).hexdigest(), 16) % DIMENSIONS] += 1
    return vectors.tolist()


def service(tmp_path: Path, url: str | None, **config: Any) -> VectorStores:
    db = open_database(url, tmp_path / "stores.sqlite")
    return VectorStores(SqlStore(db), RetrievalConfig(**config), embed)


def test_html_loses_its_markup_scripts_and_styles_and_keeps_its_title() -> None:
    page_ = b"<html><head><title>Menu</title><style>p{x:1}</style><script>var soup=1</script>"
    page_ += b"</head><body><nav>Home</nav><p>Soup &amp; bread: 4 euros</p></body></html>"
    (text,) = extract("menu.html", page_)
    assert "Soup & bread: 4 euros" in text and "Menu" in text
    assert "var soup" not in text and "x:1" not in text


def test_a_pdf_reads_page_by_page_and_a_text_splits_at_form_feeds() -> None:
    pages = extract("report.pdf", pdf(["first page (one)", "second page \\ two"]))
    assert pages == ["first page (one)", "second page \\ two"]
    assert extract("a.txt", b"one\fTWO") == ["one", "TWO"]


@pytest.mark.parametrize(
    ("name", "data"),
    [("photo.png", b"\x89PNG"), ("bad.pdf", b"%PDF-1.4 truncated"), ("latin.txt", b"caf\xe9")],
)
def test_what_cannot_be_read_is_a_400(name: str, data: bytes) -> None:
    with pytest.raises(RetrievalError) as raised:
        extract(name, data)
    assert raised.value.status == 400


def test_chunks_overlap_by_the_configured_tokens_and_never_span_pages() -> None:
    words = [f"w{i}" for i in range(1000)]
    strategy = Chunking(max_chunk_size_tokens=300, chunk_overlap_tokens=100)
    chunks = chunk([" ".join(words), "short page"], strategy)
    assert [c.page for c in chunks] == [1, 1, 1, 1, 1, 2]
    assert all(count_tokens(c.text) <= 300 for c in chunks)
    first, second = chunks[0].text.split(), chunks[1].text.split()
    assert first[-100:] == second[:100]  # the overlap
    covered = {w for c in chunks[:5] for w in c.text.split()}
    assert covered == set(words)  # nothing lost
    with pytest.raises(ValueError):
        Chunking(max_chunk_size_tokens=200, chunk_overlap_tokens=150)


def test_filters_compare_and_compound_and_name_the_bad_field() -> None:
    match = compile_filter({"type": "and", "filters": [
        {"type": "gte", "key": "year", "value": 2031},
        {"type": "or", "filters": [{"type": "eq", "key": "team", "value": "ops"},
                                   {"type": "in", "key": "region", "value": ["eu", "uk"]}]},
    ]})  # fmt: skip
    assert match({"year": 2032, "team": "ops"})
    assert match({"year": 2031, "region": "uk"})
    assert not match({"year": 2030, "team": "ops"})
    assert not match({"year": "2032", "team": "ops"})  # a string is not ordered against a number
    assert not match({"team": "ops"})
    with pytest.raises(RetrievalError) as raised:
        compile_filter({"type": "and", "filters": [{"type": "eq", "value": 1}]})
    assert raised.value.param == "filters.filters[0].key"


def test_pages_of_a_list_follow_limit_order_and_after() -> None:
    items = [{"id": f"o{i}"} for i in range(5)]
    first = page(items, {"limit": "2"})
    assert [i["id"] for i in first["data"]] == ["o4", "o3"] and first["has_more"]
    rest = page(items, {"limit": "10", "after": "o3"})
    assert [i["id"] for i in rest["data"]] == ["o2", "o1", "o0"] and not rest["has_more"]
    with pytest.raises(RetrievalError):
        page(items, {"limit": "0"})


DOCS = {
    "travel.md": b"# Travel\nThe per diem abroad is 88 euros. Hotels are capped at 140 euros.",
    "menu.html": b"<p>The cafeteria serves lentil soup on Tuesdays.</p>",
    "leave.pdf": pdf(["Parental leave lasts 26 weeks at full pay."]),
}


async def _stored(stores: VectorStores, owner: Owner) -> tuple[str, dict[str, str]]:
    ids = {}
    for name, data in DOCS.items():
        ids[name] = (await stores.create_file(owner, name, "assistants", data))["id"]
    store = await stores.create_store(owner, {"name": "h", "file_ids": list(ids.values())}, None)
    assert store["file_counts"]["completed"] == 3
    return store["id"], ids


async def test_search_ranks_the_file_that_holds_the_answer(
    tmp_path: Path, database_url: str | None
) -> None:
    stores = service(tmp_path, database_url)
    owner = Owner("key-a")
    store_id, ids = await _stored(stores, owner)
    for question, expected in [("what is the per diem abroad", "travel.md"),
                               ("lentil soup on which day", "menu.html"),
                               ("how many weeks of parental leave", "leave.pdf")]:  # fmt: skip
        found = await stores.search_body(owner, store_id, {"query": question}, None)
        assert found["data"][0]["filename"] == expected
    await stores.remove_store_file(owner, store_id, ids["travel.md"])
    found = await stores.search_body(owner, store_id, {"query": "per diem abroad"}, None)
    assert "travel.md" not in {r["filename"] for r in found["data"]}
    stores.close()


async def test_owners_see_their_own_their_teams_and_an_admin_all(
    tmp_path: Path, database_url: str | None
) -> None:
    stores = service(tmp_path, database_url)
    store_id, ids = await _stored(stores, Owner("key-a", "team-1"))
    for other in (Owner("key-b"), Owner("key-c", "team-2")):
        with pytest.raises(RetrievalError) as raised:
            await stores.get_store(other, store_id)
        assert raised.value.status == 404
        with pytest.raises(RetrievalError):
            await stores.get_file(other, ids["menu.html"])
        assert (await stores.list_stores(other, {}))["data"] == []
    assert (await stores.get_store(Owner("key-d", "team-1"), store_id))["id"] == store_id
    assert (await stores.get_store(Owner("x", admin=True), store_id))["id"] == store_id
    stores.close()


async def test_a_second_replica_sees_every_change_the_first_makes(
    tmp_path: Path, database_url: str | None
) -> None:
    first, second = service(tmp_path, database_url), service(tmp_path, database_url)
    owner = Owner("key-a")
    store_id, ids = await _stored(first, owner)
    question = {"query": "per diem abroad"}
    assert (await second.search_body(owner, store_id, question, None))["data"][0][
        "filename"
    ] == "travel.md"
    # Replaced with other words (the same file attached anew), then deleted as a file.
    await first.add_file(
        owner, store_id, {"file_id": ids["travel.md"], "attributes": {"v": 2}}, None
    )
    found = await second.search_body(
        owner, store_id, {**question, "filters": {"type": "eq", "key": "v", "value": 2}}, None
    )
    assert [r["filename"] for r in found["data"]] == ["travel.md"]
    await first.delete_file(owner, ids["travel.md"])
    found = await second.search_body(owner, store_id, question, None)
    assert "travel.md" not in {r["filename"] for r in found["data"]}
    assert (await second.get_store(owner, store_id))["file_counts"]["completed"] == 2
    first.close()
    second.close()


async def test_sizes_and_quotas_are_refused_before_anything_is_kept(tmp_path: Path) -> None:
    stores = service(tmp_path, None, max_file_bytes=1000, quota_bytes=1500)
    owner = Owner("key-a")
    with pytest.raises(RetrievalError) as raised:
        await stores.create_file(owner, "a.txt", "assistants", b"x" * 1001)
    assert raised.value.status == 413
    await stores.create_file(owner, "a.txt", "assistants", b"x" * 1000)
    with pytest.raises(RetrievalError) as raised:
        await stores.create_file(owner, "b.txt", "assistants", b"x" * 501)
    assert raised.value.code == "storage_quota_exceeded"
    await stores.create_file(Owner("key-b"), "b.txt", "assistants", b"x" * 501)  # its own quota
    assert len((await stores.list_files(owner, {}))["data"]) == 1
    stores.close()


async def test_an_embedding_failure_fails_the_file_and_keeps_no_chunk(tmp_path: Path) -> None:
    async def broken(texts: list[str], context: Any) -> list[list[float]]:
        raise RuntimeError("the embedding route is down")

    stores = VectorStores(
        SqlStore(open_database(None, tmp_path / "s.sqlite")), RetrievalConfig(), broken
    )
    owner = Owner("")
    file_id = (await stores.create_file(owner, "a.md", "assistants", b"some words"))["id"]
    store = await stores.create_store(owner, {"file_ids": [file_id]}, None)
    assert store["file_counts"]["failed"] == 1 and store["usage_bytes"] == 0
    row = await stores.get_store_file(owner, store["id"], file_id)
    assert row["last_error"]["code"] == "server_error"
    stores.close()


def test_config_mistakes_fail_at_deploy_with_their_path() -> None:
    from gateway.config import GatewayConfig

    backends = {"a": {"kind": "fake", "model": "a", "endpoints": ["embeddings"]},
                "b": {"kind": "fake", "model": "b", "endpoints": ["embeddings"]},
                "chat": {"kind": "fake", "model": "c"}}  # fmt: skip
    two = {"backends": backends, "routes": {"embed": {"candidates": ["a", "b"]}},
           "retrieval": {"embedding_model": "embed"}}  # fmt: skip
    with pytest.raises(ValueError, match=r"retrieval.embedding_model: route 'embed' may embed"):
        GatewayConfig.model_validate(two)
    docs = {"candidates": ["chat"], "retrieval": {"vector_store_ids": ["vs_1"]}}
    missing = {"backends": backends, "routes": {"docs": docs},
               "retrieval": {"embedding_model": "chat"}}  # fmt: skip
    with pytest.raises(ValueError, match=r"routes.docs.retrieval: retrieval.embedding_model"):
        GatewayConfig.model_validate(missing)
    with pytest.raises(ValueError, match="chunk_overlap_tokens"):
        GatewayConfig.model_validate({"backends": backends, "retrieval": {
            "chunking": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 60}}})  # fmt: skip
    assert GatewayConfig.model_validate({**two, "retrieval": {"embedding_model": "a"}})


async def test_a_mixed_embed_route_deploys_without_retrieval_and_its_stores_are_refused(
    tmp_path: Path,
) -> None:
    """The ingress validates the config as written (what `build_app` binds), so a deploy that
    passed `build_app` passes there too; stores then refuse to embed through the route."""
    from gateway.config import GatewayConfig
    from gateway.core.retrieving import Library

    backends = {"a": {"kind": "fake", "model": "a", "endpoints": ["embeddings"]},
                "b": {"kind": "fake", "model": "b", "endpoints": ["embeddings"]}}  # fmt: skip
    config = GatewayConfig.model_validate(
        {"backends": backends, "routes": {"embed": {"candidates": ["a", "b"]}}}
    )
    written = config.model_dump(mode="json", exclude_unset=True)
    assert GatewayConfig.model_validate(written) == config
    with pytest.raises(ValueError, match=r"retrieval\.embedding_model: route 'embed'"):
        GatewayConfig.model_validate(config.model_dump(mode="json"))  # why `exclude_unset`

    library = Library(config.retrieval, lambda: tmp_path / "lib.sqlite", config.routes)
    calls: list[Any] = []

    async def handle(*args: Any) -> Any:
        calls.append(args)

    library.connect(handle)
    store = await library.stores().create_store(Owner("k"), {"name": "docs"}, {})
    options = SearchOptions(5, None, None, None)
    with pytest.raises(RetrievalError, match="may embed with more than one backend") as caught:
        await library.stores().search([store["id"]], "what is in it?", options, {})
    assert caught.value.status == 400 and calls == []
    library.close()
