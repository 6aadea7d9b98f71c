# `make demo` runs the main job on built-in data; `make test` runs the linter (ruff) and the test suite.
# Both create .venv when it is missing. Torch is installed first (TORCH_SPEC, a CPU
# build on laptops; on a GPU machine use e.g. TORCH_SPEC="torch==2.13.0 --index-url ...").

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.neurocast-installed

.PHONY: demo test install bench gpu-check docs clean-venv

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "neurocast needs Python >= 3.10 (set PYTHON=python3.11)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet --no-deps flyvis==1.2.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/neurocast demo

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py

# docs/CONFIG.md from the config schemas, docs/benchmarks.md from benchmarks/results (tests check both)
docs: $(STAMP)
	$(BIN)/neurocast config reference > docs/CONFIG.md
	$(BIN)/python benchmarks/render_docs.py
	$(BIN)/python benchmarks/scaling.py

clean-venv:
	rm -rf $(VENV)
