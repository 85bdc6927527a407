# mlx-bluey: every target creates (or reuses) the virtual environment first, so each one works
# alone on a fresh machine.
#
#   make train [MODEL=gemma-3-1b-it] [DATA=data/bluey] [CONFIG=configs/bluey.yaml]   SFT, then the preference stage
#   make sft [MODEL=...]              the SFT stage alone, into OUTPUT-sft
#   make chat  [MODEL=...]            chat with the adapter `make train` wrote (ADAPTER=... for another)
#   make evaluate [MODEL=...]         personality report of that adapter in reports/eval-...
#   make prefer [MODEL=...]           the preference stage (after sft): pair files, then ORPO into OUTPUT
#   make export [ADAPTER=adapters/...]  fuse the adapter, export ONNX int8/int8-vocab/q8/q4/fp16 with a parity report
#   make serve                        the browser chat page with that export, on http://127.0.0.1:8000
#   make api [ADAPTER=adapters/...]   an OpenAI-compatible API for that adapter, on http://127.0.0.1:8000/v1
#   make gguf [ADAPTER=adapters/...]  fuse the adapter, export GGUF f16/q8_0/Q4_K_M + Ollama Modelfiles, parity
#   make test                         ruff, then the test suite (under 15 minutes on 2 CPU cores)
#
# The export stage has its own environment (.venv-export: torch CPU + optimum-onnx), the page its own
# JavaScript (mlx_bluey/web/node_modules, from npm), and the browser test Debian's chromium: each is
# built the first time a target needs it.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/bluey.yaml
# The preference stage's config (ORPO; configs/bluey-dpo.yaml is the DPO + NLL stage measured beside it).
PREFER_CONFIG ?= configs/bluey-orpo.yaml
DATA ?= data/bluey
MODEL ?=
# The adapter directory is named after the data and the model, so different runs never collide.
RUN_NAME = $(notdir $(DATA))-$(if $(MODEL),$(notdir $(MODEL)),gemma-3-270m-embedded)
OUTPUT ?= adapters/$(RUN_NAME)
# make train's first stage (SFT) writes here; the preference stage reads it and writes OUTPUT.
SFT_OUTPUT ?= $(OUTPUT)-sft
# The preference stage's pair files (train.jsonl, valid.jsonl) and, where `data pairs` builds them, the training
# conversations it samples the SFT adapter on (README "Preference stage"; the recipes below).
PAIRS ?= $(DATA)-pairs-dpo
PAIRS_LIMIT ?= 200
# Resolved when a recipe runs (after setup may have installed it), hence `=` and not `:=`.
OPENBLAS = $(firstword $(wildcard /usr/lib/x86_64-linux-gnu/libopenblas.so.0 /usr/lib/aarch64-linux-gnu/libopenblas.so.0))
# OPENBLAS_THREAD_TIMEOUT: see mlx_bluey/runtime.py (two BLAS thread pools in one process).
RUN = $(if $(OPENBLAS),LD_PRELOAD=$(OPENBLAS) OPENBLAS_THREAD_TIMEOUT=4 )$(BIN)
STAMP := $(VENV)/.installed
EXPORT_VENV ?= .venv-export
EXPORT_STAMP := $(EXPORT_VENV)/.installed
WEB_STAMP := mlx_bluey/web/node_modules/.installed
# The adapter chat, evaluate, fuse, export and api use: make train's (the preference stage's), else its SFT stage's.
ADAPTER ?= $(if $(wildcard $(OUTPUT)/adapters.safetensors),$(OUTPUT),$(SFT_OUTPUT))
FUSED ?= fused/$(notdir $(ADAPTER))
EXPORT ?= exports/$(notdir $(ADAPTER))
GGUF ?= exports/$(notdir $(ADAPTER))-gguf
GGUF_STAMP := $(VENV)/.gguf-installed
# llama-cpp-python builds llama.cpp from source (minutes). Without the llava library, and on x86 for AVX2 rather
# than -march=native: the native build's AMX int8 kernels crashed (segfault in decode) on Q8_0 and Q4_K files
# on this kind of machine, the f16 file ran.
LLAMA_CMAKE_ARGS = -DLLAVA_BUILD=OFF$(if $(filter x86_64,$(shell uname -m)), -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON)

.PHONY: setup train sft chat evaluate prefer test info clean-venv export-env gguf-env web browser fuse export gguf serve api

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	sh scripts/setup_blas.sh
	touch $(STAMP)

# torch first and alone: with 2.13.0 installed (its CPU wheel is on local disk here), nothing pulls CUDA.
$(EXPORT_STAMP): mlx_bluey/export_requirements.txt
	$(PYTHON) -m venv $(EXPORT_VENV)
	$(EXPORT_VENV)/bin/pip install --quiet --upgrade pip
	$(EXPORT_VENV)/bin/pip install --quiet torch==2.13.0
	$(EXPORT_VENV)/bin/pip install --quiet -r mlx_bluey/export_requirements.txt
	touch $(EXPORT_STAMP)

export-env: $(EXPORT_STAMP)

