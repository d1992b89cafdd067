# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create (or reuse) the cached environment first; see scripts/ensure_env.sh.
SHELL := /bin/bash
VENV := $(shell scripts/ensure_env.sh)
PY := $(VENV)/bin/python
AVEL := $(VENV)/bin/avel
DEMO_DIR ?= demo-output
PYTEST_ARGS ?=

.PHONY: env test test-fast demo bench clean-demo

env:
	@echo "environment: $(VENV)"

test:
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast:
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

demo:
	$(PY) -m avel.cli.demo --out $(DEMO_DIR)

bench:
	$(PY) benchmarks/store_read_throughput.py

clean-demo:
	rm -rf $(DEMO_DIR)
