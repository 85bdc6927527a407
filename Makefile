# mlx-bluey: every target creates (or reuses) the virtual environment first, so each one works
# alone on a fresh machine.
#
#   make train [MODEL=gemma-3-1b-it] [DATA=data/bluey] [CONFIG=configs/bluey.yaml]
#   make chat  [MODEL=...]            chat with the adapter `make train` wrote
#   make test                         the test suite (under 15 minutes on 2 CPU cores)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/bluey.yaml
DATA ?= data/bluey
MODEL ?=
# The adapter directory is named after the data and the model, so different runs never collide.
RUN_NAME = $(notdir $(DATA))-$(if $(MODEL),$(notdir $(MODEL)),gemma-3-270m-embedded)
OUTPUT ?= adapters/$(RUN_NAME)
# Resolved when a recipe runs (after setup may have installed it), hence `=` and not `:=`.
OPENBLAS = $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/libopenblas.so.0 /usr/lib/aarch64-linux-gnu/libopenblas.so.0))
RUN = $(if $(OPENBLAS),LD_PRELOAD=$(OPENBLAS) )$(BIN)
STAMP := $(VENV)/.installed

.PHONY: setup train chat test info clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	sh scripts/setup_blas.sh
	touch $(STAMP)

# --resume makes `make train` safe to repeat: an interrupted run continues, a finished one is kept.
train: $(STAMP)
	$(RUN)/mlx_bluey train --config $(CONFIG) --data $(DATA) --output $(OUTPUT) $(if $(MODEL),--model $(MODEL)) --resume

chat: $(STAMP)
	$(RUN)/mlx_bluey generate --adapter $(OUTPUT)

info: $(STAMP)
	$(RUN)/mlx_bluey info

test: $(STAMP)
	$(RUN)/python -m pytest -q $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
