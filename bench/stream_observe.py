"""What reading a stream costs where its route continues broken streams (`resume_streams`, the
default), for a chat stream of N tokens as vLLM sends it (one event per token, a role event
first, a finishing event and a usage event last): `Sent.observe` on each relayed chunk (what
a token's relay pays), then `Sent.settle` once the stream is over (the text read for the live
answer's signals, after the client had its last event).

Run: .venv/bin/python bench/stream_observe.py [--tokens 16 --repeat 2000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.core.continuation import Sent  # noqa: E402


def events(tokens: int) -> list[bytes]:
    def event(delta: dict[str, object], finish: str | None = None) -> bytes:
        chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0,
                 "model": "m", "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                            "finish_reason": finish}]}  # fmt: skip
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    usage = {"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 9,
             "completion_tokens": tokens, "total_tokens": 9 + tokens}}  # fmt: skip
    return [event({"role": "assistant", "content": ""}),
            *(event({"content": f" word{i}"}) for i in range(tokens)),
            event({}, "stop"), b"data: " + orjson.dumps(usage) + b"\n\n"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    stream = events(args.tokens)
    relayed, settled = [], []
    for _ in range(args.repeat):
        sent = Sent("chat/completions")
        started = time.perf_counter()
        for chunk in stream:
            sent.observe(chunk)
        middle = time.perf_counter()
        sent.settle()
        relayed.append((middle - started) * 1e6)
        settled.append((time.perf_counter() - middle) * 1e6)
    per_event = statistics.median(relayed) / len(stream)
    print(f"{args.tokens} tokens: {per_event:.2f} us per relayed event (p50), "
          f"then {statistics.median(settled):.1f} us to read the stream once it ended")  # fmt: skip


if __name__ == "__main__":
    main()
