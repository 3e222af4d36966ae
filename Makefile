# Two commands a user needs: `make demo` and `make test`. Both set up .venv first.
PY := .venv/bin/python
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: setup demo test lint format clean

setup:
	@bash tools/bootstrap_env.sh

demo: setup
	$(PY) local_runner.py --profile demo

test: setup
	$(PY) -m pytest -q tests

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format: setup
	$(PY) -m ruff format . && $(PY) -m ruff check --fix .

clean:
	rm -rf out demo_data .pytest_cache
