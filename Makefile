# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: install recsim-env run test bench clean-data

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench,autotune,distributed]'
	rm -f $(VENV)/.installed-*; touch $(STAMP)

install: $(STAMP)

## run: the main end-to-end pipeline on embedded defaults (MLflow SQLite under .deeprl/)
run: install
	$(VENV)/bin/deeprl pipeline demo

## recsim-env: the isolated RecSim NG (TensorFlow) environment, driven as a subprocess by recsys
recsim-env:
	bash recsys/build_recsim_env.sh

## test: the whole test suite (RecSim NG cross-checks included)
test: install recsim-env
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

## bench: benchmarks side by side with Stable-Baselines3 (minutes; not part of the tests)
bench: install
	$(PY) -m benchmarks.on_policy

clean-data:
	rm -rf .deeprl
