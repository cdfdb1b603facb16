# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install recsim-env safety-env obd-data obp-env run test test-all lint format bench mlflow-server clean-data

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench,autotune,distributed,atari,mujoco,peers]'
	rm -f $(VENV)/.installed-*; touch $(STAMP)

install: $(STAMP)

## run: the main end-to-end pipeline on embedded defaults (MLflow SQLite under .deeprl/)
run: install
	$(VENV)/bin/deeprl pipeline demo

## recsim-env: the isolated RecSim NG (TensorFlow) environment, driven as a subprocess by recsys
recsim-env:
	bash recsys/build_recsim_env.sh

## safety-env: the isolated Safety-Gymnasium 1.0.0 environment (Python 3.10, .deeprl/safety-venv), served
## to the main one by child processes (safety.safety_gymnasium); without a Python 3.10 it says so and its tests skip
safety-env:
	bash safety/build_safety_env.sh || echo "warning: the Safety-Gymnasium venv could not be built; its tests will skip"

## obd-data: the Open Bandit Dataset sample (from obp's source distribution, via pip) under .deeprl/obd
## (tests that need it skip with one line when it cannot be had)
obd-data: install
	$(PY) -m recsys.obd fetch || echo "warning: the Open Bandit Dataset could not be fetched; its tests will skip"

## obp-env: Open Bandit Pipeline in its own venv (.deeprl/obp-venv), the peer of the OPE estimators
obp-env:
	bash recsys/build_obp_env.sh || echo "warning: the OBP venv could not be built; the equality tests will skip"

## tests run in $(PYTEST_WORKERS) pytest-xdist workers, one file per worker at a time, one torch thread each
## (PYTEST_WORKERS=0: one process, torch's default threads)
PYTEST_WORKERS ?= 2
ifeq ($(PYTEST_WORKERS),0)
PYTEST = $(PY) -m pytest -q -p no:cacheprovider
else
PYTEST = OMP_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadfile
endif

## test: the fast tier — every test but the slowest learning tests (marked `slow`); minutes
test: install recsim-env safety-env
	$(PYTEST) -m "not slow" $(PYTEST_ARGS)

## test-all: the whole suite, slow learning tests included (RecSim NG cross-checks too): what CI runs
test-all: install recsim-env safety-env obd-data obp-env
	$(PYTEST) $(PYTEST_ARGS)

## lint: ruff's lint rules and format check (configured in pyproject.toml)
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## format: apply ruff's import order, fixes and formatting
format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## bench: benchmarks side by side with Stable-Baselines3 (minutes; not part of the tests)
bench: install
	$(PY) -m benchmarks.on_policy

## mlflow-server: a shared MLflow tracking server on 127.0.0.1:$(MLFLOW_PORT), PostgreSQL backend store,
## artifacts proxied from $(MLFLOW_ARTIFACTS); clients: MLFLOW_TRACKING_URI=http://127.0.0.1:$(MLFLOW_PORT)
MLFLOW_BACKEND   ?= postgresql://postgres@127.0.0.1:5432/mlflow
MLFLOW_ARTIFACTS ?= .deeprl/server-artifacts
MLFLOW_PORT      ?= 5000
mlflow-server: install
	$(VENV)/bin/deeprl server --backend-store-uri $(MLFLOW_BACKEND) --artifacts-destination $(MLFLOW_ARTIFACTS) \
	    --port $(MLFLOW_PORT) --workers 2

clean-data:
	rm -rf .deeprl
