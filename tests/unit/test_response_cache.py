"""The response cache in the pipeline, over in-process fakes: what is a hit, a miss or a
bypass, what is never stored, whose entries are whose, expiry, purge, stale models, and a hit's
record (cost 0, the cost it saved)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from cache import DatabaseEntries, Entries, ReplicaEntries, RouteCache, SemanticConfig
from gateway.config import ConfigError, GatewayConfig
from gateway.core.build import build_gateway
from gateway.core.caching import ResponseCache
from gateway.core.replies import Reply, StreamReply
from storage import open_database
from tests.helpers import fake_backends

PRICE = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}
CONFIG: dict[str, Any] = {
    "backends": {
        "echo": {"kind": "fake", "model": "echo-1", "pricing": PRICE},
        "broken": {"kind": "fake", "model": "broken-1", "fail_status": 503,
                   "retry": {"max_retries": 0}},
        "refuses": {"kind": "fake", "model": "refuses-1", "fail_status": 400},
        "snaps": {"kind": "fake", "model": "snaps-1", "reply": "a b c d", "fail_after_tokens": 2},
    },
    "routes": {
        "cached": {"candidates": ["echo"]},
        "shared": {"candidates": ["echo"]},
        "warm": {"candidates": ["echo"]},
        "plain": {"candidates": ["echo"]},
        "failover": {"candidates": ["broken"], "fallbacks": ["echo"]},
        "strict": {"candidates": ["refuses"]},
        "snapping": {"candidates": ["snaps"]},
    },
    "cache": {
        "routes": {
            "cached": {"mode": "exact", "ttl_s": 60},
            "shared": {"mode": "exact", "scope": "shared"},
            "warm": {"mode": "exact", "max_temperature": 1.0},
            "failover": {"mode": "exact"},
            "strict": {"mode": "exact"},
            "snapping": {"mode": "exact"},
        }
    },
}  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def entries_in(where: str, url: str | None, folder: Path, clock: Clock) -> Entries:
    """The replica's own entries, or entries in a database (a SQLite file or PostgreSQL)."""
    if where == "replica":
        return ReplicaEntries(10_000, 2**28, clock)
    return DatabaseEntries(open_database(url, folder / "cache.sqlite"), 10_000, 2**28, clock)


class Harness:
    def __init__(self, tmp_path: Path, where: str = "replica", url: str | None = None) -> None:
        config = GatewayConfig.load(
            {
                **CONFIG,
                "ledger": {"path": str(tmp_path / "ledger.sqlite")},
                "request_log": {"path": str(tmp_path / "requests.jsonl")},
            }
        )
        self.backends = fake_backends(config)
        gateway, ledger = build_gateway(config, self.backends, tmp_path)
        assert ledger is not None and gateway.cache is not None
        self.clock = Clock()
        gateway.cache = ResponseCache(
            config.cache, gateway.cache.versions, None, entries_in(where, url, tmp_path, self.clock)
        )
        self.gateway, self.ledger = gateway, ledger
        self.cache: ResponseCache = gateway.cache
        self.ids = (f"req-{n}" for n in range(10**6))

    async def held(self) -> int:
        return int((await self.cache.describe())["entries"])

    async def call(
        self, model: str, text: str = "hi there", headers: dict[str, str] | None = None, **body: Any
    ) -> Reply | StreamReply:
        body = {"model": model, "messages": [{"role": "user", "content": text}], **body}
        reply = await self.gateway.handle(
            "chat/completions", orjson.dumps(body), headers or {}, next(self.ids)
        )
        await self.cache.settled()  # a database's writes are not waited for by the request
        return reply

    async def text(self, reply: Reply | StreamReply) -> bytes:
        if isinstance(reply, Reply):
            return reply.body
        try:
            return b"".join([chunk async for chunk in reply])
        finally:
            await reply.aclose()
            await self.cache.settled()

    def calls(self, backend: str) -> int:
        return len(self.backends[backend].calls)  # type: ignore[attr-defined]

    async def rows(self) -> list[dict[str, Any]]:
        await self.gateway.aclose()
        return self.ledger.rows()


