# Two commands on a fresh Debian 12 machine (as root): `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test lint unit demo bench clean

setup:
	@VENV=$(VENV) ./scripts/setup.sh

lint: setup
	$(VENV)/bin/ruff check aklited aklite_bundle aklited_sim tests bench
	$(VENV)/bin/ruff format --check aklited aklite_bundle aklited_sim tests bench
	$(VENV)/bin/mypy --strict
	$(VENV)/bin/lint-imports --no-cache --no-logo

test: lint
	$(PY) -m pytest -q tests

demo: setup
	@$(PY) -m aklited_sim.demo

bench: setup
	@$(PY) bench/run.py $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
