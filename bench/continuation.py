"""How well a broken stream's continuation joins what the client already has, on the real
SmolLM2-135M-Instruct (vLLM's own server, float32, greedy): for each question, the whole
answer first; then the answer cut after k streamed tokens and continued the two ways the
gateway does (`gateway.core.continuation`):

- `prefill`: the text sent as a final assistant turn with `continue_final_message` (vLLM,
  and Anthropic's prefill), the model carrying on from it;
- `prompt`: the text as an assistant turn, then the continuation prompt (providers that take
  no prefill, such as OpenAI's), with what the continuation repeats of the text dropped as
  the gateway drops it (`trim_overlap`).

Per mode and cut: `exact`, the share of joined answers equal to the uncut one (greedy
decoding of the same model: a perfect continuation is the same text); `similar`, the mean
difflib ratio to it; `repeats`, the share whose continuation starts by repeating the last
words already sent (text the client would see twice).

Run: .venv/bin/python bench/continuation.py [--cuts 4,12,24 --max-tokens 48]
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.floor import start  # noqa: E402
from gateway.core.continuation import Sent, Style, continued_body, trim_overlap  # noqa: E402
from tests.helpers import ENGINE_ENV, free_port, stop_process, wait_until  # noqa: E402

MODEL = ROOT / "models" / "smollm2-135m-instruct"
QUESTIONS = [
    "What is the capital of France?",
    "Explain what a CPU does in two sentences.",
    "Give three tips for staying focused while studying.",
    "Why is the sky blue?",
    "Write a short poem about the sea.",
    "What is photosynthesis?",
    "How do I boil an egg?",
    "Name the planets of the solar system.",
    "What are the benefits of regular exercise?",
    "Describe a cat to someone who has never seen one.",
    "What is the difference between weather and climate?",
    "How does a bicycle stay upright?",
]


def deltas(client: httpx.Client, body: dict[str, Any]) -> list[str]:
    """The streamed content deltas of a chat completion (one per token)."""
    out = []
    with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as reply:
        for line in reply.iter_lines():
            if line.startswith("data: {"):
                for choice in orjson.loads(line[6:]).get("choices") or []:
                    if (choice.get("delta") or {}).get("content"):
                        out.append(choice["delta"]["content"])
    return out


def repeats(sent: str, rest: str) -> bool:
    """The continuation starts with the last three words already sent."""
    tail = sent.split()[-3:]
    return bool(tail) and rest.split()[: len(tail)] == tail


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cuts", default="4,12,24")
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    cuts = [int(c) for c in args.cuts.split(",")]
    folder, port = Path(tempfile.mkdtemp(prefix="bench-continuation-")), free_port()
    server = start(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(MODEL),
         "--served-model-name", "smollm2", "--port", str(port), "--dtype", "float32",
         "--max-model-len", "1024", "--enforce-eager"],
        folder / "vllm.log", {**os.environ, **ENGINE_ENV, "VLLM_CPU_KVCACHE_SPACE": "1"},
    )  # fmt: skip
    results: dict[str, dict[int, list[tuple[bool, float, bool]]]] = {"prefill": {}, "prompt": {}}
    styles = {"prefill": Style.VLLM_PREFILL, "prompt": Style.PROMPT}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as client:
            wait_until(lambda: client.get("/v1/models").status_code == 200, 600, "vLLM")
            for question in QUESTIONS:
                body = {"model": "smollm2", "temperature": 0, "max_tokens": args.max_tokens,
                        "messages": [{"role": "user", "content": question}]}  # fmt: skip
                whole = deltas(client, body)
                for cut in (c for c in cuts if c < len(whole) - 1):
                    sent = Sent("chat/completions", parts=whole[:cut], tokens=cut)
                    for mode, style in styles.items():
                        rest = "".join(deltas(client, continued_body(
                            "chat/completions", body, sent, style)))  # fmt: skip
                        if style is Style.PROMPT:  # what the gateway drops (`Segment`)
                            rest = trim_overlap(sent.text, rest)
                        joined, uncut = sent.text + rest, "".join(whole)
                        ratio = difflib.SequenceMatcher(None, joined, uncut).ratio()
                        outcome = (joined == uncut, ratio, repeats(sent.text, rest))
                        results[mode].setdefault(cut, []).append(outcome)
    finally:
        stop_process(server)
    summary = {
        mode: {cut: {"n": len(found), "exact": sum(o[0] for o in found) / len(found),
                     "similar": sum(o[1] for o in found) / len(found),
                     "repeats": sum(o[2] for o in found) / len(found)}
               for cut, found in sorted(by_cut.items())}
        for mode, by_cut in results.items()
    }  # fmt: skip
    print(json.dumps(summary, indent=1))
    print("| mode | cut after | n | joined = uncut | similarity | repeats sent text |")
    print("|---|---|---|---|---|---|")
    for mode, by_cut in summary.items():
        for cut, f in by_cut.items():
            print(f"| {mode} | {cut} tokens | {f['n']} | {f['exact']:.0%} | {f['similar']:.2f} "
                  f"| {f['repeats']:.0%} |")  # fmt: skip


if __name__ == "__main__":
    main()
