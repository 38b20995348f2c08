# Personas: `make demo` and `make test` work on a fresh machine (they build .venv first).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# A CPU build of torch lies on this machine's disk; installing it first keeps pip from
# pulling a multi-GB CUDA build. On a Mac the same pin gives the MPS build.
TORCH_SPEC ?= torch==2.13.0
CLIENT := tests/clients/feed_tokens

.PHONY: all venv test test-fast demo bench clean deps

all: venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

venv: $(STAMP)

# System packages the tests need (Debian; run as root): libzmq for the C client, the espeak-ng
# engine, Chromium for the browser test (Playwright drives the system browser: no download).
DEBS := gcc make libzmq3-dev pkg-config espeak-ng chromium
deps:
	apt-get install -y -q $(DEBS) >/dev/null || (apt-get update -q && apt-get install -y -q $(DEBS))

$(CLIENT): tests/clients/feed_tokens.c
	gcc -O2 -Wall -Wextra -o $@ $< -lzmq

test: venv $(CLIENT)
	$(BIN)/pytest -q

test-fast: venv
	$(BIN)/pytest -q -m "not e2e"

demo: venv
	$(BIN)/personas run examples/demo.txt --out out/demo.mp4

bench: venv
	$(BIN)/personas bench ttff --runs 12 --json out/bench.json

clean:
	rm -rf out $(CLIENT) .pytest_cache
