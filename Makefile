# Two commands on a fresh Debian 12 machine (as root): `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test lint unit demo bench man clean

setup:
	@VENV=$(VENV) ./scripts/setup.sh

lint: setup
	$(VENV)/bin/ruff check aklited aklite_bundle aklited_sim tests bench scripts
	$(VENV)/bin/ruff format --check aklited aklite_bundle aklited_sim tests bench scripts
	$(VENV)/bin/mypy --strict
	$(VENV)/bin/lint-imports --no-cache --no-logo

test: lint
	$(PY) -m pytest -q tests

demo: setup
	@$(PY) -m aklited_sim.demo

bench: setup
	@$(PY) bench/run.py $(ARGS)

# The manual pages in packaging/man, from the parsers and the code (committed: a device
# build installs them without Python).
man: setup
	$(PY) scripts/manpages.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
