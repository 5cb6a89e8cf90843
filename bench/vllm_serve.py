"""vLLM's own OpenAI server against the gateway serving the same model with the same engine
arguments, measured by vLLM's serving benchmark (`vllm.benchmarks.serve`, what `vllm bench
serve` runs). Each target is started fresh; the benchmark starts the moment it is ready
(vLLM: `GET /v1/models` 200, then 8 untimed requests, since it reports ready cold; gateway:
`GET /health` 200, i.e. after its own warm-up, and nothing else: its first requests count).

Workload: random dataset, 128 input / 32 output tokens (ignore_eos), 32 prompts at
concurrency 4, streamed /v1/chat/completions (the `openai-chat` backend), fixed seed,
tokenizer read from the local model folder (HF_HUB_OFFLINE=1).

Run: .venv/bin/python bench/vllm_serve.py [--rounds N] [--targets vllm,gateway]
Prints JSON per round and target (output tok/s, req/s, TTFT p50/p99, TPOT p50), then the
gateway/vLLM ratios of the medians over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.floor import start as launch  # noqa: E402
from deployments._vllm import engine_dtype, model_parameters  # noqa: E402
from gateway.config import GatewayConfig  # noqa: E402
from tests.helpers import ENGINE_ENV, cluster_env, free_port, stop_process, wait_until  # noqa: E402

KEYS = {"output_tok_s": "output_throughput", "req_s": "request_throughput",
        "ttft_p50_ms": "median_ttft_ms", "ttft_p99_ms": "p99_ttft_ms",
        "tpot_p50_ms": "median_tpot_ms"}  # fmt: skip


def gateway_config(config: dict[str, Any], backend: str, port: int, folder: Path) -> dict[str, Any]:
    """The serve config with `backend` alone (routes, experiments pruned to match), on `port`,
    its ledger and request log in `folder`."""
    config = json.loads(json.dumps(config))
    config["http_options"]["port"] = port
    args = config["applications"][0]["args"]
    args["backends"] = {backend: args["backends"][backend]}
    routes = {}
    for name, route in args.get("routes", {}).items():
        route["candidates"] = [c for c in route.get("candidates", []) if c == backend]
        route["fallbacks"] = [f for f in route.get("fallbacks", []) if f == backend]
        if route["candidates"]:
            routes[name] = route
    args["routes"] = routes
    if args.get("default_route") not in routes:
        args["default_route"] = next(iter(routes), None)
    args["experiments"] = {
        name: exp for name, exp in args.get("experiments", {}).items()
        if exp["route"] in routes and exp.get("shadow") in (None, backend)
        and all(arm.get("backend") in (None, backend) for arm in exp["arms"].values())
    }  # fmt: skip
    args["ledger"] = {**args.get("ledger", {}), "path": str(folder / "ledger.sqlite")}
    args["request_log"] = {**args.get("request_log", {}), "path": str(folder / "requests.jsonl")}
    GatewayConfig.load(args)  # fail here, not after a minute of `serve run`
    return config


def vllm_command(model: str, name: str, port: int, kwargs: dict[str, Any]) -> list[str]:
    """`api_server` with the backend's engine_kwargs as flags (True -> bare flag)."""
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
               "--served-model-name", name, "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    for key, value in kwargs.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            command.append(flag)
        elif value is not False and value is not None:
            command += [flag, str(value)]
    return command


def benchmark(
    base: str, model: str, tokenizer: str, opts: argparse.Namespace, warmups: int = 0
) -> dict[str, Any]:
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    argv = ["--backend", "openai-chat", "--endpoint", "/v1/chat/completions",
            "--base-url", base, "--model", model, "--tokenizer", tokenizer,
            "--dataset-name", "random", "--random-input-len", str(opts.input_len),
            "--random-output-len", str(opts.output_len), "--num-prompts", str(opts.num_prompts),
            "--max-concurrency", str(opts.concurrency), "--ignore-eos", "--temperature", "0",
            "--seed", str(opts.seed), "--percentile-metrics", "ttft,tpot,itl,e2el",
            "--metric-percentiles", "50,99", "--disable-tqdm",
            "--num-warmups", str(warmups)]  # fmt: skip
    result = main(parser.parse_args(argv))
    if result["failed"]:
        raise RuntimeError(f"{base}: {result['failed']} of {opts.num_prompts} requests failed")
    return result


