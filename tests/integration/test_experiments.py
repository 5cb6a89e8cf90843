"""A two-arm experiment over two real upstreams: split, stickiness, feedback, shadow, report."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from collections import Counter

import httpx
import orjson
import pytest

from tests.helpers import ROOT
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration
USERS = [f"user-{i}" for i in range(60)]


async def test_two_arm_experiment_end_to_end(stack: Stack) -> None:
    started = time.time()  # the report covers this test's requests (others use `ab` too)
    async with httpx.AsyncClient(timeout=60) as client:
        semaphore = asyncio.Semaphore(8)

        async def one(user: str, stream: bool) -> tuple[str, str, str]:
            body = {"model": "ab-route", "user": user, "max_tokens": 4, "stream": stream,
                    "messages": [{"role": "user", "content": f"hello from {user}"}]}  # fmt: skip
            async with semaphore:
                response = await client.post(f"{stack.base_url}/chat/completions", json=body)
            assert response.status_code == 200, response.text
            return user, response.headers["x-gateway-experiment"], response.headers["x-request-id"]

        results = await asyncio.gather(
            *(one(user, stream) for stream in (False, True) for user in USERS)
        )
        arm_of: dict[str, set[str]] = {}
        for user, experiment, _ in results:
            arm_of.setdefault(user, set()).add(experiment)
        assert all(len(arms) == 1 for arms in arm_of.values())  # sticky per user
        split = Counter(next(iter(arms)) for arms in arm_of.values())
        assert set(split) == {"ab/fast", "ab/cheap"}
        assert abs(split["ab/fast"] / len(USERS) - 0.5) < 0.15  # weights 0.5 / 0.5

        # Feedback: users of `fast` are happier.
        for _, experiment, request_id in results:
            score = 5 if experiment == "ab/fast" else 2
            sent = await client.post(
                f"{stack.base_url}/feedback", json={"request_id": request_id, "score": score}
            )
            assert sent.status_code == 200, sent.text
        unknown = await client.post(
            f"{stack.base_url}/feedback", json={"request_id": "no-such-request", "score": 1}
        )
        assert unknown.status_code == 404

    # Each score sits on the request it was sent for, next to that request's arm.
    with sqlite3.connect(stack.logs / "ledger.sqlite") as db:
        for _, experiment, request_id in results[:10]:
            arm, score = db.execute(
                "SELECT r.arm, f.score FROM requests r JOIN feedback f USING (request_id) "
                "WHERE request_id = ?",
                (request_id,),
            ).fetchone()
            assert f"ab/{arm}" == experiment and score == (5 if arm == "fast" else 2)

    report = subprocess.run(
        [sys.executable, "-m", "gateway", "report", "--experiment", "ab", "--format", "json",
         "--ledger", str(stack.logs / "ledger.sqlite"), "--since", str(started)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    result = orjson.loads(report.stdout)
    arms = {arm["arm"]: arm for arm in result["arms"]}
    assert arms["fast"]["requests"] == 2 * split["ab/fast"]
    assert arms["fast"]["feedback_n"] == arms["fast"]["requests"]
    assert result["comparison"]["best"] == "fast" and result["comparison"]["p_value"] < 0.05
    assert result["verdict"].startswith("Arm fast is better than cheap")
    assert arms["cheap"]["latency_p50_ms"] > arms["fast"]["latency_p50_ms"]  # 300 ms TTFT
    assert all(arm["cost_per_request_usd"] > 0 for arm in arms.values())  # streams included

    # The shadow answered every request into the log, never to the client.
    path, deadline = stack.logs / "requests.jsonl", time.monotonic() + 20
    shadowed: set[str] = set()
    wanted = {request_id for _, _, request_id in results}
    while time.monotonic() < deadline and not wanted <= shadowed:
        # Whole lines only: the gateway may be writing the last one right now.
        lines = path.read_text().split("\n")[:-1]
        shadowed = {e["shadow_of"] for e in map(orjson.loads, lines) if e.get("shadow_of")}
        time.sleep(0.5)
    assert wanted <= shadowed
