# Two set-up commands: `make run` and `make test`. Both create .venv when it is missing and
# (re)install when pyproject.toml changed; plain `python3 -m venv` + pip, because pip finds the
# local torch wheels while uv and poetry would download gigabytes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MANIFEST ?= manifests/quickstart.yaml

.PHONY: install run test test-all lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	# Byte-compile our own modules: where PYTHONDONTWRITEBYTECODE is set (as on the CI machine)
	# Python never writes them, and every command would recompile ~100 modules (~0.2-0.3 s).
	$(BIN)/python -m compileall -q xaibench
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/xaibench run $(MANIFEST)

# Lint first (seconds), then the suite. pytest exits 5 when it collects no test: that must
# fail, never pass quietly.
test: $(STAMP)
	$(BIN)/ruff check xaibench tests benchmarks
	$(BIN)/ruff format --check --quiet xaibench tests benchmarks
	$(BIN)/python -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected" >&2; exit 1; fi; exit $$rc

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ''; rc=$$?; if [ $$rc -eq 5 ]; then exit 1; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff check xaibench tests benchmarks
	$(BIN)/ruff format --check xaibench tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format xaibench tests benchmarks
	$(BIN)/ruff check --fix xaibench tests benchmarks

# Speed figures, each measured against a reference in the same run (benchmarks/README.md).
# Quantus is a benchmark-only dependency: the `bench` extra.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(BIN)/python benchmarks/cli_latency.py
	$(BIN)/python benchmarks/quantus_pixel_flipping.py
	$(BIN)/python benchmarks/road_imputer.py
	$(BIN)/python benchmarks/perturbation_speed.py
	$(BIN)/python benchmarks/streaming.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
