"""A/B experiments: sticky weighted assignment, routing through arms, config checks, report."""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.cli import main
from gateway.config import PROJECT_ROOT, ConfigError, GatewayConfig
from gateway.core.routing import Routing
from llmops import Ledger, assign_arm, render_html, render_table
from llmops import build_report as build
from router import Availability

CONFIG: dict[str, Any] = {
    "backends": {
        "a": {"kind": "fake", "model": "a"},
        "b": {"kind": "fake", "model": "b"},
        "spare": {"kind": "fake", "model": "s"},
    },
    "routes": {"auto": {"candidates": ["a"], "fallbacks": ["spare"]}},
    "prompt_templates": {"terse": {"default": "v1", "versions": {"v1": {"system": "Be terse."}}}},
    "experiments": {
        "ab1": {
            "route": "auto",
            "sticky_by": "user",
            "arms": {
                "a": {"backend": "a", "weight": 0.7},
                "b": {"backend": "b", "weight": 0.3, "template": "terse@v1"},
            },
        }
    },
}


def test_assignment_is_sticky_and_follows_the_weights() -> None:
    arms = [("a", 0.7), ("b", 0.3)]
    counts = Counter(assign_arm("ab1", f"user-{i}", arms) for i in range(20_000))
    assert abs(counts["a"] / 20_000 - 0.7) < 0.015
    assert all(assign_arm("ab1", "user-42", arms) == assign_arm("ab1", "user-42", arms)
               for _ in range(10))  # fmt: skip
    # Another experiment reshuffles: assignments are independent across experiments.
    same = sum(assign_arm("ab1", f"u{i}", arms) == assign_arm("ab2", f"u{i}", arms)
               for i in range(2000))  # fmt: skip
    assert same < 0.7 * 2000


async def test_arm_picks_backend_and_template_and_keeps_route_fallbacks() -> None:
    routing = Routing(GatewayConfig.load(CONFIG), PROJECT_ROOT)
    arms = {}
    for user in ("u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8"):
        body = {"model": "auto", "user": user, "messages": [{"role": "user", "content": "hi"}]}
        routed = await routing.route("chat/completions", body, {}, {}, f"req-{user}")
        decision, assignment = routed.decision, routed.prepared.assignment
        assert assignment is not None and assignment.experiment == "ab1"
        arms[user] = assignment.arm
        assert decision.route == "auto" and decision.pinned
        assert decision.chosen == assignment.arm and decision.attempts[-1] == "spare"
        headers = routed.headers()
        assert headers["x-gateway-experiment"] == f"ab1/{assignment.arm}"
        if assignment.arm == "b":
            assert routed.prepared.template == "terse@v1"
            assert routed.body["messages"][0]["role"] == "system"
    assert set(arms.values()) == {"a", "b"}


async def test_arm_whose_backend_is_down_is_served_by_the_route() -> None:
    routing = Routing(GatewayConfig.load(CONFIG), PROJECT_ROOT)
    down = {
        "a": Availability(False, "disabled", definite=True),
        "b": Availability(False, "disabled", definite=True),
    }
    body = {"model": "auto", "user": "u1", "messages": [{"role": "user", "content": "hi"}]}
    routed = await routing.route("chat/completions", body, {}, down, "req-1")
    assert routed.prepared.assignment is not None and not routed.decision.pinned
    assert routed.decision.chosen == "spare"  # the route's fallback, chosen by the router


