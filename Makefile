# Personas: `make demo` and `make test` work on a fresh Debian machine (they install what they need).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# A CPU build of torch lies on this machine's disk; installing it first keeps pip from
# pulling a multi-GB CUDA build. On a Mac the same pin gives the MPS build.
TORCH_SPEC ?= torch==2.13.0
CLIENT := tests/clients/feed_tokens
PYTEST := PERSONAS_NO_SKIPS=1 $(BIN)/pytest -q  # every dependency is installed: a skip is a failure

.PHONY: all venv deps faces llm-server test test-unit test-process test-e2e test-loaded demo bench clean

all: venv

# System packages the tests need (Debian): libzmq for the C client, the espeak-ng engine,
# Chromium for the browser test (Playwright drives the system browser: no download),
# PostgreSQL for the registry's server backend (the tests start their own, in a temp dir).
# As root the missing ones are installed; otherwise one line says what to run.
DEBS := gcc g++ cmake make python3-venv libzmq3-dev pkg-config espeak-ng chromium postgresql
deps:
	@missing=$$(for p in $(DEBS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages:" $$missing "-- run: sudo make deps"; exit 1; fi; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get install -y -q $$missing >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q $$missing >/dev/null)

$(STAMP): pyproject.toml | deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[test]"
	# Resemblyzer's speaker-encoder weights (persona voice embeddings); its own dependencies
	# (librosa, webrtcvad) are not needed: persona/voice_embedding.py has its own front end.
	$(BIN)/pip install -q --no-deps "resemblyzer==0.1.4"
	touch $(STAMP)

venv: $(STAMP)

# The local LLM server for the chat tests (pyproject's llm-server extra, read from there). No
# wheel on PyPI: compiled here, ~8 min on two cores, without the multimodal library it does not
# need. `make test` runs this in the background during the unit and process tiers.
LLM_STAMP := $(VENV)/.llm-server
$(LLM_STAMP): $(STAMP)
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/pip install -q $$($(BIN)/python -c \
	  "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['llm-server']))")
	touch $@

llm-server: $(LLM_STAMP)

# Real photos for the persona builder's tests (several of one person, another person, partial
# faces): the face_recognition sdist ships them; fetched from the package index, not checked in.
FACES := tests/data/faces
$(FACES)/.fetched:
	rm -rf $(FACES) && mkdir -p $(FACES)/sdist
	$(BIN)/pip download -q --no-binary :all: --no-deps face_recognition==1.3.0 -d $(FACES)/sdist
	tar -xzf $(FACES)/sdist/face_recognition-1.3.0.tar.gz -C $(FACES) --strip-components=3 face_recognition-1.3.0/tests/test_images
	rm -rf $(FACES)/sdist && touch $@

faces: venv $(FACES)/.fetched

$(CLIENT): tests/clients/feed_tokens.c | deps
	gcc -O2 -Wall -Wextra -o $@ $< -lzmq

# The three tiers: in-process (no child process, < 60 s), one actor on real sockets, the real supervisor.
# The LLM server compiles in the background meanwhile (the suite holds under load by design).
test: deps venv
	@$(MAKE) --no-print-directory llm-server > $(VENV)/llm-server.log 2>&1 & build=$$!; \
	$(MAKE) --no-print-directory test-unit test-process; tiers=$$?; \
	if [ $$tiers != 0 ]; then kill $$build 2>/dev/null; wait $$build; exit $$tiers; fi; \
	wait $$build || { echo "building the LLM server failed:"; tail -30 $(VENV)/llm-server.log; exit 1; }; \
	$(MAKE) --no-print-directory test-e2e

test-unit: deps venv $(FACES)/.fetched
	$(PYTEST) tests/unit

test-process: deps venv
	$(PYTEST) tests/process

test-e2e: deps venv $(CLIENT) $(FACES)/.fetched $(LLM_STAMP)
	$(PYTEST) tests/e2e

# The suite while two busy-loop processes compete for the two cores (what a shared CI runner does).
test-loaded: deps venv $(CLIENT)
	@$(PYTHON) -c 'while True: pass' & a=$$!; $(PYTHON) -c 'while True: pass' & b=$$!; \
	trap "kill $$a $$b 2>/dev/null" EXIT INT TERM; \
	echo "two busy loops running (pids $$a $$b)"; $(MAKE) --no-print-directory test

demo: venv
	$(BIN)/personas run examples/demo.txt --out out/demo.mp4

bench: venv
	$(BIN)/personas bench ttff --runs 12 --json out/bench.json

clean:
	rm -rf out $(CLIENT) .pytest_cache