@pytest.fixture(params=["replica", "sqlite", "postgresql"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    """Every exact-mode test with entries in the replica and in each database."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    harness = Harness(tmp_path, request.param, url)
    yield harness
    harness.cache.entries.close()


async def test_a_repeat_is_a_hit_that_costs_nothing_and_saves_the_first_cost(
    harness: Harness,
) -> None:
    first = await harness.call("cached", temperature=0)
    second = await harness.call("cached", temperature=0)
    assert isinstance(first, Reply) and isinstance(second, Reply)
    assert (first.headers["x-gateway-cache"], second.headers["x-gateway-cache"]) == ("miss", "hit")
    assert harness.calls("echo") == 1
    one, two = orjson.loads(first.body), orjson.loads(second.body)
    assert one["choices"] == two["choices"] and one["id"] != two["id"]
    assert float(second.headers["x-gateway-cost-usd"]) == 0.0
    miss, hit = sorted(await harness.rows(), key=lambda row: row["ts"])
    assert (miss["cache"], hit["cache"]) == ("miss", "hit")
    assert hit["cost_usd"] == 0.0 and miss["cost_usd"] > 0
    assert hit["saved_usd"] == pytest.approx(miss["cost_usd"])
    assert hit["usage_source"] == "cache" and hit["backend"] == "echo"
    (usage,) = harness.ledger.totals("route")
    assert (usage["route"], usage["requests"], usage["cache_hits"], usage["cache_misses"]) == (
        "cached", 2, 1, 1,
    )  # fmt: skip
    assert usage["saved_usd"] == pytest.approx(miss["cost_usd"])


async def test_sampled_requests_and_no_store_bypass_the_cache(harness: Harness) -> None:
    for _ in range(2):
        assert (await harness.call("cached")).headers["x-gateway-cache"] == "bypass"  # temp 1
    no_store = {"x-gateway-cache": "no-store"}
    for _ in range(2):
        reply = await harness.call("cached", headers=no_store, temperature=0)
        assert reply.headers["x-gateway-cache"] == "bypass"
    assert harness.calls("echo") == 4
    # A route that allows sampling caches it; a route without a cache says bypass.
    await harness.call("warm", temperature=0.7)
    assert (await harness.call("warm", temperature=0.7)).headers["x-gateway-cache"] == "hit"
    assert (await harness.call("plain", temperature=0)).headers["x-gateway-cache"] == "bypass"


async def test_no_cache_fetches_anew_and_refreshes_the_entry(harness: Harness) -> None:
    await harness.call("cached", temperature=0)
    body = {"routing": {"cache": "no-cache"}, "temperature": 0}
    assert (await harness.call("cached", **body)).headers["x-gateway-cache"] == "miss"
    assert harness.calls("echo") == 2
    assert (await harness.call("cached", temperature=0)).headers["x-gateway-cache"] == "hit"


async def test_a_bad_directive_is_a_400_naming_it(harness: Harness) -> None:
    reply = await harness.call("cached", headers={"x-gateway-cache": "max-age=3"}, temperature=0)
    assert reply.status == 400
    assert orjson.loads(reply.body)["error"]["param"] == "x-gateway-cache"


async def test_anything_that_changes_the_answer_misses(harness: Harness) -> None:
    await harness.call("cached", temperature=0)
    variants: list[dict[str, Any]] = [
        {"temperature": 0, "max_tokens": 5},
        {"temperature": 0, "response_format": {"type": "json_object"}},
        {"temperature": 0, "messages": [{"role": "system", "content": "Be terse."},
                                        {"role": "user", "content": "hi there"}]},
        {"temperature": 0, "tools": [{"type": "function", "function": {"name": "f"}}]},
    ]  # fmt: skip
    for body in variants:
        reply = await harness.call("cached", **body)
        assert reply.headers["x-gateway-cache"] == "miss", body
    # ... and what does not change it still hits: who asks, metadata, content as parts.
    parts = [{"type": "text", "text": "hi there "}]
    same = {"temperature": 0, "user": "u-7", "metadata": {"a": "b"},
            "messages": [{"role": "user", "content": parts}]}  # fmt: skip
    assert (await harness.call("cached", **same)).headers["x-gateway-cache"] == "hit"


async def test_keys_never_see_each_others_entries_unless_the_route_shares(
    harness: Harness,
) -> None:
    alice, bob = {"authorization": "Bearer sk-alice"}, {"authorization": "Bearer sk-bob"}
    await harness.call("cached", headers=alice, temperature=0)
    assert (await harness.call("cached", headers=bob, temperature=0)).headers[
        "x-gateway-cache"
    ] == "miss"
    assert (await harness.call("cached", headers=alice, temperature=0)).headers[
        "x-gateway-cache"
    ] == "hit"
    await harness.call("shared", headers=alice, temperature=0)
    assert (await harness.call("shared", headers=bob, temperature=0)).headers[
        "x-gateway-cache"
    ] == "hit"


async def test_streams_are_replayed_as_the_same_events(harness: Harness) -> None:
    live = await harness.text(await harness.call("cached", stream=True, temperature=0))
    replayed_reply = await harness.call("cached", stream=True, temperature=0)
    assert isinstance(replayed_reply, StreamReply)
    assert replayed_reply.headers["x-gateway-cache"] == "hit"
    replayed = await harness.text(replayed_reply)
    assert harness.calls("echo") == 1

    def events(raw: bytes) -> list[Any]:
        out = []
        for line in raw.split(b"\n"):
            if line.startswith(b"data: {"):
                event = orjson.loads(line[6:])
                out.append({k: v for k, v in event.items() if k != "id"})
            elif line.startswith(b"data: "):
                out.append(line)
        return out

    assert events(live) == events(replayed) and events(live)[-1] == b"data: [DONE]"
    assert live != replayed  # a new id
    # A whole answer is its own entry.
    assert (await harness.call("cached", temperature=0)).headers["x-gateway-cache"] == "miss"
    hit = [row for row in await harness.rows() if row["cache"] == "hit"]
    assert len(hit) == 1 and hit[0]["stream"] and hit[0]["completion_tokens"]


async def test_errors_fallbacks_and_broken_streams_are_never_stored(harness: Harness) -> None:
    for _ in range(2):
        assert (await harness.call("strict", temperature=0)).status == 400
        reply = await harness.call("failover", temperature=0)  # answered by a fallback
        assert reply.status == 200 and reply.headers["x-gateway-cache"] == "miss"
        await harness.text(await harness.call("snapping", stream=True, temperature=0))
    assert harness.calls("echo") == 2 and harness.calls("snaps") == 2
    assert await harness.held() == 0


async def test_entries_expire_and_admins_purge_them(harness: Harness) -> None:
    await harness.call("cached", temperature=0)
    harness.clock.now += 61
    assert (await harness.call("cached", temperature=0)).headers["x-gateway-cache"] == "miss"
    await harness.call("shared", temperature=0)
    assert await harness.cache.purge(route="shared") == 1
    assert (await harness.call("shared", temperature=0)).headers["x-gateway-cache"] == "miss"
    assert await harness.cache.purge() == 2
    assert await harness.held() == 0


async def test_an_answer_from_a_newer_model_makes_older_entries_stale(harness: Harness) -> None:
    await harness.call("cached", temperature=0)
    harness.cache.entries.saw_model("echo", "echo-2")  # the provider moved its alias
    assert (await harness.call("cached", temperature=0)).headers["x-gateway-cache"] == "miss"
    assert harness.calls("echo") == 2


def test_config_mistakes_name_their_field() -> None:
    base = {"backends": CONFIG["backends"], "routes": CONFIG["routes"]}
    with pytest.raises(ConfigError, match=r"cache\.routes\.nowhere: unknown route"):
        GatewayConfig.load({**base, "cache": {"routes": {"nowhere": {}}}})
    with pytest.raises(ConfigError, match=r"cache\.semantic"):
        GatewayConfig.load({**base, "cache": {"routes": {"cached": {"mode": "semantic"}}}})
    semantic = {"routes": {"cached": {"mode": "semantic"}}, "semantic": {"embedding": "echo"}}
    with pytest.raises(ConfigError, match=r"cache\.semantic\.embedding: 'echo' is neither"):
        GatewayConfig.load({**base, "cache": semantic})


# ---- semantic mode, with the real embedding model (all-MiniLM-L6-v2, offline) ----------------

DATA = Path(__file__).resolve().parents[2] / "data" / "cache"
SEMANTIC: dict[str, Any] = {
    "backends": {
        "echo": {"kind": "fake", "model": "echo-1", "pricing": PRICE},
        "vectors": {"kind": "fake", "model": "vectors-1", "endpoints": ["embeddings"]},
    },
    "routes": {"sem": {"candidates": ["echo"]}},
    "cache": {
        "routes": {"sem": {"mode": "semantic", "scope": "shared"}},
        "semantic": {"embedding": "vectors", "similarity": 0.9},
    },
}


@pytest.fixture(scope="module")
def minilm() -> Any:
    from router import MiniLMEmbedder

    return MiniLMEmbedder(head_tokens=256, tail_tokens=0)


@pytest.fixture
def semantic(tmp_path: Path, minilm: Any) -> Harness:
    harness = Harness.__new__(Harness)
    config = GatewayConfig.load({**SEMANTIC, "ledger": {"path": str(tmp_path / "l.sqlite")}})
    harness.backends = fake_backends(config)
    gateway, ledger = build_gateway(config, harness.backends, tmp_path)
    assert gateway.cache is not None and ledger is not None
    harness.gateway, harness.ledger, harness.cache = gateway, ledger, gateway.cache

    async def embed(text: str) -> list[float]:
        return minilm([text])[0]  # type: ignore[no-any-return]

    harness.cache._embed = embed
    harness.ids = (f"req-{n}" for n in range(10**6))
    return harness


def pairs(name: str) -> list[dict[str, str]]:
    return [orjson.loads(line) for line in (DATA / f"{name}.jsonl").read_text().splitlines()]


async def test_a_paraphrase_hits_and_a_look_alike_is_refused(semantic: Harness) -> None:
    await semantic.call("sem", "What is the capital of France?", temperature=0)
    hit = await semantic.call("sem", "what's France's capital?", temperature=0)
    assert hit.headers["x-gateway-cache"] == "hit"
    assert float(hit.headers["x-gateway-cache-similarity"]) >= 0.9
    assert b"capital of France" in await semantic.text(hit)  # the stored answer, echoed
    miss = await semantic.call("sem", "What is the capital of Australia?", temperature=0)
    assert miss.headers["x-gateway-cache"] == "miss" and semantic.calls("echo") == 2


async def test_the_same_last_turn_in_another_conversation_misses(semantic: Harness) -> None:
    def chat(topic: str) -> list[dict[str, str]]:
        return [
            {"role": "user", "content": f"Let's talk about {topic}."},
            {"role": "assistant", "content": "Sure."},
            {"role": "user", "content": "What is its capital?"},
        ]

    await semantic.call("sem", messages=chat("Spain"), temperature=0)
    again = await semantic.call("sem", messages=chat("Spain"), temperature=0)
    other = await semantic.call("sem", messages=chat("Peru"), temperature=0)
    system = [{"role": "system", "content": "Answer in French."}, *chat("Spain")]
    instructed = await semantic.call("sem", messages=system, temperature=0)
    assert [r.headers["x-gateway-cache"] for r in (again, other, instructed)] == [
        "hit", "miss", "miss"
    ]  # fmt: skip


@pytest.mark.parametrize("name", ["lookalikes.dev", "lookalikes.heldout"])
async def test_no_look_alike_of_the_labelled_sets_is_ever_served(
    semantic: Harness, name: str
) -> None:
    """Each pair's first text answered and stored, its second asked: never a hit."""
    served = []
    for pair in pairs(name):
        await semantic.call("sem", pair["a"], temperature=0)
        reply = await semantic.call("sem", pair["b"], temperature=0)
        if reply.headers["x-gateway-cache"] == "hit":
            served.append(pair)
    assert served == []
    assert semantic.cache.stats.refused > 0  # near enough to be looked at, and turned down


@pytest.mark.parametrize(
    ("name", "least"), [("paraphrases.dev", 0.8), ("paraphrases.heldout", 0.6)]
)
async def test_most_paraphrases_of_the_labelled_sets_hit(
    semantic: Harness, name: str, least: float
) -> None:
    rows = pairs(name)
    hits = 0
    for index, pair in enumerate(rows):
        seed = {"temperature": 0, "seed": index}  # each pair its own entry
        await semantic.call("sem", pair["a"], **seed)
        reply = await semantic.call("sem", pair["b"], **seed)
        hits += reply.headers["x-gateway-cache"] == "hit"
    assert hits / len(rows) >= least


@pytest.mark.parametrize("where", ["sqlite", "postgresql"])
async def test_replicas_sharing_a_database_share_entries_purges_and_models(
    where: str, tmp_path: Path, request: pytest.FixtureRequest, minilm: Any
) -> None:
    """Two ingress replicas over one database (a cluster's `database:`): an answer one stored
    is a hit on the other, in exact and semantic mode; a purge on one reaches both; a model
    change one sees retires the other's entries."""
    url = request.getfixturevalue("postgres_url") if where == "postgresql" else None
    one, two = Harness(tmp_path, where, url), Harness(tmp_path, where, url)
    alice = {"authorization": "Bearer sk-alice"}
    await one.call("cached", headers=alice, temperature=0)
    assert (await two.call("cached", headers=alice, temperature=0)).headers[
        "x-gateway-cache"
    ] == "hit"
    assert (await two.call("cached", headers={"authorization": "Bearer sk-bob"}, temperature=0)
            ).headers["x-gateway-cache"] == "miss"  # fmt: skip
    assert await one.cache.purge(route="cached") == 2
    assert (await two.call("cached", headers=alice, temperature=0)).headers[
        "x-gateway-cache"
    ] == "miss"
    for harness in (one, two):  # semantic: embedded here, ranked over the database's rows

        async def embed(text: str) -> list[float]:
            return minilm([text])[0]  # type: ignore[no-any-return]

        harness.cache._embed = embed
    semantic = {**SEMANTIC["cache"]["routes"]["sem"], "scope": "key"}
    config = one.cache.config.model_copy(
        update={"routes": {**one.cache.config.routes, "cached": RouteCache(**semantic)},
                "semantic": SemanticConfig(embedding="local")}
    )  # fmt: skip
    for harness in (one, two):
        harness.cache.config = config
    await one.call("cached", "What is the capital of France?", temperature=0)
    paraphrase = await two.call("cached", "what's France's capital?", temperature=0)
    look_alike = await two.call("cached", "What is the capital of Australia?", temperature=0)
    assert paraphrase.headers["x-gateway-cache"] == "hit"
    assert look_alike.headers["x-gateway-cache"] == "miss"
    one.cache.entries.saw_model("echo", "echo-2")  # one replica hears of a new model
    again = await two.call("cached", "what's France's capital?", temperature=0)
    assert again.headers["x-gateway-cache"] == "miss"
    for harness in (one, two):
        harness.cache.entries.close()
