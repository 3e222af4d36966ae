# Two commands a user needs: `make demo` and `make test`. Both set up .venv first.
# `make test-fast`: every test that runs neither the pipeline nor a long training (a few
# minutes), for after each edit; `make test` (the full suite) before a stop, and in CI.
PY := .venv/bin/python
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: setup demo paper test test-fast lint format clean

setup:
	@bash tools/bootstrap_env.sh

demo: setup
	$(PY) local_runner.py --profile demo

# The paper's BUSI table beside this run's (lesionlens reproduce; README, "Results"):
# BUSI=/path/Dataset_BUSI_with_GT (default ../shared/data/busi/...), OUT=out/busi-paper,
# ARGS= any model flag (e.g. --seed 43).
paper: setup
	$(PY) -m lesionlens.cli reproduce $(or $(BUSI),../shared/data/busi/Dataset_BUSI_with_GT) \
	    $(or $(OUT),out/busi-paper) $(ARGS)

test: setup
	$(PY) -m pytest -q tests

test-fast: setup
	$(PY) -m pytest -q -m "not pipeline and not slow" tests

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff format . && $(PY) -m ruff check --fix .

clean:
	rm -rf out demo_data .pytest_cache
