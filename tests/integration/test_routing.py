"""Routing by cost and latency budget over two real upstreams with known latencies and prices.

`slow-cheap` answers 10 tokens in ~390 ms, `fast-dear` in ~40 ms; both start with the same
(wrong) latency prior, so only the gateway's own measurements can separate them.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

BODY = {"messages": [{"role": "user", "content": "Tell me a story"}], "max_tokens": 10}


def chat(
    stack: Stack, model: str, headers: dict[str, str] | None = None, **extra: Any
) -> httpx.Response:
    return httpx.post(
        f"{stack.base_url}/chat/completions",
        timeout=30,
        headers=headers,
        json={**BODY, "model": model, **extra},
    )


@pytest.fixture(scope="module")
def warmed(stack: Stack) -> Stack:
    for backend in ("slow-cheap", "fast-dear"):
        for stream in (True, False, True, False, True, True):
            response = chat(
                stack,
                backend,
                stream=stream,
                stream_options={"include_usage": True} if stream else None,
            )
            assert response.status_code == 200, response.text
    return stack


def test_generous_budget_picks_the_cheapest(warmed: Stack) -> None:
    response = chat(warmed, "budget", routing={"latency_budget_ms": 5000})
    assert response.headers["x-gateway-backend"] == "slow-cheap"
    assert response.headers["x-gateway-route"] == "budget"
    predicted = float(response.headers["x-gateway-predicted-latency-ms"])
    assert 250 < predicted < 1500  # measured, not the 150 ms prior
    assert float(response.headers["x-gateway-estimated-cost-usd"]) > 0


def test_budget_between_latencies_picks_the_one_that_fits(warmed: Stack) -> None:
    response = chat(warmed, "budget", routing={"latency_budget_ms": 200})
    assert response.headers["x-gateway-backend"] == "fast-dear"
    assert "x-gateway-budget-infeasible" not in response.headers


def test_header_hint_works_and_body_wins(warmed: Stack) -> None:
    by_header = chat(warmed, "budget", headers={"x-latency-budget-ms": "200"})
    assert by_header.headers["x-gateway-backend"] == "fast-dear"
    body_wins = chat(
        warmed,
        "budget",
        headers={"x-latency-budget-ms": "200"},
        routing={"latency_budget_ms": 5000},
    )
    assert body_wins.headers["x-gateway-backend"] == "slow-cheap"


def test_impossible_budget_serves_fastest_and_marks_it(warmed: Stack) -> None:
    response = chat(warmed, "budget", routing={"latency_budget_ms": 1})
    assert response.status_code == 200
    assert response.headers["x-gateway-backend"] == "fast-dear"
    assert response.headers["x-gateway-budget-infeasible"] == "true"


def test_impossible_budget_can_be_rejected(warmed: Stack) -> None:
    response = chat(warmed, "budget-strict", routing={"latency_budget_ms": 1})
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "latency_budget_infeasible"


def test_cost_ceiling(warmed: Stack) -> None:
    response = chat(warmed, "budget", routing={"max_cost_usd": 1e-9})
    assert response.status_code == 503
    assert "max_cost_usd" in response.json()["error"]["message"]


def test_explain_agrees_with_the_real_decision(warmed: Stack) -> None:
    for budget in (5000, 200):
        body = {**BODY, "model": "budget", "routing": {"latency_budget_ms": budget}}
        explained = httpx.post(f"{warmed.base_url}/routing/explain", json=body).json()
        real = chat(warmed, "budget", routing={"latency_budget_ms": budget})
        assert explained["chosen"] == real.headers["x-gateway-backend"]
        assert explained["route"] == "budget" and explained["policy"] == "cheapest"
        assert explained["task"]["name"] == "chat"
        assert explained["task"]["source"] in ("classifier", "default")
        candidates = {c["backend"]: c for c in explained["candidates"]}
        assert set(candidates) == {"slow-cheap", "fast-dear"}
        slow = candidates["slow-cheap"]
        assert slow["latency_from"] == "measured"
        assert slow["output_tokens"] == 10 and slow["output_tokens_from"] == "max_tokens"
        assert slow["estimated_cost_usd"] < candidates["fast-dear"]["estimated_cost_usd"]
        if budget == 200:
            assert not slow["eligible"] and "budget" in slow["reasons"][0]


def test_ill_typed_hint_is_a_400_naming_the_field(warmed: Stack) -> None:
    response = chat(warmed, "budget", routing={"latency_budget_ms": "soon"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "routing.latency_budget_ms"
    assert "soon" in error["message"]
    bad_header = chat(warmed, "budget", headers={"x-max-cost-usd": "cheap"})
    assert bad_header.status_code == 400
    assert bad_header.json()["error"]["param"] == "x-max-cost-usd"
    unknown_task = chat(warmed, "budget", routing={"task": "poetry"})
    assert unknown_task.json()["error"]["param"] == "routing.task"


def test_routing_field_is_not_sent_upstream(warmed: Stack) -> None:
    # vLLM's server rejects unknown fields it cannot parse; `routing` must be stripped.
    response = chat(warmed, "upstream", routing={"task": "chat"})
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-task"] == "chat"


def test_task_from_classifier_picks_the_backend_that_serves_it(stack: Stack) -> None:
    code = httpx.post(
        f"{stack.base_url}/chat/completions",
        timeout=30,
        json={
            "model": "by-task",
            "messages": [
                {
                    "role": "user",
                    "content": "Fix the bug in this C function that segfaults when the "
                    "array is empty.",
                }
            ],
        },
    )
    assert code.headers["x-gateway-task"] == "code", code.headers
    assert code.headers["x-gateway-backend"] == "coder"
    assert code.json()["choices"][0]["message"]["content"] == "def solution(): ..."
    chat_prompt = {"role": "user", "content": "Good evening! I just got back from the mountains."}
    chat = httpx.post(
        f"{stack.base_url}/chat/completions",
        timeout=30,
        json={"model": "by-task", "messages": [chat_prompt]},
    )
    assert chat.headers["x-gateway-task"] == "chat"
    assert chat.headers["x-gateway-backend"] == "echo"


def test_task_sources_in_explain(stack: Stack) -> None:
    def explain(content: str, **routing: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": "by-task",
            "messages": [{"role": "user", "content": content}],
        }
        if routing:
            body["routing"] = routing
        return httpx.post(f"{stack.base_url}/routing/explain", json=body).json()

    learned = explain("Solve for y: 2y - 4 = 10")["task"]
    assert (learned["name"], learned["source"]) == ("math", "classifier")
    assert learned["similarity"] > 0.1
    keyword = explain("please extract the dates")["task"]
    assert (keyword["name"], keyword["source"]) == ("extraction", "keyword")
    hinted = explain("Solve for y: 2y - 4 = 10", task="code")
    assert hinted["task"] == {"name": "code", "source": "hint", "similarity": None}
    assert hinted["chosen"] == "coder"
    math = explain("Solve for y: 2y - 4 = 10")
    coder = next(c for c in math["candidates"] if c["backend"] == "coder")
    assert not coder["eligible"] and "does not serve task 'math'" in coder["reasons"]