def run_target(
    target: str, start: Callable[[Path], tuple[subprocess.Popen[bytes], str, str]],
    bench: Callable[[str], dict[str, Any]],
) -> dict[str, Any]:  # fmt: skip
    with tempfile.TemporaryDirectory(prefix=f"bench-{target}-") as name:
        folder = Path(name)
        log = folder / "server.log"
        started = time.monotonic()
        proc, base, ready_url = start(folder)
        try:
            wait_until(
                lambda: httpx.get(ready_url, timeout=5).status_code == 200, 900,
                f"{target}: GET {ready_url} 200", proc, log,
            )  # fmt: skip
            ready_s = time.monotonic() - started
            result = bench(base)
        finally:
            stop_process(proc, grace_s=60)
    summary = {key: round(float(result[src]), 2) for key, src in KEYS.items()}
    done = {"completed": result["completed"], "duration_s": round(result["duration"], 1)}
    return {"target": target, "ready_s": round(ready_s, 1), **summary, **done}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/local.yaml")
    parser.add_argument("--backend", default="smollm2")
    parser.add_argument("--targets", default="vllm,gateway")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--num-prompts", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--vllm-warmups", type=int, default=8,
        help="untimed requests to vLLM's own server first: it reports ready cold, the gateway "
        "only after its own warm-up (2 rounds of 4 by default); 0 compares with it cold",
    )  # fmt: skip
    opts = parser.parse_args()
    targets = [t.strip() for t in opts.targets.split(",") if t.strip()]
    if not targets or set(targets) - {"vllm", "gateway"}:
        parser.error("--targets: a comma-separated subset of vllm,gateway")
    os.environ.update(ENGINE_ENV)  # the benchmark's tokenizer: offline too
    serve_config = yaml.safe_load((ROOT / opts.config).read_text())
    backend = GatewayConfig.load(serve_config["applications"][0]["args"]).backends[opts.backend]
    model_path = backend.resolved_source(ROOT)
    dtype, why = engine_dtype(backend, parameters=model_parameters(model_path))
    print(f"dtype: {dtype} ({why}); model: {model_path}", flush=True)
    kwargs = {**backend.engine_kwargs, "dtype": dtype}

    def start_vllm(folder: Path) -> tuple[subprocess.Popen[bytes], str, str]:
        port = free_port()
        command = vllm_command(model_path, backend.model, port, kwargs)
        print("vllm:", " ".join(command[1:]), flush=True)
        base = f"http://127.0.0.1:{port}"
        proc = launch(command, folder / "server.log", {**os.environ, **ENGINE_ENV})
        return proc, base, f"{base}/v1/models"

    def start_gateway(folder: Path) -> tuple[subprocess.Popen[bytes], str, str]:
        port = free_port()
        path = folder / "serve.yaml"
        path.write_text(yaml.safe_dump(gateway_config(serve_config, opts.backend, port, folder)))
        # RAY_ADDRESS=local: a fresh cluster, whatever /tmp/ray/ray_current_cluster names.
        env = {**os.environ, **cluster_env(), "RAY_ADDRESS": "local",
               "RAY_OVERRIDE_RESOURCES": '{"CPU": 8}'}  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "gateway", "serve", str(path)]  # what make serve runs
        proc = launch(command, folder / "server.log", env)
        return proc, base, f"{base}/health"

    starters = {"vllm": start_vllm, "gateway": start_gateway}
    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in targets}
    for round_index in range(opts.rounds):
        order = targets if round_index % 2 == 0 else targets[::-1]  # alternate who goes first
        for target in order:
            result = run_target(
                target, starters[target],
                lambda base, target=target: benchmark(
                    base, backend.model, model_path, opts,
                    opts.vllm_warmups if target == "vllm" else 0,
                ),
            )  # fmt: skip
            runs[target].append(result)
            print(json.dumps({"round": round_index + 1, **result}), flush=True)
    medians = {
        t: {k: round(statistics.median(r[k] for r in rs), 2) for k in ("ready_s", *KEYS)}
        for t, rs in runs.items()
    }  # fmt: skip
    summary: dict[str, Any] = {"dtype": dtype, "rounds": opts.rounds, "endpoint":
                               "/v1/chat/completions (openai-chat)", **medians}  # fmt: skip
    if len(medians) == 2:
        gw, vl = medians["gateway"], medians["vllm"]
        summary["gateway_over_vllm"] = {
            "output_tok_s": round(gw["output_tok_s"] / vl["output_tok_s"], 3),
            "ttft_p50": round(gw["ttft_p50_ms"] / vl["ttft_p50_ms"], 3),
        }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
