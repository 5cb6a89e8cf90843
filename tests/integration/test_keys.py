"""Keys, limits and budgets on real Ray Serve: a second gateway application (`/keyed`) with
two ingress replicas and `auth: {mode: keys}` beside the shared stack, its state in a real
PostgreSQL, driven over real HTTP with the official openai client. Limits must hold across
both replicas, not double."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import anthropic
import httpx
import openai
import pytest

from gateway.http.console import COOKIE
from tests.helpers import ROOT, wait_until
from tests.integration.conftest import MASTER_KEY_ENV
from tests.integration.keyed import PRICE, QUESTION, Keyed, burst

pytestmark = pytest.mark.integration


def test_rpm_holds_across_two_ingress_replicas(keyed: Keyed) -> None:
    created = keyed.create("keys", name="rpm60", rpm=60)
    client = keyed.client(created["key"])

    def call() -> Any:
        return client.chat.completions.create(model="free", messages=QUESTION, max_tokens=4)

    started = time.monotonic()
    results = burst(call, 300, 20)
    took = time.monotonic() - started
    refused = [r for r in results if isinstance(r, Exception)]
    print(f"\nrpm 60, 2 replicas: {300 - len(refused)} of 300 answered in {took:.1f}s")
    assert took < 20
    assert 60 <= 300 - len(refused) <= 66  # not 120: the limit is the key's, not a replica's
    assert all(isinstance(r, openai.RateLimitError) for r in refused)
    assert {r.code for r in refused} == {"rate_limit_exceeded"}
    assert all(1 <= int(r.response.headers["retry-after"]) <= 60 for r in refused)
    # Both ingress replicas admitted requests, each on leases of its own.
    usage = keyed.admin.get(f"/v1/gateway/keys/{created['id']}").json()["usage"]
    assert usage["replicas_seen"] == 2


def test_tpm_holds_across_two_ingress_replicas(keyed: Keyed) -> None:
    created = keyed.create("keys", name="tpm", tpm=400)
    client = keyed.client(created["key"])

    def call() -> Any:
        return client.chat.completions.create(model="free", messages=QUESTION, max_tokens=4)

    results = burst(call, 150, 20)
    answered = [r for r in results if not isinstance(r, Exception)]
    tokens = sum(r.usage.total_tokens for r in answered)
    assert all(isinstance(r, openai.RateLimitError) for r in results if r not in answered)
    print(f"\ntpm 400, 2 replicas: {len(answered)} answered, {tokens} tokens")
    # The bound: limit + replicas x the larger of a lease (20) and one request's estimate.
    assert 400 * 0.75 <= tokens <= 400 + 2 * 20 + 2 * 16


def test_a_team_limit_caps_its_keys_together(keyed: Keyed) -> None:
    keyed.create("teams", name="search", rpm=30)
    first = keyed.create("keys", name="search-a", team="search", rpm=100)["key"]
    second = keyed.create("keys", name="search-b", team="search", rpm=100)["key"]
    clients = [keyed.client(first), keyed.client(second)]
    turn = iter(range(10**6))

    def call() -> Any:
        client = clients[next(turn) % 2]
        return client.chat.completions.create(model="free", messages=QUESTION, max_tokens=4)

    results = burst(call, 100, 10)
    answered = sum(not isinstance(r, Exception) for r in results)
    print(f"\nteam rpm 30 over two keys: {answered} answered")
    assert 30 <= answered <= 30 + 2 * 1  # the team's 30, whichever key asked


def test_refusals_map_to_the_sdk_exception_classes(keyed: Keyed) -> None:
    created = keyed.create("keys", name="narrow", models=["free"])
    with pytest.raises(openai.AuthenticationError) as unknown:
        keyed.client("sk-gw-unknown").chat.completions.create(model="free", messages=QUESTION)
    assert unknown.value.code == "invalid_api_key"
    with pytest.raises(openai.PermissionDeniedError) as other_model:
        keyed.client(created["key"]).chat.completions.create(model="auto", messages=QUESTION)
    assert other_model.value.code == "model_not_allowed"
    with pytest.raises(openai.PermissionDeniedError):
        keyed.client(created["key"]).with_options().get("/gateway/keys", cast_to=object)


def test_the_anthropic_sdk_authenticates_with_x_api_key(keyed: Keyed) -> None:
    """`/v1/messages` takes the key as Anthropic's SDK sends it, and refuses in its shapes."""
    created = keyed.create("keys", name="claude-code", models=["free"])

    def sdk(key: str) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=keyed.root, api_key=key, max_retries=0)

    message = sdk(created["key"]).messages.create(
        model="free", max_tokens=8, messages=[{"role": "user", "content": "one two"}]
    )
    assert message.content[0].text == "one two"  # type: ignore[union-attr]
    with pytest.raises(anthropic.AuthenticationError) as unknown:
        sdk("sk-gw-unknown").messages.create(model="free", max_tokens=8, messages=QUESTION)
    assert unknown.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    with pytest.raises(anthropic.PermissionDeniedError) as other_model:
        sdk(created["key"]).messages.create(model="auto", max_tokens=8, messages=QUESTION)
    assert other_model.value.body["error"]["type"] == "permission_error"  # type: ignore[index]

    def mine() -> list[dict[str, Any]]:
        usage = keyed.admin.get("/v1/gateway/usage", params={"group_by": "key", "since": "1h"})
        return [row for row in usage.json()["data"] if row["key"] == created["id"]]

    # Recorded under its key, by whichever of the two ingress replicas answered (each writes
    # its own batches: the other's may land a moment later).
    wait_until(lambda: bool(mine()), 15, "the key's row in the usage")
    assert mine()[0]["requests"] >= 1


