# Ecosystem indicators pipeline. `make help` lists the targets.
landscape ?= lourenco
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := run
.PHONY: help run validate fetch report compare test test-all lint golden clean-processed bench

help:  ## list targets (landscape=NAME selects configs/landscapes/NAME.yaml; default lourenco)
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

venv: $(STAMP)  ## create .venv and install the project (done automatically by the other targets)

validate: $(STAMP)  ## check config, legend and inputs of $(landscape); computes nothing
	$(PY) -m pipeline validate $(landscape)

run: $(STAMP)  ## run every indicator for $(landscape) -> data/processed/$(landscape)/ (fetches missing Earth Engine land cover when credentials exist)
	$(PY) -m pipeline fetch $(landscape) --if-missing
	$(PY) -m pipeline run $(landscape)

report: $(STAMP)  ## maps, charts and the assessment report of $(landscape) -> data/processed/$(landscape)/report/ (runs first if needed)
	@test -f data/processed/$(landscape)/manifest.json || $(MAKE) --no-print-directory run landscape=$(landscape)
	$(PY) -m pipeline report $(landscape)

compare: $(STAMP)  ## compare two runs: make compare a=OLD_RUN_DIR b=NEW_RUN_DIR -> data/processed/compare_*/
	$(PY) -m pipeline compare $(a) $(b)

fetch: $(STAMP)  ## download the land cover of $(landscape) from Google Earth Engine -> data/raw/$(landscape)/ (needs an Earth Engine account)
	$(PY) -m pipeline fetch $(landscape)

test: $(STAMP)  ## the test suite (offline; slow tests excluded)
	$(PY) -m pytest -q -m "not slow" -n 2 --dist loadgroup

test-all: $(STAMP)  ## every test, slow ones included
	$(PY) -m pytest -q -n 2 --dist loadgroup

lint: $(STAMP)  ## ruff
	$(PY) -m ruff check pipeline tests

golden: $(STAMP)  ## regenerate tests/golden/ after a reviewed change of numbers
	$(PY) -m tests.golden.regenerate

bench: $(STAMP)  ## benchmarks (indicators vs pylandstats, whole pipeline vs rasterio.mask) on generated 16 and 144 Mpx landscapes -> data/bench/results.csv (576 Mpx: python -m bench.run --full)
	$(PY) -m bench.run

clean-processed:  ## delete data/processed/$(landscape)/
	rm -rf data/processed/$(landscape)
