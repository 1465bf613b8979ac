# One command runner: README, CI and hooks use these targets.
PY      ?= python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
export DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true PREFECT_SERVER_ANALYTICS_ENABLED=false
export DVC_NO_ANALYTICS=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false

.PHONY: setup run run-plain serve ablate test test-slow lint bench clean

setup: $(BIN)/selfloop

# torch first, pinned: it takes the local CPU wheel; anything unpinned pulls a CUDA build.
$(BIN)/selfloop: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[dev]"
	touch $(BIN)/selfloop

# The loop as a Prefect flow against a project-local server (started and stopped here),
# versioned by DVC, tracked in MLflow, gated by great-expectations. Replaces runs/default.
run: setup
	infra/with-prefect-server.sh --early $(BIN)/python -m flows.loop runs/default

# The same loop without Prefect (DVC, MLflow and the gates still on): `selfloop run`.
run-plain: setup
	$(BIN)/selfloop run --fresh

serve: setup
	infra/with-prefect-server.sh $(BIN)/python -m flows.serve

# Ablation arms from one base checkpoint (runs/ablate), report in reports/ablation
# (README "Ablations"). Finished arms are kept; ARGS passes options, e.g. ARGS="--iterations 3".
ablate: setup
	$(BIN)/selfloop ablate $(ARGS)

test: setup
	$(BIN)/ruff check .
	$(BIN)/pytest -q

test-slow: setup
	$(BIN)/pytest -q -m slow

lint: setup
	$(BIN)/ruff check .

# Throughput (seconds); cost against problems per generation (1x/4x/16x, ~10 minutes); the
# full stack against the plain loop on the default run, 3 pairs side by side (~50 minutes;
# also the iteration's time and peak memory by step); then the summary with all of it.
bench: setup
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/scaling.py
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python benchmarks/overhead.py --repeats 3
	$(BIN)/python benchmarks/run.py --summary-only

clean:
	rm -rf runs
