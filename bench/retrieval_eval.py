"""Retrieval on the embedded default (configs/local.yaml: MiniLM on vLLM embeds, SmolLM2
answers), over HTTP with the official openai SDK, on data/retrieval (24 documents of made-up
facts: 8 Markdown, 8 HTML, 8 PDF; 80 questions only they answer):

- ingest: every file uploaded, then one store made of them all (extract, chunk, embed, keep):
  documents, pages and chunks per second;
- search: recall@1 and @5 of `POST /v1/vector_stores/{id}/search` (the question's document
  among the first k results), with vectors only and with the hybrid score (BM25's share from
  `ranking_options.hybrid_search`), and its p50 latency;
- answers: the share of questions whose answer string SmolLM2 says, through the Responses
  API's `file_search` tool, and without it (closed book).

Run: .venv/bin/python bench/retrieval_eval.py [--answers 80]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.floor import start  # noqa: E402
from retrieval import extract  # noqa: E402
from tests.helpers import cluster_env, free_port, stop_process, wait_until  # noqa: E402

DATA = ROOT / "data" / "retrieval"
WEIGHTS = {"vectors": 0.0, "hybrid 0.3": 0.3, "hybrid 0.5": 0.5}


def serve_config(port: int, folder: Path) -> dict[str, Any]:
    settings = yaml.safe_load((ROOT / "configs" / "local.yaml").read_text())
    settings["http_options"]["port"] = port
    args = settings["applications"][0]["args"]
    args["ledger"]["path"] = str(folder / "ledger.sqlite")
    args["request_log"]["path"] = str(folder / "requests.jsonl")
    return dict(settings)


def ingest(client: openai.OpenAI) -> tuple[str, dict[str, float]]:
    paths = sorted((DATA / "docs").iterdir())
    pages = sum(len(extract(p.name, p.read_bytes())) for p in paths)
    started = time.perf_counter()
    ids = []
    for path in paths:
        with path.open("rb") as handle:
            ids.append(client.files.create(file=(path.name, handle), purpose="assistants").id)
    store = client.vector_stores.create(name="corpus", file_ids=ids)
    took = time.perf_counter() - started
    assert store.file_counts.completed == len(paths), store.file_counts
    return store.id, {
        "documents": len(paths),
        "pages": pages,
        "seconds": round(took, 2),
        "pages_per_s": round(pages / took, 2),
    }


def recall(client: openai.OpenAI, store: str, questions: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, weight in WEIGHTS.items():
        hits1 = hits5 = 0
        took = []
        for q in questions:
            ranking = {"hybrid_search": {"embedding_weight": 1 - weight, "text_weight": weight}}
            started = time.perf_counter()
            page = client.vector_stores.search(
                vector_store_id=store,
                query=q["question"],
                max_num_results=5,
                extra_body={"ranking_options": ranking},
            )
            took.append((time.perf_counter() - started) * 1000)
            files = [r.filename for r in page.data]
            hits1 += files[:1] == [q["doc"]]
            hits5 += q["doc"] in files
        n = len(questions)
        out[name] = {
            "recall@1": round(hits1 / n, 3),
            "recall@5": round(hits5 / n, 3),
            "search_p50_ms": round(statistics.median(took), 1),
        }
    return out


def answers(client: openai.OpenAI, store: str, questions: list[dict[str, Any]]) -> dict[str, float]:
    right = {"file_search": 0, "closed_book": 0}
    for q in questions:
        for name in right:
            tools = [{"type": "file_search", "vector_store_ids": [store], "max_num_results": 3}]
            response = client.responses.create(
                model="smollm2",
                input=q["question"],
                max_output_tokens=48,
                temperature=0,
                **({"tools": tools} if name == "file_search" else {}),
            )
            right[name] += q["answer"].lower() in response.output_text.lower()
    return {name: round(n / len(questions), 3) for name, n in right.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--answers", type=int, default=80, help="questions asked of SmolLM2")
    args = parser.parse_args()
    questions = [json.loads(line) for line in (DATA / "questions.jsonl").open()]
    folder = Path(tempfile.mkdtemp(prefix="bench-retrieval-"))
    port = free_port()
    (folder / "serve.yaml").write_text(yaml.safe_dump(serve_config(port, folder)))
    env = {
        **os.environ,
        **cluster_env(),
        "RAY_ADDRESS": "local",
        "RAY_OVERRIDE_RESOURCES": '{"CPU": 8}',
    }
    gateway = start(
        [sys.executable, "-m", "gateway", "serve", str(folder / "serve.yaml")],
        folder / "serve.log",
        env,
    )
    root = f"http://127.0.0.1:{port}"
    client = openai.OpenAI(base_url=f"{root}/v1", api_key="unused", max_retries=0, timeout=300)
    try:
        probe = {"model": "minilm", "input": "x"}
        wait_until(
            lambda: httpx.post(f"{root}/v1/embeddings", json=probe, timeout=30).status_code == 200,
            900,
            "the embedding engine",
        )
        wait_until(
            lambda: httpx.get(f"{root}/health").json().get("status") != "starting", 900, "warm"
        )
        store, ingested = ingest(client)
        summary = {
            "ingest": ingested,
            "search": recall(client, store, questions),
            "answers": answers(client, store, questions[: args.answers]),
        }
    finally:
        stop_process(gateway, grace_s=60)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
