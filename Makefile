# Two commands on a fresh Debian 12 machine (as root): `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test lint unit demo bench man clean

setup:
	@VENV=$(VENV) ./scripts/setup.sh

LINTED := aklited aklite_bundle aklited_sim tests bench scripts

# Each check says nothing when it passes and everything when it does not.
lint: setup
	@echo "lint: ruff, mypy --strict, import contracts"
	@$(VENV)/bin/ruff check -q $(LINTED)
	@$(VENV)/bin/ruff format -q --check $(LINTED)
	@$(VENV)/bin/mypy --strict --no-error-summary
	@out=$$($(VENV)/bin/lint-imports --no-cache --no-logo 2>&1) || { echo "$$out"; exit 1; }

test: lint
	@echo "test: pytest (about 7 minutes; root, real dockerd, udevd and dbus-daemon)"
	@$(PY) -m pytest -q tests

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
