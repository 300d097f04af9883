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

# The main job: continual learning on the five MinAtar games (about 15 minutes on 2 idle CPU
# cores), ending with the score table and the plot of total normalised score vs frames; a second
# `make train` resumes an unfinished run.
RUN ?= runs/minatar-quick
train: install
	@if [ -f $(RUN)/final.json ]; then echo "$(RUN) is finished; RUN=other/folder make train for a new run"; \
	elif [ -f $(RUN)/config.json ]; then $(BIN)/python train_agent.py --resume $(RUN); \
	else $(BIN)/python train_agent.py --preset minatar-quick --run-dir $(RUN); fi

test: install
	$(BIN)/python -m pytest tests

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

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
