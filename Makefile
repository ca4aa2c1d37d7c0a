# cotlib — the course's commands. `make demo` and `make test` create the environment themselves.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cotlib-installed
# Environment creation: scripts/create_env.sh (uv, else pip; torch's CPU build where there is no
# NVIDIA GPU and its index can be reached). These variables are passed on to it.
INSTALLER ?= uv
# The tested versions of every package (scripts/lock.sh writes it; README "Tested with")
CONSTRAINTS ?= constraints.txt
TORCH_PKGS ?= torch==2.14.1 torchvision==0.29.1
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_INDEX_URL ?=
# pytest workers for `make test`: each file or notebook runs whole on one, the slowest first
# (tests/conftest.py)
TEST_WORKERS ?= 2
OFFLINE := OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 MPLBACKEND=Agg

.PHONY: env demo test test-fast lab lint notebooks check-data doctor clean

env: $(STAMP)

$(STAMP): pyproject.toml scripts/create_env.sh $(CONSTRAINTS)
	PY="$(PY)" VENV="$(VENV)" INSTALLER="$(INSTALLER)" CONSTRAINTS="$(CONSTRAINTS)" \
	  TORCH_PKGS="$(TORCH_PKGS)" \
	  TORCH_CPU_INDEX="$(TORCH_CPU_INDEX)" TORCH_INDEX_URL="$(TORCH_INDEX_URL)" \
	  bash scripts/create_env.sh
	touch $(STAMP)

demo: $(STAMP)
	$(OFFLINE) $(BIN)/cotlib demo

test: $(STAMP)
	$(OFFLINE) COTLIB_FAST=1 $(BIN)/python -m pytest tests notebooks solutions \
	  -n $(TEST_WORKERS) --dist loadfile --durations=12 \
	  --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg

test-fast: $(STAMP)
	$(OFFLINE) COTLIB_FAST=1 $(BIN)/python -m pytest tests -x -q

# Jupyter refuses to start as root without --allow-root; containers and cloud VMs run as root.
USER_ID ?= $(shell id -u)
LAB_FLAGS ?= $(if $(filter 0,$(USER_ID)),--allow-root)

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks $(LAB_FLAGS)

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
