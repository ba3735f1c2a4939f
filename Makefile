# cdcwh developer entry points. Only Python 3.11+ and make are needed: the first
# target you run creates .venv and installs the project into it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help demo test test-unit lint format clean

help:
	@echo "make demo   set up .venv, then run the pipeline demo on the embedded broker and Postgres"
	@echo "make test   set up .venv, then run the whole test suite"
	@echo "make lint   ruff + mypy --strict on the package"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "cdcwh needs Python >= 3.11 (found $$($(PYTHON) --version)); set PYTHON=python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[embedded,dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cdcwh demo $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check services tests
	$(BIN)/ruff format --check services tests
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format services tests
	$(BIN)/ruff check --fix services tests

clean:
	rm -rf $(VENV) .cdcwh .pytest_cache .mypy_cache .ruff_cache
