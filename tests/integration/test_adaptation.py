"""The adaptation loop on real Serve with a real engine: SmolLM2 on vLLM with two LoRA
adapters on the same replica, the shipped one (`extract`, trained by `make models`) and one
made here from the gateway's own traffic (request log with bodies -> feedback -> `gateway
dataset` -> `gateway finetune`, a few steps). `gateway eval` measures base against adapter on
the shipped held-out set; the scores go to the quality file and explain shows them; routing by
task sends extraction prompts to the adapter and the rest to the base."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import MODELS, ROOT, SMOLLM2_MODEL, wait_until
from tests.integration.conftest import Stack, warmed

pytestmark = pytest.mark.integration
PREFIX = "/adapt"
SHIPPED = MODELS / "smollm2-extract-lora"
HELDOUT = ROOT / "data" / "extraction" / "heldout.jsonl"
# The task's prompt, as the shipped dataset words it (the sentence comes after it).
_FIRST = json.loads(HELDOUT.read_text().splitlines()[0])["messages"][0]["content"]
PERSON_PROMPT = _FIRST.split("Sentence: ")[0].replace("{", "{{").replace("}", "}}") + (
    "Sentence: {sentence}"
)


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def eval_one(root: str, candidate: str, metric: str, limit: int) -> dict[str, Any]:
    """`gateway eval` of one candidate on the first `limit` held-out examples: its result."""
    done = cli("eval", "--dataset", str(HELDOUT), "--candidates", candidate,
               "--task", "extraction", "--metric", metric, "--gateway", root,
               "--limit", str(limit), "--max-tokens", "64", "--format", "json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)["results"]
    found: dict[str, Any] = result
    return found


def adapt_config(stack: Stack, fresh: Path, quality_file: Path) -> dict[str, Any]:
    return {
        "backends": {
            "smollm2": {
                "kind": "vllm",
                "model": "SmolLM2-135M-Instruct",
                "source": str(SMOLLM2_MODEL),
                "accelerator": "cpu",
                "engine_kwargs": {"enforce_eager": True, "max_model_len": 1024,
                                  "kv_cache_memory_bytes": 128 << 20},
                "quality": {"default": 0.3},
                "warmup": {"enabled": False},
                "deployment": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 1}},
                "timeouts": {"first_token_s": 120, "total_s": 300},
                "adapters": {
                    "extract": {"path": str(SHIPPED), "tasks": ["extraction"],
                                "quality": {"extraction": 0.6}},
                    "fresh": {"path": str(fresh), "tasks": ["extraction"],
                              "quality": {"extraction": 0.1}},
                },
            },
        },
        "routes": {
            "by-task": {"policy": "balanced", "balance": {"cost": 0, "latency": 0, "quality": 1},
                        "candidates": ["smollm2:extract", "smollm2:fresh", "smollm2"]},
        },
        "default_route": "by-task",
        "default_task": "chat",
        "tasks": {
            "extraction": {"examples": [
                "Extract the name, date and amount from this invoice as JSON.",
                "Pull the person's name, age and city out of this sentence.",
                "Return the fields of this address as a JSON object."]},
            "chat": {"examples": ["Hi! How is your day going?",
                                  "Can you recommend a good book for a long flight?",
                                  "What is the capital of Italy?"]},
        },
        "quality_file": str(quality_file),
        "ingress": {"health_check_interval_s": 2},
        "ledger": {"path": str(stack.logs / "adapt-ledger.sqlite")},
        "request_log": {"path": str(stack.logs / "adapt-requests.jsonl")},
    }  # fmt: skip


def traffic_to_adapter(stack: Stack, workdir: Path) -> Path:
    """Answered requests logged with bodies, scored through /v1/feedback, exported and trained
    on (2 steps: the mechanics; the trained skill is the shipped adapter's)."""
    with httpx.Client(base_url=stack.base_url, timeout=60) as client:
        for index in range(12):
            sentence = f"Person {index} is {20 + index} and works as a baker in Turin."
            content = PERSON_PROMPT.format(sentence=sentence)
            body = {"model": "echo", "routing": {"task": "chat"},
                    "messages": [{"role": "user", "content": content}]}  # fmt: skip
            response = client.post("/chat/completions", json=body)
            assert response.status_code == 200
            score = 1.0 if index % 4 else 0.2  # a quarter judged bad: left out below
            request_id = response.headers["x-request-id"]
            feedback = {"request_id": request_id, "score": score}
            assert client.post("/feedback", json=feedback).status_code == 200
    out = workdir / "traffic.jsonl"
    done = cli("dataset", "--request-log", str(stack.logs / "requests.jsonl"),
               "--ledger", str(stack.logs / "ledger.sqlite"), "--since", "1h",
               "--min-score", "0.8", "--heldout-percent", "0", "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) >= 9 and all(row["score"] >= 0.8 for row in rows)
    assert all("Person" in row["messages"][0]["content"] for row in rows)
    adapter = workdir / "fresh-adapter"
    done = cli("finetune", "--base", str(SMOLLM2_MODEL), "--data", str(out),
               "--out", str(adapter), "--steps", "2", "--batch-size", "4")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (adapter / "adapter_config.json").exists() and "2 steps" in done.stdout
    return adapter


@pytest.fixture(scope="module")
def adapt(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    from ray import serve

    from gateway.app import build_app

    workdir = tmp_path_factory.mktemp("adapt")
    fresh = traffic_to_adapter(stack, workdir)
    quality_file = workdir / "quality.json"
    config = adapt_config(stack, fresh, quality_file)
    serve.run(build_app(config), name="adapt", route_prefix=PREFIX, blocking=False)
    root = stack.root_url + PREFIX
    wait_until(lambda: warmed(root), 420, "the adapt app")
    yield root, quality_file
    serve.delete("adapt")


def ask(root: str, content: str, model: str = "by-task") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": content}],
            "max_tokens": 64, "temperature": 0}  # fmt: skip
    return httpx.post(f"{root}/v1/chat/completions", json=body, timeout=300)


def test_base_and_adapters_are_served_by_one_engine(adapt: tuple[str, Path]) -> None:
    root, _ = adapt
    listed = {m["id"] for m in httpx.get(f"{root}/v1/models").json()["data"]}
    assert {"smollm2", "smollm2:extract", "smollm2:fresh"} <= listed
    sentence = "Ask anyone in Graz: Mei Ruiz, 41, is the best pilot around."
    prompt = PERSON_PROMPT.format(sentence=sentence)
    models = ("smollm2", "smollm2:extract", "smollm2:fresh")
    with ThreadPoolExecutor(len(models)) as pool:  # at once: one engine, three candidates
        answers = dict(zip(models, pool.map(lambda m: ask(root, prompt, m), models), strict=True))
    assert all(r.status_code == 200 for r in answers.values())
    assert {r.headers["x-gateway-backend"] for r in answers.values()} == set(answers)
    extracted = json.loads(answers["smollm2:extract"].json()["choices"][0]["message"]["content"])
    assert extracted == {"name": "Mei Ruiz", "age": 41, "city": "Graz", "job": "pilot"}
    views = httpx.get(f"{root}/v1/gateway/backends").json()["data"]
    replicas = {v["id"]: v["deployment"].get("replicas") for v in views}
    assert replicas["smollm2:extract"] == replicas["smollm2"] == {"RUNNING": 1}  # one engine


def test_eval_measures_the_adapter_above_the_base_and_the_router_takes_it(
    adapt: tuple[str, Path],
) -> None:
    root, quality_file = adapt
    done = cli("eval", "--dataset", str(HELDOUT), "--candidates", "smollm2,smollm2:extract",
               "--task", "extraction", "--metric", "json_fields", "--gateway", root,
               "--max-tokens", "64", "--format", "json",
               "--write-quality", str(quality_file))  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = {r["candidate"]: r for r in json.loads(done.stdout)["results"]}
    base, adapter = results["smollm2"], results["smollm2:extract"]
    print(f"\neval on {HELDOUT.name}: base {base}, adapter {adapter}", file=sys.stderr)
    assert base["n"] == adapter["n"] == 40 and base["errors"] == adapter["errors"] == 0
    assert adapter["interval"][0] > base["interval"][1]  # non-overlapping 95% intervals
    assert adapter["cost_per_request_usd"] == 0.0 and adapter["latency_p50_ms"] > 0
    measured = json.loads(quality_file.read_text())
    assert measured["smollm2:extract"]["extraction"]["score"] == round(adapter["score"], 4)
    # The router reads the file again (it changed): explain shows where quality came from.
    prompt = PERSON_PROMPT.format(sentence="Sven Lin, 30, lives in Seville and works as a chef.")
    body = {"model": "by-task", "messages": [{"role": "user", "content": prompt}]}

    def explained() -> dict[str, Any]:
        found: dict[str, Any] = httpx.post(f"{root}/v1/routing/explain", json=body).json()
        return found

    wait_until(
        lambda: "measured" in next(c for c in explained()["candidates"]
                                   if c["backend"] == "smollm2:extract")["quality_from"],
        30, "the measured quality in explain",
    )  # fmt: skip
    by_backend = {c["backend"]: c for c in explained()["candidates"]}
    assert by_backend["smollm2:extract"]["quality"] == round(adapter["score"], 4)
    assert by_backend["smollm2:fresh"]["quality_from"] == "configured"


def test_routing_by_task_sends_extraction_to_the_adapter(adapt: tuple[str, Path]) -> None:
    root, _ = adapt
    prompt = PERSON_PROMPT.format(sentence="Omar Sato, 52, is a dentist in Bergen.")
    extraction = ask(root, prompt)
    assert extraction.headers["x-gateway-task"] == "extraction"
    assert extraction.headers["x-gateway-backend"] == "smollm2:extract"
    chat = ask(root, "Hi! Can you recommend a good film for tonight?")
    assert chat.headers["x-gateway-task"] == "chat"
    assert chat.headers["x-gateway-backend"] == "smollm2"  # adapters serve extraction only


def test_the_adapter_made_from_traffic_is_evaluated_like_any_candidate(
    adapt: tuple[str, Path],
) -> None:
    """The end of dataset -> finetune -> eval: two training steps teach it little; this checks
    the loop runs, not the skill (the shipped adapter's test above does)."""
    result = eval_one(adapt[0], "smollm2:fresh", "json_fields", limit=4)
    assert result["backend"] == "smollm2:fresh" and result["n"] == 4 and result["errors"] == 0


def test_a_backend_of_the_gateway_judges_answers(adapt: tuple[str, Path]) -> None:
    """`--metric judge:<backend>`: the rubric goes to that backend, its 1-5 grade is the score
    (the tiny base model is a poor judge: this checks the path, not its verdicts)."""
    result = eval_one(adapt[0], "smollm2:extract", "judge:smollm2", limit=3)
    assert result["n"] == 3 and result["errors"] == 0 and 0 <= result["score"] <= 1
