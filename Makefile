# xraycnn: `make search` runs the main job, `make test` the test suite; both install what they need first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
EXPERIMENT ?= experiments/default.toml
MODEL ?= models:/xraycnn@champion

.DEFAULT_GOAL := help
.PHONY: help install search search-robust search-distributed sync train-seed predict evaluate calibrate serve report ui test test-fast bench bench-all bench-profile bench-against bench-anytime probe probe-transfer lint format clean-state

help: ## list the targets
	@echo "usage: make TARGET [EXPERIMENT=experiments/x.toml] [FRESH=1]"
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-19s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# uv resolves and installs the same packages as pip from the same registry, several times faster on a fresh
# machine (docs/testing.md); pip installs uv itself, and stays in the venv for whoever wants it. Bytecode is
# compiled at install time, as pip does: where PYTHONDONTWRITEBYTECODE is set (CI), every process would
# otherwise compile TensorFlow's sources again on import.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install xraycnn (editable) with pytest, ruff, playwright and OpenCV (a test reference)

search: install ## run or resume the search of EXPERIMENT (default experiments/default.toml); FRESH=1 starts over
	$(BIN)/xraycnn search $(EXPERIMENT) $(if $(FRESH),--fresh)

search-robust: install ## the longer search of experiments/robust.toml (lung crops, up to 45 min on 2 cores); FRESH=1 starts over
	$(BIN)/xraycnn search experiments/robust.toml $(if $(FRESH),--fresh)

WORKERS ?= 2
search-distributed: install ## the same search on WORKERS workers (default 2) behind an MLflow tracking server
	$(BIN)/xraycnn search $(EXPERIMENT) --workers $(WORKERS) $(if $(FRESH),--fresh)

sync: install ## send the MLflow writes searches left in their spools (the store was away) and finish them
	$(BIN)/xraycnn sync

train-seed: install ## train the published notebook's network (experiments/seed.toml) as one tracked run
	$(BIN)/xraycnn train experiments/seed.toml

predict: install ## predict IMAGES="a.jpg b.jpg" with MODEL (default models:/xraycnn@champion)
	$(BIN)/xraycnn predict --model $(MODEL) $(IMAGES)

DATA ?= ../shared/data/cxr-covid
evaluate: install ## evaluate MODEL on DATA (a folder of class folders; default the test split of cxr-covid)
	$(BIN)/xraycnn evaluate --model $(MODEL) --data $(DATA)

RATE ?= 0.10
calibrate: install ## set site SITE's threshold on MODEL from its normal films in NORMALS (false-positive rate at most RATE, default 0.10)
	$(BIN)/xraycnn calibrate --model $(MODEL) --normals $(NORMALS) --max-false-positive-rate $(RATE) --site $(SITE)

PORT ?= 5001
serve: install ## serve MODEL over HTTP on 127.0.0.1:PORT (default 5001): image files in, P(COVID19) and call out
	$(BIN)/xraycnn serve --model $(MODEL) --port $(PORT)

report: install ## write the HTML report of EXPERIMENT's latest search to reports/ (and log it to its run)
	$(BIN)/xraycnn report $(EXPERIMENT)

ui: install ## open the MLflow UI on the project's store at http://127.0.0.1:5000
	$(BIN)/xraycnn ui

test: install ## run the test suite on 2 processes (CPU only, 5-10 minutes on 2 cores)
	$(BIN)/pytest -n 2 --dist loadfile --no-loadscope-reorder

test-fast: install ## the unit tests only, not the ones that run the real CLI end to end (about 1 minute)
	$(BIN)/pytest -m "not slow"

lint: install ## ruff check
	$(BIN)/ruff check src tests benchmarks

format: install ## ruff format and fix imports
	$(BIN)/ruff check --fix --select I src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

clean-state: ## delete all tuner state and the MLflow store (runs and registered models!)
	@read -p "Delete tuner/* and mlruns/* (all runs and registered models)? [y/N] " ok && [ "$$ok" = y ]
	find tuner mlruns -mindepth 1 ! -name .gitkeep -exec rm -rf {} +

bench: install ## the core figures: training img/s, FLOP efficiency, the default search's wall time and memory, serving (`python -m benchmarks --list`)
	$(BIN)/python -m benchmarks

bench-all: install ## every part of the bench: the core, augmentation, audit and guard costs, decode, inference, tracking, distributed (~40 min)
	$(BIN)/python -m benchmarks --all

bench-profile: install ## where a whole default search's wall time goes, by phase (py-spy samples; ~3 min)
	$(BIN)/python -m benchmarks.studies.search_profile --set training.precision=float32

bench-against: install ## the default search now vs issue 12's (6c4fade), alternating, as a CPU without bf16 runs them (~15 min)
	ONEDNN_MAX_CPU_ISA=AVX2 $(BIN)/python -m benchmarks.studies.search_against --float32

bench-anytime: install ## best val_auc so far against wall time: Hyperband, random, Bayesian, 3 seeds (~40 min)
	$(BIN)/python -m benchmarks.studies.anytime

probe: install ## the shortcut probe: one network per preprocessing/augmentation choice, audited on test (~35 min)
	$(BIN)/python -m benchmarks.studies.shortcut_probe

probe-transfer: install ## the transfer probe: the default champion's network per augmentation set, its calls under acquisition changes (2 seeds, ~30 min)
	$(BIN)/python -m benchmarks.studies.transfer_probe --only light_12epochs blur_sharpen_12epochs blur_sharpen_framing_12epochs texture_framing_12epochs --seeds 42 7
