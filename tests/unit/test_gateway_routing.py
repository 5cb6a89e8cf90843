"""The gateway's side of routing: hints out of the body, task only where it routes, headers."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import PROJECT_ROOT, GatewayConfig
from gateway.core.routing import Routing, prompt_text
from gateway.errors import OpenAIError
from tests.unit.test_routing_decisions import bag_of_words

CONFIG = {
    "backends": {
        "coder": {
            "kind": "fake",
            "model": "c",
            "tasks": ["code"],
            "pricing": {"input_per_mtok": 1, "output_per_mtok": 2},
        },
        "any": {"kind": "fake", "model": "a"},
    },
    "routes": {"r": {"policy": "ordered", "candidates": ["coder", "any"]}},
    "tasks": {
        "code": {"examples": ["fix this python bug"]},
        "math": {"examples": ["solve the integral"]},
    },
}


def routing() -> Routing:
    return Routing(GatewayConfig.load(CONFIG), PROJECT_ROOT, embed=bag_of_words)


async def decide(model: str, content: str, **extra: Any) -> Any:
    body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    routed = await routing().route("chat/completions", body, {}, {}, "req-1")
    assert "routing" in body or "routing" not in extra  # the client's body is left alone
    return routed, routed.body


async def test_routed_requests_are_classified_and_hints_removed() -> None:
    routed, body = await decide("r", "please fix this python bug", routing={"max_cost_usd": 1.0})
    decision = routed.decision
    assert (decision.task, decision.task_source) == ("code", "classifier")
    assert decision.chosen == "coder"
    assert "routing" not in body
    headers = routed.headers()
    assert headers["x-gateway-task"] == "code" and headers["x-gateway-route"] == "r"
    assert float(headers["x-gateway-estimated-cost-usd"]) > 0


async def test_direct_backend_requests_skip_the_classifier() -> None:
    routed, _ = await decide("any", "please fix this python bug")
    assert (routed.decision.task, routed.decision.task_source) == ("chat", "default")
    hinted, _ = await decide("any", "x", routing={"task": "math"})
    assert (hinted.decision.task, hinted.decision.task_source) == ("math", "hint")


async def test_unknown_task_hint_is_rejected() -> None:
    with pytest.raises(OpenAIError) as caught:
        await decide("r", "x", routing={"task": "poetry"})
    assert caught.value.param == "routing.task" and caught.value.status == 400


def test_prompt_text_reads_messages_and_prompts() -> None:
    chat = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        ]
    }
    assert prompt_text("chat/completions", chat) == "be brief\nhi"
    assert prompt_text("completions", {"prompt": ["a", "b"]}) == "a\nb"
