"""Closed-loop HTTP load from `wrk` (C, one thread), so the load generator is not the limit.

A Python generator on the same 2 cores saturates first (a direct call to the instant upstream
managed ~330 req/s at c=32 with httpx); wrk spends a few microseconds per request.
Install: apt-get install wrk.
"""

from __future__ import annotations

import json
import re
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
_SCRIPT = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS_MS[unit]


def parse(output: str) -> dict[str, float]:
    """p50/p99 (ms), requests/s and failed responses from `wrk --latency` output."""
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", output, re.MULTILINE))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if not percentiles or rps is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    failed = int(non_2xx.group(1)) if non_2xx else 0
    if errors:
        failed += sum(int(n) for n in errors.groups())
    return {
        "p50_ms": _ms(percentiles["50"]),
        "p99_ms": _ms(percentiles["99"]),
        "rps": float(rps.group(1)),
        "failed": failed,
    }


def run(
    url: str,
    body: dict[str, Any],
    connections: int,
    seconds: int,
    headers: dict[str, str] | None = None,
) -> dict[str, float]:
    """Closed-loop load for `seconds` over `connections` keep-alive connections; the result
    also carries the CPU seconds wrk itself used (to leave out of the target's CPU)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_SCRIPT.format(body=json.dumps(json.dumps(body))))
        for name, value in (headers or {}).items():
            script.write(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}\n")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        process = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s",
             script.name, url],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    finally:
        Path(script.name).unlink()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk is the only child that ended
    if process.returncode:
        raise RuntimeError(f"wrk failed ({process.returncode}):\n{process.stdout}")
    result = parse(process.stdout)
    result["generator_cpu_s"] = (after.ru_utime - before.ru_utime) + (
        after.ru_stime - before.ru_stime
    )
    return result
