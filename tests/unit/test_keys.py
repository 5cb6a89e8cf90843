"""Keys, limits and budgets through the whole HTTP app in process: the official openai client
over httpx's ASGI transport, a real `AccessState` (SQLite) behind the in-process transport,
`FakeBackend`s with prices. The same paths run on real Serve in
tests/integration/test_keys.py."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from access import AccessClient, AccessState, LocalTransport, Transport
from deployments.serving import connect_backend
from gateway.config import GatewayConfig
from gateway.core.build import build_gateway
from gateway.core.keys import KeyGate
from gateway.http.app import create_app
from tests.helpers import fake_backends

pytestmark = pytest.mark.asyncio(loop_scope="session")  # the loop the fixtures run in
MASTER = "sk-master-" + secrets.token_hex(16)
QUESTION = [{"role": "user", "content": "one two three four"}]
CONFIG: dict[str, Any] = {
    "auth": {"mode": "keys", "sync_interval_s": 0.05},
    "backends": {
        # 4 prompt words + 4 answer words at $1000/$2000 per 1M: $0.012 a request.
        "dear": {"kind": "fake", "model": "dear-1",
                 "pricing": {"input_per_mtok": 1000, "output_per_mtok": 2000}},
        "free": {"kind": "fake", "model": "free-1"},
    },
    "routes": {"auto": {"candidates": ["free"]}},
}  # fmt: skip


class Switch(Transport):
    """The real state behind a transport that can be cut, like a dead state replica."""

    def __init__(self, state: AccessState) -> None:
        self.inner = LocalTransport(state)
        self.down = False

    async def call(self, op: str, payload: dict[str, Any]) -> dict[str, Any]:
        if self.down:
            raise ConnectionError("state replica gone")
        return await self.inner.call(op, payload)


@dataclass
class Keyed:
    admin: httpx.AsyncClient
    app: Any
    state: AccessState
    switch: Switch
    tmp: Path
    gate: KeyGate

    def client(self, key: str) -> openai.AsyncOpenAI:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://t")
        return openai.AsyncOpenAI(
            base_url="http://t/v1", api_key=key, max_retries=0, http_client=http
        )

    async def create(self, kind: str, **spec: Any) -> dict[str, Any]:
        response = await self.admin.post(f"/v1/gateway/{kind}", json=spec)
        assert response.status_code == 201, response.text
        return dict(response.json())


async def start(tmp: Path, base: dict[str, Any] | None = None, **auth: Any) -> Keyed:
    """The gateway of `base` (default: CONFIG) with keys on, in process."""
    base = base or CONFIG
    config = GatewayConfig.load(
        {
            **base,
            "auth": {**base["auth"], **auth},
            "ledger": {"path": str(tmp / "ledger.sqlite")},
            "request_log": {"path": str(tmp / "requests.jsonl"), "bodies": True},
        }
    )
    backends = fake_backends(config)
    unavailable = {  # a provider whose key cannot be read, as the deploy would plan it
        name: backend.api_key()[1]
        for name, backend in config.backends.items()
        if name not in backends and hasattr(backend, "api_key")
    }
    backends |= {
        name: connect_backend(name, config.backends[name], None, reason)
        for name, reason in unavailable.items()
    }
    state = AccessState(
        tmp / "access.sqlite",
        0.05,
        config.auth.lease_ttl_s,
        budgeted_max_parallel=config.auth.budgeted_max_parallel,
    )
    switch = Switch(state)
    gate = KeyGate(AccessClient(config.auth, switch, MASTER))
    gateway, ledger = build_gateway(config, backends, tmp, keys=gate, unavailable=unavailable)
    gateway.start()
    app = create_app(gateway, config, ledger)
    admin = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://t",
        headers={"authorization": f"Bearer {MASTER}"},
    )
    keyed = Keyed(admin, app, state, switch, tmp, gate)
    keyed.gateway = gateway  # type: ignore[attr-defined]
    keyed.ledger = ledger  # type: ignore[attr-defined]
    return keyed


@pytest.fixture
async def keyed(tmp_path: Path) -> AsyncIterator[Keyed]:
    keyed = await start(tmp_path)
    yield keyed
    await keyed.gateway.aclose()  # type: ignore[attr-defined]


async def test_no_key_or_an_unknown_key_is_refused_with_the_sdk_class(keyed: Keyed) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        await keyed.client("sk-gw-not-a-key").chat.completions.create(
            model="free", messages=QUESTION
        )
    assert caught.value.code == "invalid_api_key"
    for path in ("/v1/chat/completions", "/v1/models", "/v1/gateway/backends"):
        method = "POST" if "chat" in path else "GET"
        response = await keyed.admin.request(method, path, headers={"authorization": ""})
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == "invalid_api_key"
    # The health probe needs no key.
    health = await keyed.admin.get("/health", headers={"authorization": ""})
    assert health.status_code != 401 and "backends" in health.json()
    # The master key may call models.
    answer = await keyed.client(MASTER).chat.completions.create(model="free", messages=QUESTION)
    assert answer.choices[0].message.content == "one two three four"


async def test_a_created_key_is_shown_once_and_stored_as_a_hash(keyed: Keyed) -> None:
    await keyed.create("teams", name="search", rpm=100, metadata={"owner": "ana"})
    created = await keyed.create(
        "keys", name="app", team="search", models=["free", "au*"], metadata={"tags": ["x"]}
    )
    secret = created["key"]
    assert secret.startswith("sk-gw-") and created["prefix"] == secret[:10]
    assert created["id"].startswith("key_") and created["team"] == "search"
    listed = (await keyed.admin.get("/v1/gateway/keys")).json()["data"]
    got = (await keyed.admin.get(f"/v1/gateway/keys/{created['id']}")).json()
    assert secret not in str(listed) + str(got)
    assert got["usage"]["spend_usd"] == 0 and got["prefix"] == created["prefix"]
    answer = await keyed.client(secret).chat.completions.create(model="auto", messages=QUESTION)
    assert answer.choices[0].message.content == "one two three four"
    # Models outside the allow-list: 403; the model list shows only what the key may use.
    with pytest.raises(openai.PermissionDeniedError) as caught:
        await keyed.client(secret).chat.completions.create(model="dear", messages=QUESTION)
    assert caught.value.code == "model_not_allowed"
    ids = {model.id async for model in keyed.client(secret).models.list()}
    assert ids == {"free", "auto"}
    # A normal key gets 403 on every admin endpoint.
    key_path = f"/v1/gateway/keys/{created['id']}"
    admin_calls = [("GET", "/v1/gateway/keys"), ("POST", "/v1/gateway/teams"),
                   ("GET", "/v1/gateway/usage"), ("DELETE", key_path)]  # fmt: skip
    for method, path in admin_calls:
        response = await keyed.admin.request(
            method, path, headers={"authorization": f"Bearer {secret}"}, json={"name": "x"}
        )
        assert response.status_code == 403, (method, path)
        assert response.json()["error"]["code"] == "admin_required"
    await keyed.gateway.aclose()  # type: ignore[attr-defined]
    stored = b"".join(path.read_bytes() for path in keyed.tmp.iterdir() if path.is_file())
    assert secret.encode() not in stored and MASTER.encode() not in stored
    rows = keyed.ledger.rows()  # type: ignore[attr-defined]
    assert {(r["key_id"], r["key_name"], r["team"]) for r in rows} == {
        (created["id"], "app", "search")
    }
    assert rows[0]["key_metadata"] == '{"tags":["x"]}'


async def test_requests_per_minute_answer_429_with_openai_headers(keyed: Keyed) -> None:
    secret = (await keyed.create("keys", name="slow", rpm=5, tpm=1000))["key"]
    client = keyed.client(secret)
    seen = []
    for _ in range(5):
        raw = await client.chat.completions.with_raw_response.create(
            model="free", messages=QUESTION
        )
        seen.append(int(raw.headers["x-ratelimit-remaining-requests"]))
        assert raw.headers["x-ratelimit-limit-requests"] == "5"
        assert raw.headers["x-ratelimit-limit-tokens"] == "1000"
        assert raw.headers["x-ratelimit-reset-requests"].endswith("s")
    assert seen == sorted(seen, reverse=True) and seen[-1] == 0
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="free", messages=QUESTION)
    assert caught.value.code == "rate_limit_exceeded"
    assert 1 <= int(caught.value.response.headers["retry-after"]) <= 60
    assert caught.value.response.headers["x-ratelimit-remaining-requests"] == "0"


async def test_a_budget_counts_streamed_requests_and_is_a_cap(keyed: Keyed) -> None:
    """Each request's worst case ($0.012 at max_tokens=4) is reserved before it runs: the
    fifth would pass $0.05, so it is refused, and what was spent never exceeds the budget."""
    created = await keyed.create("keys", name="spender", budget_usd=0.05, budget_period="day")
    client = keyed.client(created["key"])
    answered = 0
    with pytest.raises(openai.RateLimitError) as caught:
        for n in range(20):
            if n % 2:
                stream = await client.chat.completions.create(
                    model="dear", messages=QUESTION, stream=True, max_tokens=4
                )
                async for _ in stream:
                    pass
            else:
                await client.chat.completions.create(model="dear", messages=QUESTION, max_tokens=4)
            answered += 1
    assert caught.value.code == "insufficient_quota"
    await keyed.gateway.aclose()  # type: ignore[attr-defined]
    rows = keyed.ledger.rows()  # type: ignore[attr-defined]
    spent = sum(r["cost_usd"] or 0 for r in rows)
    assert sum(r["stream"] for r in rows if r["status"] == 200) == answered // 2
    assert answered == 4
    assert 0.05 - 0.012 <= spent <= 0.05 + 1e-12  # a cap: never past the budget
    stored = keyed.state.op_get("key", created["id"])["usage"]["spend_usd"]
    assert stored == pytest.approx(spent)


async def test_revoked_and_expired_keys_are_refused(keyed: Keyed) -> None:
    created = await keyed.create("keys", name="short")
    client = keyed.client(created["key"])
    await client.chat.completions.create(model="free", messages=QUESTION)
    assert (await keyed.admin.delete(f"/v1/gateway/keys/{created['id']}")).json()["deleted"]
    with pytest.raises(openai.AuthenticationError):
        await client.chat.completions.create(model="free", messages=QUESTION)
    old = await keyed.create("keys", name="old", expires_at="2001-01-01T00:00:00Z")
    with pytest.raises(openai.AuthenticationError):
        await keyed.client(old["key"]).chat.completions.create(model="free", messages=QUESTION)


async def test_admin_mistakes_get_clear_4xx(keyed: Keyed) -> None:
    cases = [
        ({"name": "k", "team": "nobody"}, 400, "team_not_found"),
        ({"name": "k", "rpm": -1}, 400, "invalid_value"),
        ({"name": "k", "colour": "red"}, 400, "invalid_value"),
        ({"name": "k", "budget_period": "week"}, 400, "invalid_value"),
    ]
    for body, status, code in cases:
        response = await keyed.admin.post("/v1/gateway/keys", json=body)
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), body
    assert (await keyed.admin.get("/v1/gateway/keys/key_nope")).status_code == 404
    await keyed.create("teams", name="t")
    await keyed.create("keys", name="member", team="t")
    response = await keyed.admin.delete("/v1/gateway/teams/t")
    assert (response.status_code, response.json()["error"]["code"]) == (409, "team_in_use")


@pytest.mark.parametrize("mode", ["fail_closed", "fail_open"])
async def test_an_unreachable_state_fails_as_configured(tmp_path: Path, mode: str) -> None:
    keyed = await start(tmp_path, on_state_unavailable=mode, lease_ttl_s=0.2)
    try:
        secret = (await keyed.create("keys", name="k", rpm=1000))["key"]
        client = keyed.client(secret)
        await client.chat.completions.create(model="free", messages=QUESTION)
        keyed.switch.down = True
        await asyncio.sleep(0.3)  # the lease runs out: the next request must renew
        if mode == "fail_closed":
            with pytest.raises(openai.InternalServerError) as caught:
                await client.chat.completions.create(model="free", messages=QUESTION)
            assert caught.value.status_code == 503
            assert caught.value.code == "access_state_unavailable"
        else:
            for _ in range(3):
                await client.chat.completions.create(model="free", messages=QUESTION)
        # A key this replica never saw cannot be checked either way.
        with pytest.raises(openai.InternalServerError):
            await keyed.client("sk-gw-unseen").chat.completions.create(
                model="free", messages=QUESTION
            )
        keyed.switch.down = False
        await asyncio.sleep(0.3)
        await client.chat.completions.create(model="free", messages=QUESTION)
    finally:
        await keyed.gateway.aclose()  # type: ignore[attr-defined]
    if mode == "fail_open":  # what was admitted while cut off was reported afterwards
        window = keyed.state.quota._windows[
            (f"key:{keyed.state.op_list('key')[0]['id']}", "requests")
        ]
        assert sum(amount for _, amount in window) >= 5


async def test_a_patched_limit_and_explain_follow_the_key(keyed: Keyed) -> None:
    created = await keyed.create("keys", name="tuned", rpm=1000, models=["free"])
    client = keyed.client(created["key"])
    raw = await client.chat.completions.with_raw_response.create(model="free", messages=QUESTION)
    assert raw.headers["x-ratelimit-limit-requests"] == "1000"
    patched = await keyed.admin.patch(f"/v1/gateway/keys/{created['id']}", json={"rpm": 7})
    assert patched.status_code == 200 and patched.json()["rpm"] == 7
    raw = await client.chat.completions.with_raw_response.create(model="free", messages=QUESTION)
    assert raw.headers["x-ratelimit-limit-requests"] == "7"
    # Explaining a route needs a key that may use it.
    body = {"model": "free", "messages": QUESTION}
    auth = {"authorization": f"Bearer {created['key']}"}
    explained = await keyed.admin.post("/v1/routing/explain", json=body, headers=auth)
    assert explained.status_code == 200 and explained.json()["chosen"] == "free"
    refused = await keyed.admin.post(
        "/v1/routing/explain", json={**body, "model": "dear"}, headers=auth
    )
    assert refused.status_code == 403
    # An explicit null lifts a limit; a name cannot change.
    lifted = await keyed.admin.patch(f"/v1/gateway/keys/{created['id']}", json={"rpm": None})
    assert lifted.json()["rpm"] is None
    renamed = await keyed.admin.patch(f"/v1/gateway/keys/{created['id']}", json={"name": "x"})
    assert renamed.status_code == 400
