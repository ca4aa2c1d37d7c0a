# cotlib — the course's commands. `make demo` and `make test` create the environment themselves.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cotlib-installed
# torch + torchvision (Qwen-VL processors in transformers 5 need torchvision). With an NVIDIA GPU
# (nvidia-smi found) pip takes PyPI's default CUDA build. Without one, the CPU build from
# TORCH_CPU_INDEX (a few hundred MB instead of several GB); where that index cannot be reached
# (an offline mirror of PyPI), PyPI's build, which runs on a CPU too. TORCH_INDEX_URL forces an index.
TORCH_PKGS ?= torch==2.14.1 torchvision==0.29.1
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_INDEX_URL ?=
# pytest workers for `make test`: each file or notebook runs whole on one (see conftest.py)
TEST_WORKERS ?= 2
OFFLINE := OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 MPLBACKEND=Agg

.PHONY: env demo test test-fast lab lint notebooks check-data doctor clean

env: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || { echo "need Python >= 3.10 as $(PY) (make PY=python3.11 ...)"; exit 1; }
	@$(PY) -c 'import sys; sys.exit(0 if (3,10) <= sys.version_info[:2] <= (3,12) else 1)' || \
	  { echo "cotlib needs Python 3.10-3.12; found $$($(PY) --version). Try: make PY=python3.11 ..."; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@if [ -n "$(TORCH_INDEX_URL)" ]; then \
	  $(BIN)/python -m pip install --quiet --index-url $(TORCH_INDEX_URL) $(TORCH_PKGS); \
	elif command -v nvidia-smi >/dev/null 2>&1; then \
	  $(BIN)/python -m pip install --quiet $(TORCH_PKGS); \
	else \
	  echo "no NVIDIA GPU: installing torch's CPU build from $(TORCH_CPU_INDEX)"; \
	  $(BIN)/python -m pip install --quiet --retries 0 --timeout 20 \
	    --index-url $(TORCH_CPU_INDEX) $(TORCH_PKGS) 2>/dev/null || \
	  { echo "$(TORCH_CPU_INDEX) not reachable: installing PyPI's torch (runs on the CPU too)"; \
	    $(BIN)/python -m pip install --quiet $(TORCH_PKGS); }; \
	fi
	@$(BIN)/python -c "import torch; print('torch', torch.__version__)"
	$(BIN)/python -m pip install --quiet -e ".[course,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(OFFLINE) $(BIN)/cotlib demo

test: $(STAMP)
	$(OFFLINE) COTLIB_FAST=1 $(BIN)/python -m pytest tests notebooks solutions \
	  -n $(TEST_WORKERS) --dist loadfile --durations=12 \
	  --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg

test-fast: $(STAMP)
	$(OFFLINE) COTLIB_FAST=1 $(BIN)/python -m pytest tests -x -q

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

lint: $(STAMP)
	$(BIN)/ruff check cotlib tests scripts benchmarks

notebooks: $(STAMP)
	$(BIN)/python scripts/make_student_notebooks.py

check-data: $(STAMP)
	$(BIN)/python scripts/make_data.py --check

doctor: $(STAMP)
	$(BIN)/cotlib doctor

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
