"""Neighbours and floods (issue 19): a team cannot take a revoked key's id, random keys cannot
starve the state replica, a key is checked before its body is read, the sign-in form is
bounded, and public health tells no file paths. In process, on the real access state."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.unit.test_keys import QUESTION, Keyed, start

pytestmark = pytest.mark.asyncio(loop_scope="session")
CONFIG: dict[str, Any] = {
    "auth": {"mode": "keys", "sync_interval_s": 0.05},
    "backends": {
        "free": {"kind": "fake", "model": "free-1"},
        "filed": {"kind": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1",
                  "api_key_file": "/nonexistent/secret/path.key"},
    },
    "routes": {"auto": {"candidates": ["free"]}},
}  # fmt: skip


@pytest.fixture
async def keyed(tmp_path: Path) -> AsyncIterator[Keyed]:
    keyed = await start(tmp_path, CONFIG)
    yield keyed
    await keyed.gateway.aclose()  # type: ignore[attr-defined]


async def test_a_revoked_key_does_not_come_back_as_a_team(keyed: Keyed) -> None:
    created = await keyed.create("keys", name="old")
    client = keyed.client(created["key"])
    assert (await keyed.admin.delete(f"/v1/gateway/keys/{created['id']}")).status_code == 200
    taken = await keyed.admin.post("/v1/gateway/teams", json={"name": created["id"]})
    assert taken.status_code in (400, 409)
    assert "key" in taken.json()["error"]["message"]
    await asyncio.sleep(0.2)
    with pytest.raises(openai.AuthenticationError):
        await client.chat.completions.create(model="free", messages=QUESTION)


async def test_a_flood_of_unknown_keys_costs_the_state_a_bounded_number_of_calls(
    keyed: Keyed,
) -> None:
    calls: list[str] = []
    inner = keyed.switch.call

    async def counted(op: str, payload: dict[str, Any]) -> dict[str, Any]:
        calls.append(op)
        return await inner(op, payload)

    keyed.switch.call = counted  # type: ignore[method-assign]
    headers = [{"authorization": f"Bearer sk-gw-{secrets.token_urlsafe(32)}"} for _ in range(300)]
    body = {"model": "free", "messages": QUESTION}
    started = time.monotonic()
    answers = await asyncio.gather(
        *(keyed.admin.post("/v1/chat/completions", json=body, headers=h) for h in headers)
    )
    elapsed = time.monotonic() - started
    assert {a.status_code for a in answers} == {401}
    # A burst of 20, refilled at 20/s while it ran (not one call per key: 300).
    assert calls.count("lookup") <= 20 + 20 * elapsed + 1, (calls.count("lookup"), elapsed)
    assert elapsed < 5.0
    await asyncio.sleep(0.2)  # the flood ebbs: lookups refill
    good = await keyed.create("keys", name="good")
    answer = await keyed.client(good["key"]).chat.completions.create(
        model="free", messages=QUESTION
    )
    assert answer.choices[0].message.content


async def test_a_key_is_checked_before_its_body_is_read(keyed: Keyed) -> None:
    read = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal read
        for _ in range(64):
            read += 1
            yield b" " * 65536

    headers = {"authorization": "Bearer sk-gw-unknown", "content-type": "application/json"}
    transport = httpx.ASGITransport(app=keyed.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as raw:
        answer = await raw.post("/v1/chat/completions", content=body(), headers=headers)
    assert answer.status_code == 401 and read <= 1


async def test_the_sign_in_form_is_bounded(keyed: Keyed) -> None:
    huge = {"key": "x" * 100_000}
    answer = await keyed.admin.post("/console/login", data=huge, headers={"authorization": ""})
    assert answer.status_code == 401  # cut off: no key read from it


async def test_public_health_tells_no_paths_or_os_errors(keyed: Keyed) -> None:
    transport = httpx.ASGITransport(app=keyed.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as anonymous:
        public = (await anonymous.get("/health")).json()
    assert public["backends"]["filed"]["available"] is False
    assert "path.key" not in str(public) and "reason" not in public["backends"]["filed"]
    admin = (await keyed.admin.get("/health")).json()
    assert "path.key" in admin["backends"]["filed"]["reason"]  # the operator sees why


async def signed_in(keyed: Keyed, key: str, host: str = "127.0.0.1") -> httpx.AsyncClient:
    browser = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=keyed.app), base_url=f"http://{host}"
    )
    answer = await browser.post("/console/login", data={"key": key})
    assert answer.status_code == 303, answer.text
    return browser


async def test_the_console_signs_in_to_a_server_side_session(keyed: Keyed) -> None:
    admin = await keyed.create("keys", name="ops", role="admin")
    browser = await signed_in(keyed, admin["key"])
    cookie = browser.cookies.get("gateway_console") or ""
    assert cookie and admin["key"] not in cookie  # a random token, not the key
    page = await browser.get("/console")
    assert page.status_code == 200
    csrf = page.text.split('name=csrf value="', 1)[1].split('"', 1)[0]
    assert (await browser.post("/console/logout")).status_code == 403  # no CSRF token
    stolen = dict(browser.cookies)
    await browser.post("/console/logout", data={"csrf": csrf})
    replay = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=keyed.app), base_url="http://127.0.0.1", cookies=stolen
    )
    assert (await replay.get("/console")).status_code == 401  # ended on the server


async def test_revoking_the_key_ends_its_console_sessions(keyed: Keyed) -> None:
    admin = await keyed.create("keys", name="ops2", role="admin")
    browser = await signed_in(keyed, admin["key"])
    assert (await browser.get("/console")).status_code == 200
    assert (await keyed.admin.delete(f"/v1/gateway/keys/{admin['id']}")).status_code == 200
    await asyncio.sleep(0.2)
    assert (await browser.get("/console")).status_code == 401


async def test_the_console_cookie_is_secure_unless_on_loopback(keyed: Keyed) -> None:
    admin = await keyed.create("keys", name="ops3", role="admin")
    for host, secure in (("127.0.0.1", False), ("gateway.example.com", True)):
        browser = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=keyed.app), base_url=f"http://{host}"
        )
        answer = await browser.post("/console/login", data={"key": admin["key"]})
        assert ("Secure" in answer.headers["set-cookie"]) is secure
