"""The semantic cache's labelled sets (data/cache/): for each pair, the cosine similarity of
its two texts' embeddings (all-MiniLM-L6-v2, the embedded default's `minilm`, whole texts) and
the verifier's verdict. Prints, per set, how many pairs a cache would serve from each other at
several similarity thresholds, by similarity alone and with the verifier (docs/caching.md).

    .venv/bin/python bench/cache_sets.py [--sets dev heldout]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cache import same_request
from router import MiniLMEmbedder

DATA = Path(__file__).resolve().parents[1] / "data" / "cache"
THRESHOLDS = (0.8, 0.85, 0.9, 0.95)


def pairs(name: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in (DATA / f"{name}.jsonl").read_text().splitlines()]


def measure(embed: MiniLMEmbedder, rows: list[dict[str, str]]) -> list[tuple[float, bool, str]]:
    vectors = embed([text for row in rows for text in (row["a"], row["b"])])
    out = []
    for index, row in enumerate(rows):
        a, b = vectors[2 * index], vectors[2 * index + 1]
        similarity = sum(x * y for x, y in zip(a, b, strict=True))
        verdict = same_request(row["a"], row["b"])
        out.append((similarity, verdict.same, verdict.reason))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sets", nargs="+", default=["dev", "heldout"])
    parser.add_argument("--show", action="store_true", help="print every pair's figures")
    args = parser.parse_args()
    embed = MiniLMEmbedder(head_tokens=256, tail_tokens=0)
    for name in args.sets:
        for kind in ("lookalikes", "paraphrases"):
            rows = pairs(f"{kind}.{name}")
            found = measure(embed, rows)
            print(f"\n{kind}.{name}: {len(rows)} pairs "
                  f"({'must never hit' if kind == 'lookalikes' else 'should hit'})")  # fmt: skip
            for least in THRESHOLDS:
                alone = sum(s >= least for s, _, _ in found)
                verified = sum(s >= least and same for s, same, _ in found)
                print(f"  similarity >= {least:.2f}: {alone:3d} by similarity alone, "
                      f"{verified:3d} with the verifier")  # fmt: skip
            if args.show:
                for row, (s, same, reason) in zip(rows, found, strict=True):
                    print(f"    {s:.3f} {'HIT ' if same else '    '} {row['a']!r} / {row['b']!r}"
                          f"  [{reason}]")  # fmt: skip


if __name__ == "__main__":
    main()