def test_the_console_needs_an_admin_key_and_signs_in_with_a_cookie(keyed: Keyed) -> None:
    user = keyed.create("keys", name="not-admin")["key"]
    with httpx.Client(base_url=keyed.root, timeout=30) as browser:
        assert browser.get("/console").status_code == 401  # the sign-in page
        refused = browser.post("/console/login", data={"key": user})
        assert refused.status_code == 401 and COOKIE not in refused.cookies
        signed_in = browser.post("/console/login", data={"key": keyed.stack.secrets[3]})
        assert signed_in.status_code == 303
        cookie = signed_in.headers["set-cookie"]
        assert (
            "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/keyed/console" in cookie
        )
        assert keyed.stack.secrets[3] not in cookie  # a session's token, not the key
        page = browser.get("/console")  # the cookie, sent back by the client
        assert page.status_code == 200 and "free" in page.text
        # Both ingress replicas know the session: it lives in the shared state.
        assert all(browser.get("/console").status_code == 200 for _ in range(6))
        assert browser.post("/console/logout").status_code == 403  # no CSRF token
        csrf = page.text.split('name=csrf value="', 1)[1].split('"', 1)[0]
        browser.post("/console/logout", data={"csrf": csrf})
        assert browser.get("/console").status_code == 401
    bearer = httpx.get(f"{keyed.root}/console/usage", headers=dict(keyed.admin.headers))
    assert bearer.status_code == 200


def test_a_budget_counts_streams_and_survives_a_restart(keyed: Keyed) -> None:
    created = keyed.create("keys", name="budget", budget_usd=0.01, budget_period="day")
    client = keyed.client(created["key"])
    costs = []
    with pytest.raises(openai.RateLimitError) as caught:
        for n in range(400):
            if n % 2:
                stream = client.chat.completions.create(
                    model="priced", messages=QUESTION, stream=True, max_tokens=40
                )
                usage = [chunk for chunk in stream][-1].usage
                assert usage is None  # the client did not ask for it; the gateway did
            else:
                client.chat.completions.create(model="priced", messages=QUESTION, max_tokens=40)
            costs.append(n)
    assert caught.value.code == "insufficient_quota"
    assert len(costs) >= 10  # streamed ones were costed, or this would never stop
    time.sleep(1.0)  # the replicas report spend every 0.25 s
    spent = keyed.admin.get(f"/v1/gateway/keys/{created['id']}").json()["usage"]["spend_usd"]
    per_request = spent / len(costs)
    print(f"\nbudget $0.01: {len(costs)} answered, ${spent:.6f} spent")
    assert 0.01 - per_request <= spent <= 0.01 + 2 * per_request
    # A full restart of the gateway application: the spend is read back, the key still refused.
    keyed.delete()
    keyed.deploy()
    with pytest.raises(openai.RateLimitError) as again:
        client.chat.completions.create(model="priced", messages=QUESTION, max_tokens=40)
    assert again.value.code == "insufficient_quota"
    after = keyed.admin.get(f"/v1/gateway/keys/{created['id']}").json()["usage"]["spend_usd"]
    assert after == pytest.approx(spent)


