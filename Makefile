# The project's commands. `make test` is what CI runs (through .ci/run).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint check unit integration e2e fuzz bench bench-quick soak kafka-start kafka-stop clean

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

## The whole suite: lint, types, layers, then unit + integration + e2e on a real Kafka broker.
test: lint
	$(BIN)/pytest -q

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

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench

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
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