async def test_arm_fallbacks_exclude_backends_too_small_for_the_prompt() -> None:
    config = {
        **CONFIG,
        "backends": {**CONFIG["backends"], "spare": {"kind": "fake", "model": "s",
                                                     "context_window": 8}},
    }  # fmt: skip
    routing = Routing(GatewayConfig.load(config), PROJECT_ROOT)
    body = {"model": "auto", "user": "u1", "max_tokens": 50,
            "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    routed = await routing.route("chat/completions", body, {}, {}, "req-1")
    assert routed.decision.pinned and "spare" not in routed.decision.attempts


def test_config_names_experiment_mistakes() -> None:
    bad = {
        **CONFIG,
        "experiments": {
            "x": {"route": "nope", "arms": {"a": {"backend": "zz"}, "b": {"template": "t@9"}},
                  "shadow": "ghost", "sticky_by": "cookie"},
        },
    }  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        GatewayConfig.load(bad)
    text = str(caught.value)
    assert "experiments.x.sticky_by" in text
    bad["experiments"]["x"]["sticky_by"] = "header:x-user"
    with pytest.raises(ConfigError) as caught:
        GatewayConfig.load(bad)
    text = str(caught.value)
    for path in ("experiments.x.route", "experiments.x.arms.a.backend",
                 "experiments.x.arms.b.template", "experiments.x.shadow"):  # fmt: skip
        assert path in text


def _ledger_with_experiment(path: Path) -> Ledger:
    ledger = Ledger(path)
    rng = random.Random(1)
    now = time.time()
    for index in range(80):
        arm = "a" if index % 2 else "b"
        request_id = f"r{index}"
        caller = {"key_id": "key_1", "key_name": "app", "team": "search",
                  "key_metadata": {"owner": "ana"}} if index < 10 else {}  # fmt: skip
        ledger.add({"ts": now, "request_id": request_id, "experiment": "ab1", "arm": arm,
                    "backend": arm, "status": 200, "latency_ms": 100 + rng.random() * 20,
                    "cost_usd": 0.001 if arm == "b" else 0.0, **caller})  # fmt: skip
    ledger.add({"ts": now, "request_id": "r0#shadow", "experiment": "ab1", "arm": "shadow",
                "status": 200})  # fmt: skip
    ledger.flush()
    for index in range(80):
        arm = "a" if index % 2 else "b"
        score = rng.gauss(4.2 if arm == "b" else 3.4, 0.6)
        assert ledger.add_feedback(f"r{index}", score, None, None)
    return ledger


def test_report_names_the_better_arm_with_interval_and_test(tmp_path: Path) -> None:
    ledger = _ledger_with_experiment(tmp_path / "l.sqlite")
    report = build(ledger, "ab1")
    arms = {arm["arm"]: arm for arm in report["arms"]}
    assert set(arms) == {"a", "b"}  # the shadow is not an arm
    assert arms["b"]["requests"] == 40 and arms["b"]["feedback_n"] == 40
    low, high = arms["b"]["feedback_ci95"]
    assert low < arms["b"]["feedback_mean"] < high and high < 4.6
    assert report["comparison"]["best"] == "b" and report["comparison"]["p_value"] < 0.01
    assert report["verdict"].startswith("Arm b is better than a")
    assert "<svg" in render_html(report)
    # The keyed part of the traffic, with the key's team and owner (its metadata).
    (caller,) = report["callers"]
    assert caller["requests"] == {"a": 5, "b": 5} and caller["metadata"] == {"owner": "ana"}
    assert caller["cost_usd"] == pytest.approx(0.005)
    assert "caller search/app (owner ana): a 5, b 5" in render_table(report)
    ledger.close()


def test_report_says_when_evidence_is_missing(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite")
    ledger.add({"ts": time.time(), "request_id": "r1", "experiment": "ab1", "arm": "a",
                "status": 200})  # fmt: skip
    ledger.flush()
    assert "Not enough feedback" in build(ledger, "ab1")["verdict"]
    assert "No requests" in build(ledger, "other")["verdict"]
    ledger.close()


def test_report_command_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _ledger_with_experiment(tmp_path / "l.sqlite").close()
    ledger_arg = ["--ledger", str(tmp_path / "l.sqlite")]
    assert main(["report", "--experiment", "ab1", "--format", "json", *ledger_arg]) == 0
    assert orjson.loads(capsys.readouterr().out)["comparison"]["best"] == "b"
    assert main(["report", "--experiment", "ab1", *ledger_arg]) == 0
    table = capsys.readouterr().out
    assert "arm" in table and "95% CI" in table and "Arm b is better" in table
    out = tmp_path / "r.html"
    assert main(["report", "--experiment", "ab1", "--format", "html", "--output", str(out),
                 *ledger_arg]) == 0  # fmt: skip
    assert out.read_text().startswith("<!doctype html>")
    assert main(["report", "--experiment", "ab1", "--ledger", str(tmp_path / "none")]) == 2
