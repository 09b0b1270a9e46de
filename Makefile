# cross4d developer commands. Everything runs inside .venv + the colcon workspace in .colcon/.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
ENV := source tools/env.sh &&
PYTEST_ARGS ?=

.PHONY: setup lint test test-all bench gpu-check demo clean

setup:
	./tools/setup.sh

# Static checks, before the tests: ruff over the repository (rules in ruff.toml), mypy on
# cross4d_core (settings and files in mypy.ini).
lint: setup
	$(ENV) ruff check .
	$(ENV) python -m mypy

test: lint
	$(ENV) python -m pytest $(PYTEST_ARGS)

# Includes the tests marked slow (soak); not part of CI.
test-all: setup
	$(ENV) python -m pytest -m "" $(PYTEST_ARGS)

bench: setup
	$(ENV) python -m benchmarks.run

# The CUDA path on a GPU machine (<= 8 min): reports/gpu.json + reports/gpu.md.
# `make gpu-check ARGS=--dry` runs the same code at a tiny size on the CPU (`make test` does).
ARGS ?=
gpu-check: setup
	$(ENV) python -m benchmarks.gpu_check $(ARGS)

demo: setup
	$(ENV) python -m examples.demo

clean:
	rm -rf .colcon reports/demo .pytest_cache .hypothesis .mypy_cache .ruff_cache