def test_revocation_reaches_every_replica_within_a_second(keyed: Keyed) -> None:
    created = keyed.create("keys", name="revoked-soon")
    client = keyed.client(created["key"])

    def call() -> Any:
        return client.chat.completions.create(model="free", messages=QUESTION, max_tokens=2)

    assert not any(isinstance(r, Exception) for r in burst(call, 40, 10))  # both replicas know it
    assert keyed.admin.delete(f"/v1/gateway/keys/{created['id']}").json()["deleted"]
    time.sleep(1.0)
    results = burst(call, 40, 10)
    assert all(isinstance(r, openai.AuthenticationError) for r in results)


def test_every_keyed_answer_carries_rate_limit_headers(keyed: Keyed) -> None:
    created = keyed.create("keys", name="headers", rpm=1000, tpm=100000)
    client = keyed.client(created["key"])
    plain = client.chat.completions.with_raw_response.create(model="free", messages=QUESTION)
    streamed = client.chat.completions.with_raw_response.create(
        model="free", messages=QUESTION, stream=True
    )
    for raw in (plain, streamed):
        for name in ("requests", "tokens"):
            assert int(raw.headers[f"x-ratelimit-limit-{name}"]) in (1000, 100000)
            assert int(raw.headers[f"x-ratelimit-remaining-{name}"]) >= 0
            assert raw.headers[f"x-ratelimit-reset-{name}"]

    # Usage per key, with the key's name: the admin's view of the ledger, which the other
    # replica writes within its batch interval.
    def counted() -> bool:
        usage = keyed.admin.get("/v1/gateway/usage", params={"group_by": "key"}).json()["data"]
        return any(row["key_name"] == "headers" and row["requests"] == 2 for row in usage)

    wait_until(counted, 5, "both requests in the ledger")


def test_the_cli_creates_a_team_and_a_key_that_works(keyed: Keyed) -> None:
    def cli(*args: str) -> dict[str, Any]:
        command = [sys.executable, "-m", "gateway", *args[:1], "--url", keyed.root,
                   "--master-key-env", MASTER_KEY_ENV, *args[1:]]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    assert cli("teams", "create", "cli-team", "--rpm", "1000")["id"] == "cli-team"
    created = cli("keys", "create", "--team", "cli-team", "--models", "auto,free",
                  "--budget-usd", "20/day", "--rpm", "600", "--tpm", "200000",
                  "--expires", "30d", "--metadata", "owner=ana")  # fmt: skip
    keyed.stack.secrets.append(created["key"])
    assert (created["budget_usd"], created["budget_period"]) == (20.0, "day")
    assert created["models"] == ["auto", "free"] and created["metadata"] == {"owner": "ana"}
    assert 29 * 86400 < created["expires_at"] - time.time() <= 30 * 86400
    answer = keyed.client(created["key"]).chat.completions.create(model="auto", messages=QUESTION)
    assert answer.choices[0].message.content
    listed = cli("keys", "list")["data"]
    assert created["id"] in {key["id"] for key in listed}
    assert created["key"] not in json.dumps(listed)
    assert cli("keys", "revoke", created["id"])["deleted"] is True


def test_a_burst_asking_for_many_answers_stays_within_the_budget(keyed: Keyed) -> None:
    """Issue 19, through both ingress replicas: 40 requests at once, each asking for n=3
    answers of up to 40 tokens. Each one's worst case is reserved before it runs, so what the
    upstream bills for the key stays within its budget (before, every request was admitted
    while any budget was left: 40 at once spent many times the budget)."""
    budget = 0.004
    created = keyed.create(
        "keys", name="burst-n", budget_usd=budget, budget_period="day", max_parallel=64
    )
    client = keyed.client(created["key"])

    def call() -> Any:
        return client.chat.completions.create(model="priced", messages=QUESTION, max_tokens=40, n=3)

    results = burst(call, 40, 20)
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    answered = [r for r in results if not isinstance(r, openai.APIStatusError)]
    assert answered and len(answered) + len(refused) == 40, results
    assert {r.code for r in refused} == {"insufficient_quota"}
    time.sleep(1.0)  # the replicas report spend every 0.25 s
    spent = keyed.admin.get(f"/v1/gateway/keys/{created['id']}").json()["usage"]["spend_usd"]
    billed = sum(
        (a.usage.prompt_tokens * PRICE["input_per_mtok"]
         + a.usage.completion_tokens * PRICE["output_per_mtok"]) / 1e6
        for a in answered
    )  # fmt: skip
    print(f"\nbudget ${budget}: {len(answered)} of 40 answered, ${spent:.6f} spent")
    assert spent == pytest.approx(billed, rel=1e-6)  # every billed answer is charged
    assert spent <= budget + 1e-9  # and the budget is a cap
