"""The guardrails' labelled set (data/guardrails/pii.jsonl): prompts with personal data or
secrets, each value labelled with its type, and prompts without any. Prints, per entity type,
recall (a labelled value masked whole: by a finding of its own type, and by any finding) and
false positives (findings of that type that cover no labelled value: in how many clean
prompts, and in all), with the detector's time per prompt (docs/guardrails.md).

    .venv/bin/python bench/guardrail_sets.py [--threshold 0.5] [--show]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from pathlib import Path

from guardrails import ENTITIES, Finding, PresidioDetector

DATA = Path(__file__).resolve().parents[1] / "data" / "guardrails" / "pii.jsonl"


def covered(start: int, end: int, findings: list[Finding], entity: str | None) -> bool:
    """Every character of [start, end) is inside a finding (of `entity`, if given)."""
    spans = [(f.start, f.end) for f in findings if entity is None or f.entity == entity]
    return all(any(a <= i < b for a, b in spans) for i in range(start, end))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--show", action="store_true", help="print each miss and false positive")
    args = parser.parse_args()
    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    detector = PresidioDetector(cache_size=0)
    detector.load()
    labelled, typed, anyhow = Counter(), Counter(), Counter()
    spurious, clean_hit, clean_any = Counter(), Counter(), 0
    clean = sum(1 for row in rows if not row["entities"])
    times = []
    for row in rows:
        text = row["text"]
        started = time.perf_counter()
        findings = detector.find(text, frozenset(ENTITIES), args.threshold)
        times.append((time.perf_counter() - started) * 1000)
        spans = []
        for label in row["entities"]:
            start = text.index(label["value"])
            end = start + len(label["value"])
            spans.append((start, end))
            kind = label["type"]
            labelled[kind] += 1
            typed[kind] += covered(start, end, findings, kind)
            whole = covered(start, end, findings, None)
            anyhow[kind] += whole
            if args.show and not whole:
                print(f"MISS {kind}: {label['value']!r} in {text[:70]!r}")
        kinds_here = set()
        for finding in findings:
            if not any(finding.start < b and a < finding.end for a, b in spans):
                spurious[finding.entity] += 1
                kinds_here.add(finding.entity)
                if args.show:
                    print(f"FP {finding.entity}: {text[finding.start : finding.end]!r}")
        if not row["entities"]:
            clean_hit.update(kinds_here)
            clean_any += bool(kinds_here)
    print(f"{len(rows) - clean} prompts with {sum(labelled.values())} values, {clean} clean")
    print(f"{'entity':16} {'n':>3} {'recall(type)':>12} {'recall(any)':>11} "
          f"{'FP clean':>9} {'FP all':>6}")  # fmt: skip
    for kind in ENTITIES:
        n = labelled[kind]
        rec = f"{typed[kind] / n:.0%}" if n else "-"
        rec_any = f"{anyhow[kind] / n:.0%}" if n else "-"
        print(f"{kind:16} {n:>3} {rec:>12} {rec_any:>11} "
              f"{clean_hit[kind] / clean:>9.1%} {spurious[kind]:>6}")  # fmt: skip
    total = sum(labelled.values())
    print(f"{'all':16} {total:>3} {sum(typed.values()) / total:>12.0%} "
          f"{sum(anyhow.values()) / total:>11.0%} "
          f"{clean_any / clean:>9.1%} {sum(spurious.values()):>6}")  # fmt: skip
    print(
        f"detector p50 {statistics.median(times):.1f} ms per prompt "
        f"(mean length {statistics.mean(len(r['text']) for r in rows):.0f} chars)"
    )


if __name__ == "__main__":
    main()
