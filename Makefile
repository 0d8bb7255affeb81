# Every target sets up .venv on first use, so a fresh clone needs only `make run` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Ray 2.60 turns token authentication on for new local clusters; local runs and tests opt out
# explicitly (cluster runs set it in cluster.yaml).
export RAY_AUTH_MODE ?= disabled
export PYTHONUNBUFFERED := 1
RUN_DIR ?= runs/quick-value-head

.PHONY: setup run test lint bench tensorboard clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch is pinned in pyproject.toml (the one the suite is tested on): pip takes the CPU build
	# of that version where the platform has one on disk, else PyPI's; a failure stops here.
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	@echo "make run: the value_head sweep at quick (8 trials, about 5 min on 2 cores), then its" \
		"report, each step announced with its estimate"
	$(BIN)/esper-rllib ablate --sweep value_head --profile quick --seeds 1 --storage $(CURDIR)/$(RUN_DIR)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# The newest sweep under RUN_DIR: its run names are the trials' axes, nothing in front of them.
tensorboard: $(STAMP)
	@latest=$$(ls -td $(RUN_DIR)/*/ 2>/dev/null | head -1); \
	if [ -z "$$latest" ]; then echo "no sweep under $(RUN_DIR): run make run first"; exit 2; fi; \
	echo "TensorBoard of $$latest"; $(BIN)/tensorboard --logdir $$latest

clean:
	rm -rf $(VENV) runs .pytest_cache
