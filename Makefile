# The project's commands. `make test` is what CI runs (through .ci/run).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint check unit integration e2e sdk fuzz bench bench-quick bench-resume centrifugo soak kafka-start kafka-stop clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# `make demo` installs only what running needs (no development tools).
RUN_STAMP := $(VENV)/.installed-run
$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $(RUN_STAMP)

demo: $(RUN_STAMP)
	$(BIN)/mesaya-realtime demo

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy
	$(BIN)/lint-imports

## The whole suite: lint, types, layers, then unit + integration + e2e on a real Kafka broker,
## then the TypeScript client's (clients/typescript: tsc --strict, unit and against the gateway).
test: lint
	$(BIN)/pytest -q
	$(MAKE) sdk

## The TypeScript client (clients/typescript/README.md): npm ci, tsc --strict, node --test.
SDK := clients/typescript
$(SDK)/node_modules/.installed: $(SDK)/package-lock.json
	cd $(SDK) && npm ci --no-audit --no-fund
	touch $@

sdk: $(STAMP) $(SDK)/node_modules/.installed
	cd $(SDK) && MESAYA_PYTHON=$(abspath $(BIN))/python npm test

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/pytest -q tests/integration

e2e: $(STAMP)
	$(BIN)/pytest -q tests/e2e

## Property-based tests with many more examples than `make test` runs (HYPOTHESIS_PROFILE=fuzz).
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -q -m fuzz --timeout 1800

## Benchmarks (docs/BENCHMARKS.md): the gateway against the floor and a FastAPI baseline on a real
## Kafka broker ($KAFKA_BROKERS, else scripts/kafka-local start). Full run < 10 min, quick < 1 min.
BENCH_STAMP := $(VENV)/.installed-bench

$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $(BENCH_STAMP)

## The resume storm (docs/BENCHMARKS.md "Resume storm"): 5,000 protocol v2 sockets lose their node
## and resume on another, against a plain reconnect storm in the same command.
bench-resume: $(BENCH_STAMP)
	$(BIN)/python -m bench.resume_storm

## Centrifugo (a baseline of `make bench`): built from the Go module proxy with `go install` into
## .venv/bin when Go is present and the binary is missing or of another version (a few minutes the
## first time). Without Go, or when the install fails, one line says so and the bench skips it.
CENTRIFUGO_VERSION := v6.9.1
CENTRIFUGO := $(BIN)/centrifugo

centrifugo: $(BENCH_STAMP)
	@if $(CENTRIFUGO) version 2>/dev/null | grep -q "v$(CENTRIFUGO_VERSION:v%=%) "; then \
	  :; \
	elif ! command -v go >/dev/null 2>&1; then \
	  echo "::: Centrifugo: Go not found, not installed; the bench skips it"; \
	else \
	  echo "::: Centrifugo $(CENTRIFUGO_VERSION): go install github.com/centrifugal/centrifugo/v6 into $(BIN)"; \
	  GOBIN="$(abspath $(BIN))" go install \
	    -ldflags "-X github.com/centrifugal/centrifugo/v6/internal/build.Version=$(CENTRIFUGO_VERSION:v%=%)" \
	    github.com/centrifugal/centrifugo/v6@$(CENTRIFUGO_VERSION) \
	  || echo "::: Centrifugo: go install failed; the bench skips it"; \
	fi

bench: centrifugo
	$(BIN)/python -m bench

# Quick mode (CI) uses Centrifugo only if it is already installed: building it takes minutes.
bench-quick: $(BENCH_STAMP)
	$(BIN)/python -m bench --quick

## The soak (docs/BENCHMARKS.md "Soak"): 10,000 sockets with churn, events and garbage for 10 minutes.
soak: $(BENCH_STAMP)
	$(BIN)/python -m bench.soak

kafka-start:
	scripts/kafka-local start

kafka-stop:
	scripts/kafka-local stop

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache $(SDK)/node_modules $(SDK)/dist
