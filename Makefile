# Two entry points for a fresh machine: `make train` (the main job) and `make test`.
# Both create .venv and install the project into it first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch that this machine keeps on disk; users on GPUs install their own torch
# (pyproject only asks for torch>=2.2), so this pin applies to our machines alone.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install train test lint bench mutants clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev,ray]"
	touch $@

install: $(BIN)/.installed

# The main job: EWC and plain DQN side by side on the same schedule of the five MinAtar games
# (one core each; about 15 minutes on 2 idle CPU cores), then their comparison: both curves in
# one plot, forgetting per game and one sentence of what it shows. A second `make train` resumes
# what is unfinished and compares again.
RUN ?= runs/minatar-quick
train: install
	$(BIN)/python train_agent.py sweep --preset minatar-quick --variants no-ewc,ewc-true \
		--seeds 0 --out $(RUN)

test: install
	$(BIN)/python -m pytest tests

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy ewc_dqn envs

bench: install
	$(BIN)/python bench/bench_training.py

# Mutation testing of the core modules (tools/mutants.py): every mutant against its module's fast
# test files; the score per module and each surviving mutant's place. Then the named mutants of
# the training loop (tools/named_mutants.py), each against the tests that guard its rule.
# Slow: see BENCHMARKS.md.
mutants: install
	$(BIN)/python tools/mutants.py
	$(BIN)/python tools/named_mutants.py

clean:
	rm -rf $(VENV) runs .pytest_cache
