"""Requests generated from OpenAI's own OpenAPI spec (schemathesis), valid and invalid, against
the running gateway: never a 5xx, always OpenAI's error shape, and still serving afterwards."""

from __future__ import annotations

import zlib
from typing import Any

import httpx
import pytest

from tests.helpers import ROOT
from tests.integration.conftest import Stack

SPEC = ROOT.parent / "shared" / "openai-openapi" / "openapi.yaml"
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not SPEC.exists(), reason=f"OpenAI's spec is not on this machine ({SPEC}): nothing to test"
    ),
]

# (path, method, mode, examples): enough to cover every field of the request bodies
# in both modes, small enough for about a minute.
PLAN = [
    ("/chat/completions", "POST", "negative", 150),
    ("/chat/completions", "POST", "positive", 80),
    ("/completions", "POST", "negative", 80),
    ("/completions", "POST", "positive", 40),
    ("/models", "GET", "negative", 10),
    ("/chat/completions", "GET", "positive", 5),  # an OpenAI path we do not serve: 405
]


@pytest.fixture(scope="module")
def spec() -> Any:
    import schemathesis

    return schemathesis.openapi.from_path(str(SPEC))


def _describe(case: Any, response: Any) -> str:
    return f"{case.method} {case.path} {str(case.body)[:300]!r} -> {response.status_code}"


@pytest.mark.parametrize(("path", "method", "mode", "examples"), PLAN)
def test_generated_requests_never_get_a_server_error(
    stack: Stack, spec: Any, path: str, method: str, mode: str, examples: int
) -> None:
    import requests
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis import GenerationMode

    operation = spec[path][method]
    session = requests.Session()
    server_errors: list[str] = []
    bad_shapes: list[str] = []
    statuses: dict[int, int] = {}

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,  # the same requests on every run
        phases=[Phase.explicit, Phase.generate],  # collect every failure, no shrinking
        suppress_health_check=list(HealthCheck),
    )
    @given(operation.as_strategy(generation_mode=GenerationMode(mode)))
    def run(case: Any) -> None:
        body = case.body
        if mode == "positive" and isinstance(body, dict) and zlib.crc32(repr(body).encode()) % 2:
            body["model"] = "echo"  # half the valid ones reach a real backend deployment
        response = case.call(base_url=stack.base_url, session=session, timeout=30)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if response.status_code >= 500:
            server_errors.append(_describe(case, response))
        elif response.status_code >= 400:
            try:
                error = response.json()["error"]
                assert set(error) == {"message", "type", "param", "code"} and error["message"]
            except (ValueError, KeyError, TypeError, AssertionError):
                bad_shapes.append(_describe(case, response) + f" {response.text[:200]!r}")

    run()
    print(f"{method} {path} {mode}: statuses {dict(sorted(statuses.items()))}")
    assert server_errors == []
    assert bad_shapes == []
    assert sum(statuses.values()) >= examples // 2
    # ... and the gateway still serves.
    ok = httpx.post(
        f"{stack.base_url}/chat/completions",
        json={"model": "echo", "messages": [{"role": "user", "content": "still here?"}]},
        timeout=30,
    )
    assert ok.status_code == 200 and "still here?" in ok.text
