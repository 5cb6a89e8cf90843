"""Versioned prompt templates: config checks, selection by route or request, application."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import PROJECT_ROOT, ConfigError, GatewayConfig
from gateway.core.routing import Routed, Routing
from gateway.errors import OpenAIError
from router import HintError, parse_hints

TEMPLATES = {
    "support": {
        "default": "v2",
        "versions": {
            "v1": {"system": "You are a helpful support agent."},
            "v2": {
                "system": "You are a concise support agent for {product}.",
                "template": "Customer question: {input}",
            },
        },
    }
}
CONFIG: dict[str, Any] = {
    "backends": {"echo": {"kind": "fake", "model": "e"}},
    "routes": {
        "help": {"candidates": ["echo"], "template": "support@v1"},
        "plain": {"candidates": ["echo"]},
    },
    "prompt_templates": TEMPLATES,
}


async def decide(model: str, content: str, **extra: Any) -> tuple[Routed, dict[str, Any]]:
    routing = Routing(GatewayConfig.load(CONFIG), PROJECT_ROOT)
    body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    routed = await routing.route("chat/completions", body, {}, {}, "req-1")
    assert body["messages"] == [{"role": "user", "content": content}]  # the client's, as sent
    return routed, routed.body


async def test_route_template_applies_its_version() -> None:
    routed, body = await decide("help", "my order is late")
    assert routed.prepared.template == "support@v1"
    assert body["messages"] == [
        {"role": "system", "content": "You are a helpful support agent."},
        {"role": "user", "content": "my order is late"},
    ]
    assert routed.headers()["x-gateway-template"] == "support@v1"
    assert routed.explain()["template"] == "support@v1"


async def test_request_template_wins_with_variables_and_default_version() -> None:
    routed, body = await decide(
        "help",
        "where is my parcel?",
        routing={"template": "support", "variables": {"product": "Acme"}},
    )
    assert routed.prepared.template == "support@v2"
    assert body["messages"][0] == {
        "role": "system", "content": "You are a concise support agent for Acme.",
    }  # fmt: skip
    assert body["messages"][1]["content"] == "Customer question: where is my parcel?"
    assert "routing" not in body


async def test_no_template_leaves_the_body_alone() -> None:
    routed, body = await decide("plain", "hi")
    assert routed.prepared.template is None
    assert body["messages"] == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("routing", "param"),
    [
        ({"template": "support@v9"}, "routing.template"),
        ({"template": "nope"}, "routing.template"),
        ({"template": "support@v2"}, "routing.variables"),  # {product} missing
    ],
)
async def test_bad_template_requests_are_400s(routing: dict[str, Any], param: str) -> None:
    with pytest.raises(OpenAIError) as caught:
        await decide("plain", "hi", routing=routing)
    assert caught.value.status == 400 and caught.value.param == param


def test_header_names_a_template_and_variables_must_be_scalars() -> None:
    assert parse_hints(None, {"x-prompt-template": "support@v1"}).template == "support@v1"
    with pytest.raises(HintError) as caught:
        parse_hints({"variables": {"product": ["a"]}}, {})
    assert caught.value.field == "routing.variables"


def test_config_rejects_unknown_route_template_and_missing_default() -> None:
    bad_route = {**CONFIG, "routes": {"help": {"candidates": ["echo"], "template": "gone"}}}
    with pytest.raises(ConfigError, match=r"routes\.help\.template: unknown prompt template"):
        GatewayConfig.load(bad_route)
    bad_default = {**CONFIG, "prompt_templates": {"s": {"default": "v3", "versions":
                   {"v1": {"system": "x"}}}}}  # fmt: skip
    with pytest.raises(ConfigError, match=r"prompt_templates\.s"):
        GatewayConfig.load(bad_default)
    empty_version = {**CONFIG, "prompt_templates": {"s": {"default": "v1", "versions":
                     {"v1": {}}}}}  # fmt: skip
    with pytest.raises(ConfigError, match="needs `system`, `template` or both"):
        GatewayConfig.load(empty_version)
