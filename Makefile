# cross4d developer commands. Everything runs inside .venv + the colcon workspace in .colcon/.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
ENV := source tools/env.sh &&
PYTEST_ARGS ?=

.PHONY: setup test test-all bench demo clean

setup:
	./tools/setup.sh

test: setup
	$(ENV) python -m pytest $(PYTEST_ARGS)

# Includes the tests marked slow (soak); not part of CI.
test-all: setup
	$(ENV) python -m pytest -m "" $(PYTEST_ARGS)

bench: setup
	$(ENV) python -m benchmarks.run

demo: setup
	$(ENV) python -m cross4d_core.demo

clean:
	rm -rf .colcon reports/demo .pytest_cache .hypothesis
