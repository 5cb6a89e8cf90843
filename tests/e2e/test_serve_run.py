"""End to end, as a user runs it: `make serve` (`python -m gateway serve configs/local.yaml`,
i.e. `serve run` on a local cluster without the dashboard) with the real SmolLM2 model. Plain
`serve run` is what tests/e2e/test_shutdown.py drives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.helpers import ROOT, SMOLLM2_MODEL, cluster_env, stop_process, wait_until

pytestmark = pytest.mark.e2e

BASE = "http://127.0.0.1:8000"  # what configs/local.yaml binds
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
EXTRACT = (
    "Extract the person's name, age, city and job from the sentence. Answer with JSON only, "
    'as {{"name": ..., "age": ..., "city": ..., "job": ...}}.\n\nSentence: {sentence}'
)


def smollm2_ready() -> bool:
    response = httpx.get(f"{BASE}/health", timeout=5)
    if response.status_code != 200:  # Serve answers in plain text while the app deploys
        return False
    if not response.json().get("backends", {}).get("smollm2", {}).get("available"):
        return False
    probe = {"model": "smollm2", "prompt": "Hi", "max_tokens": 1}
    return httpx.post(f"{BASE}/v1/completions", json=probe, timeout=30).status_code == 200


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    assert SMOLLM2_MODEL.joinpath("model.safetensors").exists(), "run `make models` first"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{BASE}/health", timeout=2)  # port 8000 must be free for this test
    log = tmp_path_factory.mktemp("serve") / "serve-run.log"
    env = {
        **os.environ,
        **cluster_env(),
        "RAY_ADDRESS": "local",
        "RAY_OVERRIDE_RESOURCES": '{"CPU": 8}',
    }
    env.pop("OPENAI_API_KEY", None)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "configs/local.yaml"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(smollm2_ready, 420, "python -m gateway serve configs/local.yaml", proc, log)
        yield log, proc.pid
    finally:
        stop_process(proc, grace_s=30)


def test_smollm2_answers_paris(served: tuple[Path, int]) -> None:
    client = openai.OpenAI(base_url=f"{BASE}/v1", api_key="x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=QUESTION, temperature=0, max_tokens=30
    )
    assert raw.headers["x-gateway-backend"] == "smollm2"
    answer = raw.parse()
    assert answer.model == "SmolLM2-135M-Instruct"
    assert "Paris" in (answer.choices[0].message.content or "")


def test_the_semantic_cache_serves_a_paraphrase_and_refuses_a_look_alike(
    served: tuple[Path, int],
) -> None:
    """Route `auto` caches semantically (all-MiniLM-L6-v2 in the ingress, `local`)."""
    client = openai.OpenAI(base_url=f"{BASE}/v1", api_key="x", max_retries=0)

    def ask(text: str) -> tuple[str, str]:
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": text}], temperature=0,
            max_tokens=12,
        )  # fmt: skip
        return raw.headers["x-gateway-cache"], raw.parse().choices[0].message.content or ""

    first = ask("What is the boiling point of water in Celsius?")
    paraphrase = ask("Tell me the boiling point of water in celsius, please.")
    look_alike = ask("What is the boiling point of water in Fahrenheit?")
    assert first[0] == "miss" and paraphrase == ("hit", first[1])
    assert look_alike[0] == "miss"
    described = httpx.get(f"{BASE}/v1/gateway/cache", timeout=5).json()
    assert described["semantic_hits"] >= 1


def test_smollm2_streams_paris_with_usage(served: tuple[Path, int]) -> None:
    client = openai.OpenAI(base_url=f"{BASE}/v1", api_key="x", max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model="smollm2",
            messages=QUESTION,
            temperature=0,
            max_tokens=30,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_missing_key_is_reported_not_fatal(served: tuple[Path, int]) -> None:
    health = httpx.get(f"{BASE}/health").json()
    assert health["backends"]["gpt-4o-mini"] == {
        "available": False,
        "reason": "environment variable OPENAI_API_KEY is not set",
        "kind": "openai",
    }
    models = {m.id for m in openai.OpenAI(base_url=f"{BASE}/v1", api_key="x").models.list()}
    assert {"auto", "smollm2"} <= models and "gpt-4o-mini" not in models


def test_engine_facts_and_no_dashboard_modules(served: tuple[Path, int]) -> None:
    import psutil

    states = {b["id"]: b for b in httpx.get(f"{BASE}/v1/gateway/backends").json()["data"]}
    engine = states["smollm2"]["engine"]
    # A 135M model: float32 on every CPU, with or without native bfloat16 (issue 19).
    assert engine["dtype"] == "float32", engine
    assert int(engine["cpu_threads"]) == len(os.sched_getaffinity(0))  # auto: the machine's
    assert states["gpt-4o-mini"]["deployment"] == {"status": "NOT_DEPLOYED"}  # no key here
    tree = psutil.Process(served[1]).children(recursive=True)
    commands = [" ".join(p.cmdline()) for p in tree if p.is_running()]
    assert any("raylet" in c for c in commands)  # the cluster is this process's own
    assert not [c for c in commands if "ray-dashboard-" in c]  # no dashboard head modules


def test_the_shipped_adapter_is_a_candidate_beside_its_base(served: tuple[Path, int]) -> None:
    """`make models` trained it; the same engine serves it as `smollm2:extract`."""
    client = openai.OpenAI(base_url=f"{BASE}/v1", api_key="x", max_retries=0)
    assert "smollm2:extract" in {m.id for m in client.models.list()}
    sentence = "In Naples, the 63-year-old Yuki Lund earns a living as a mechanic."
    messages = [{"role": "user", "content": EXTRACT.format(sentence=sentence)}]
    answer = client.chat.completions.create(
        model="smollm2:extract",
        messages=messages,
        temperature=0,
        max_tokens=64,  # type: ignore[arg-type]
    )
    fields = json.loads(answer.choices[0].message.content or "")
    assert fields == {"name": "Yuki Lund", "age": 63, "city": "Naples", "job": "mechanic"}
    # The `smart` route weighs quality per task: extraction goes to the adapter.
    body = {"model": "smart", "messages": messages}
    explained = httpx.post(f"{BASE}/v1/routing/explain", json=body, timeout=30).json()
    assert explained["task"]["name"] == "extraction"
    assert explained["chosen"] == "smollm2:extract"


def test_the_embedded_default_serves_embeddings(served: tuple[Path, int]) -> None:
    probe = {"model": "minilm", "input": "x"}
    wait_until(  # its engine starts beside SmolLM2's
        lambda: httpx.post(f"{BASE}/v1/embeddings", json=probe, timeout=30).status_code == 200,
        180, "the embedding engine",
    )  # fmt: skip
    client = openai.OpenAI(base_url=f"{BASE}/v1", api_key="x", max_retries=0)
    raw = client.embeddings.with_raw_response.create(
        model="embed", input=["A kitten naps on the couch.", "Stock markets fell today."]
    )
    assert raw.headers["x-gateway-backend"] == "minilm"  # the API has no key here
    vectors = [item.embedding for item in raw.parse().data]
    assert [len(vector) for vector in vectors] == [384, 384]


def test_haproxy_side_listeners_are_on_loopback_and_its_socket_private(
    served: tuple[Path, int],
) -> None:
    """Issue 19: Ray's HAProxy bound its metrics (9101) and stats (8404) frontends on every
    interface and opened its admin socket `mode 666 level admin`; `gateway/haproxy-loopback`
    keeps them to this machine and this user."""
    import stat

    import psutil

    tree = psutil.Process(served[1]).children(recursive=True)
    haproxy = [p for p in tree if p.is_running() and p.name() == "haproxy"]
    assert haproxy, "no HAProxy under the served cluster"
    listening = {
        (c.laddr.ip, c.laddr.port)
        for p in haproxy
        for c in p.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }
    command = haproxy[0].cmdline()
    config = Path(command[command.index("-f") + 1]).read_text()
    # The test environment moves the side ports (tests/helpers.py): read them from the config.
    frontends = config.split("\nfrontend prometheus", 1)[1], config.split("\nlisten stats", 1)[1]
    side = {int(part.split("bind ", 1)[1].split()[0].rsplit(":", 1)[1]) for part in frontends}
    assert side <= {port for _, port in listening} and len(side) == 2, (side, listening)
    assert all(ip == "127.0.0.1" for ip, port in listening if port in side), listening
    assert "mode 600 level user" in config and "level admin" not in config
    socket = next(line.split()[2] for line in config.splitlines() if "stats socket" in line)
    assert stat.S_IMODE(Path(socket).stat().st_mode) & 0o077 == 0
