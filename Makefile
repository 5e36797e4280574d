# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(abspath $(VENV))/bin
# Offline by design: no model, dataset or metric is ever fetched from a hub.
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PATH := $(BIN):$(PATH)
# Use the CPU torch wheel lying on this machine kind when there is one (an unpinned torch pulls CUDA).
TORCH_FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)

.PHONY: demo test venv clean dry-run

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_FIND_LINKS) torch==2.13.0
	$(BIN)/python -m pip install --quiet $(TORCH_FIND_LINKS) -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

demo: venv  ## the whole loop on the embedded offline default
	$(BIN)/snakemake --profile profiles/local
	@$(BIN)/python -m lionflow.summary results/demo/summary.json
	@echo "Full summary: results/demo/summary.json"

dry-run: venv
	$(BIN)/snakemake --profile profiles/local -n

test: venv
	$(BIN)/python -m pytest

clean:
	rm -rf results logs .snakemake
