# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create (or reuse) the cached environment first: scripts/ensure_env.sh prints its path
# (default ~/.cache/avel/venv, override with AVEL_VENV=...).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
DEMO_DIR ?= demo-output
PYTEST_ARGS ?=

.PHONY: env test test-fast lint format demo bench

env:
	@scripts/ensure_env.sh

test:
	@venv="$$(scripts/ensure_env.sh)"; "$$venv/bin/python" -m pytest -q $(PYTEST_ARGS)

test-fast:
	@venv="$$(scripts/ensure_env.sh)"; "$$venv/bin/python" -m pytest -q -m "not slow" $(PYTEST_ARGS)

# Static checks: ruff lint, ruff format check, mypy over the `avel` package (pyproject.toml).
lint:
	@venv="$$(scripts/ensure_env.sh)"; "$$venv/bin/ruff" check; "$$venv/bin/ruff" format --check; "$$venv/bin/mypy"

# Apply ruff's safe fixes (import order, pyupgrade) and the formatter.
format:
	@venv="$$(scripts/ensure_env.sh)"; "$$venv/bin/ruff" check --fix; "$$venv/bin/ruff" format

demo:
	@venv="$$(scripts/ensure_env.sh)"; "$$venv/bin/avel" demo --out $(DEMO_DIR)

bench:
	@venv="$$(scripts/ensure_env.sh)"; "$$venv/bin/python" benchmarks/store_read_throughput.py
