# make run: set up .venv and run the main job (configs/sst2.yaml). make test: set up .venv and run the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/sst2.yaml
ARGS ?=
PYTEST_ARGS ?=
# torch first, pinned, so pip never pulls a multi-GB CUDA build on a CPU machine; set TORCH=torch for another build
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install run test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python jobs/online_finetune.py $(CONFIG) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
