"""Offline evaluation without a gateway: scorers, intervals, the report, the quality file and
how the router takes a measurement (explain says where each quality number came from)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.config import GatewayConfig
from gateway.core.build import build_gateway
from llmops import interval95, judge_score, read_quality, summarise, write_quality
from llmops._evals import render_html, render_table, score_contains, score_exact, score_json_fields
from tests.helpers import fake_backends

PERSON = {"name": "Leila Tanaka", "age": 22, "city": "Amman", "job": "librarian"}


def test_json_fields_gives_partial_credit_and_finds_json_in_prose() -> None:
    answer = 'Sure! ```json\n{"name": "leila  tanaka", "age": "22", "city": "Oslo"}\n``` done'
    assert score_json_fields(answer, PERSON) == 0.5  # name and age right; city wrong, no job
    assert score_json_fields("no json here", PERSON) == 0.0
    assert score_json_fields(json.dumps(PERSON), PERSON) == 1.0
    with pytest.raises(ValueError, match="JSON object"):
        score_json_fields("{}", "a string")


def test_exact_and_contains() -> None:
    assert score_exact("  Paris ", "paris") == 1.0 and score_exact("Paris.", "paris") == 0.0
    assert score_exact(f"here: {json.dumps(PERSON)}", PERSON) == 1.0
    assert score_contains("The capital is Paris.", "paris") == 1.0
    assert score_contains("Rome", "paris") == 0.0


def test_intervals_are_wilson_for_pass_fail_and_bootstrap_for_partial_credit() -> None:
    low, high = interval95([1.0] * 36 + [0.0] * 4)
    assert 0.76 < low < 0.78 and 0.96 < high < 0.97  # Wilson, 36/40
    assert interval95([1.0] * 5) == pytest.approx((0.5655, 1.0), abs=1e-3)
    partial = [0.25, 0.5, 0.75, 1.0] * 10
    low, high = interval95(partial)
    assert low < 0.625 < high and high - low < 0.2
    assert interval95(partial) == interval95(partial)  # seeded


def test_errors_count_as_zero_and_the_report_renders() -> None:
    result = summarise("smollm2:extract", [1.0, 1.0], [100.0, 300.0], [0.0, 0.0], 2, "x")
    assert result.n == 4 and result.score == 0.5 and result.errors == 2
    assert result.latency_p50_ms == 100.0 and result.latency_p95_ms == 300.0
    table = render_table([result], "extraction", "exact")
    assert "smollm2:extract" in table and "(2 errors)" in table
    page = render_html([result], "extraction", "exact")
    assert "<svg" in page and "<rect" in page and 'width="0.0"' not in page


def test_judge_grades_map_to_zero_one() -> None:
    assert judge_score("5") == 1.0 and judge_score("Grade: 3/5") == 0.5
    assert judge_score("I cannot grade this") is None


def _gateway(tmp_path: Path, quality_file: Path) -> Any:
    config = GatewayConfig.load(
        {
            "backends": {
                "base": {"kind": "fake", "model": "base-1", "quality": {"extraction": 0.3}},
                "other": {"kind": "fake", "model": "other-1"},
            },
            "routes": {
                "smart": {
                    "policy": "balanced",
                    "balance": {"cost": 0, "latency": 0, "quality": 1},
                    "candidates": ["base", "other"],
                }
            },
            "tasks": {"extraction": {"keywords": ["extract"]}},
            "quality_file": str(quality_file),
            "ledger": {"enabled": False},
            "request_log": {"enabled": False},
        }
    )
    backends = fake_backends(config)
    gateway, _ = build_gateway(config, backends, tmp_path)
    return gateway


async def _explain(gateway: Any) -> dict[str, Any]:
    body = {"model": "smart", "messages": [{"role": "user", "content": "extract the fields"}]}
    reply = await gateway.explain(orjson.dumps(body), {}, "r")
    assert reply.status == 200
    explained: dict[str, Any] = orjson.loads(reply.body)
    return explained


async def test_a_measurement_wins_over_the_configured_quality_and_explain_says_so(
    tmp_path: Path,
) -> None:
    quality_file = tmp_path / "quality.json"
    result = summarise("other", [1.0] * 38 + [0.0] * 2, [50.0], [], 0, "other")
    write_quality(quality_file, [result], "extraction", "json_fields", "heldout.jsonl")
    assert read_quality(quality_file)["other"]["extraction"]["n"] == 40
    gateway = _gateway(tmp_path, quality_file)
    explained = await _explain(gateway)
    by_backend = {c["backend"]: c for c in explained["candidates"]}
    assert (
        by_backend["base"]["quality"] == 0.3 and by_backend["base"]["quality_from"] == "configured"
    )
    assert by_backend["other"]["quality"] == 0.95
    assert by_backend["other"]["quality_from"].startswith("measured ")
    assert "json_fields on 40 examples" in by_backend["other"]["quality_from"]
    assert explained["chosen"] == "other"
    # A new measurement takes effect without a redeploy.
    worse = summarise("other", [0.0] * 40, [50.0], [], 0, "other")
    write_quality(quality_file, [worse], "extraction", "json_fields", "heldout.jsonl")
    os.utime(quality_file, (time.time() + 10, time.time() + 10))
    gateway.routing.quality._checked -= 60  # the next request looks at the file again
    explained = await _explain(gateway)
    assert explained["chosen"] == "base"
    await gateway.aclose()