# llama.cpp for the GGUF export's Q4_K_M quantizer and its parity checks (the `gguf` extra of pyproject.toml).
$(GGUF_STAMP): $(STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/pip install --quiet -e ".[gguf]"
	touch $(GGUF_STAMP)

gguf-env: $(GGUF_STAMP)

# ONNXRUNTIME_NODE_INSTALL=skip: onnxruntime-node (a dependency the page never uses) would download binaries.
$(WEB_STAMP): mlx_bluey/web/package.json mlx_bluey/web/package-lock.json
	cd mlx_bluey/web && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund --loglevel=error
	touch $(WEB_STAMP)

web: $(WEB_STAMP)

browser:
	sh scripts/setup_browser.sh

# make train: SFT (CONFIG) into SFT_OUTPUT, then the preference stage (`make prefer`, below) from it into OUTPUT,
# where PAIRS holds pair files (data/bluey's are committed); another DATA stops after SFT until `make prefer` has
# built its pairs (generic ones, which did not help on Bluey's data: README "Preference stage").
# --resume makes each safe to repeat: an interrupted run continues, a finished one is kept.
train: $(if $(wildcard $(PAIRS)/train.jsonl),prefer,sft)

sft: $(STAMP)
	$(RUN)/mlx_bluey train --config $(CONFIG) --data $(DATA) --output $(SFT_OUTPUT) $(if $(MODEL),--model $(MODEL)) --resume

chat: $(STAMP)
	$(RUN)/mlx_bluey generate --adapter $(ADAPTER)

# The held-out prompts (data/eval/prompts.jsonl and the card's fact questions) x 3 samples through the
# adapter, plus the held-out loss with and without it.
evaluate: $(STAMP)
	$(RUN)/mlx_bluey evaluate --adapter $(ADAPTER) --output reports/eval-$(notdir $(ADAPTER))

# The preference stage (README "Preference stage"): ORPO (PREFER_CONFIG) from the SFT adapter into
# OUTPUT, on the pair files in PAIRS. data/bluey's are committed (data/bluey-pairs-dpo: on-policy fact and pressure
# pairs, its README says how they were made). Another DATA's are built once (file targets) by `data pairs`:
# templates and fact swaps for every conversation, the SFT adapter's failing replies to the first PAIRS_LIMIT
# training and 48 validation conversations (the slow part).
$(PAIRS)/%.jsonl: | sft
	$(RUN)/mlx_bluey data pairs $(DATA)/$*.jsonl --output $@ --adapter $(SFT_OUTPUT) --no-base --limit $(if $(filter train,$*),$(PAIRS_LIMIT),48)

prefer: sft $(PAIRS)/train.jsonl $(PAIRS)/valid.jsonl
	$(RUN)/mlx_bluey train --config $(PREFER_CONFIG) --data $(PAIRS) --from-adapter $(SFT_OUTPUT) --output $(OUTPUT) $(if $(MODEL),--model $(MODEL)) --resume

info: $(STAMP)
	$(RUN)/mlx_bluey info

fuse: $(STAMP)
	$(RUN)/mlx_bluey fuse --adapter $(ADAPTER) --output $(FUSED)

export: fuse $(EXPORT_STAMP)
	$(RUN)/mlx_bluey export $(FUSED) --output $(EXPORT) --parity-data $(DATA)/test.jsonl --parity-texts 16 --greedy-prompts 8 --greedy-tokens 48 \
	    --vocabulary-data $(DATA)/train.jsonl

gguf: fuse $(GGUF_STAMP)
	$(RUN)/mlx_bluey export $(FUSED) --format gguf --output $(GGUF) --parity-data $(DATA)/test.jsonl --parity-texts 16 --greedy-prompts 8 --greedy-tokens 48

serve: $(STAMP) $(WEB_STAMP)
	$(RUN)/mlx_bluey serve $(EXPORT)

api: $(STAMP)
	$(RUN)/mlx_bluey serve --api --adapter $(ADAPTER)

# The tests whose numbers come out of OpenBLAS matmuls (training, decoding, fusing, scoring, preference, and the
# browser's and the API's greedy reply from a tiny adapter trained here, and llama.cpp's parity with it).
KERNEL_SENSITIVE = tests/test_train.py tests/test_generate.py tests/test_decode_head.py tests/test_fuse.py tests/test_evaluate.py \
    tests/test_preference.py tests/test_data_pairs.py tests/test_web.py tests/test_gguf_export.py tests/test_distributed.py \
    tests/test_serve_api.py tests/test_numpy_gelu.py tests/test_head_ids.py
# On x86 they run a second time on OpenBLAS's generic Prescott kernel (the one OpenBLAS falls back to on
# CPUs it does not know): a test that passes on one kernel's floating-point trajectory only fails here. Tests
# marked one_kernel (a vocabulary, llama.cpp's own ggml kernels, process control) run once.
KERNEL_RERUN = $(if $(and $(OPENBLAS),$(filter x86_64,$(shell uname -m))),PYTHONFAULTHANDLER=1 OPENBLAS_CORETYPE=Prescott $(RUN)/python -m pytest -q -m "not one_kernel" $(KERNEL_SENSITIVE),@echo "no second kernel to test on this machine")

# Two suites: the MLX side in .venv, the export worker's graph code in .venv-export (tests/export_env).
test: $(STAMP) $(EXPORT_STAMP) $(GGUF_STAMP) $(WEB_STAMP) browser
	$(RUN)/mlx_bluey info
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	PYTHONFAULTHANDLER=1 $(RUN)/python -m pytest -q $(PYTEST_ARGS)
	$(KERNEL_RERUN)
	$(EXPORT_VENV)/bin/python -m pytest -q tests/export_env

clean-venv:
	rm -rf $(VENV)
