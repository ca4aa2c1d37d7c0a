#!/usr/bin/env bash
# Creates the course's virtual environment. `make env` runs it (and so do `make demo` and
# `make test` when .venv is missing or pyproject.toml, constraints.txt or this script changed); the
# Makefile passes its variables.
#
# Versions: every install step uses CONSTRAINTS (constraints.txt, the tested set that README
# "Tested with" lists; scripts/lock.sh rewrites it), so a fresh environment gets the same
# versions as the one the course was tested with, not the newest releases.
#
# Installer: uv (pip-compatible, installs in parallel: on the 2-core development machine 1.5 min
# instead of pip's 3.5 min for the same versions), itself installed into the venv with pip; pip
# when uv cannot be installed there or INSTALLER=pip.
#
# torch: TORCH_PKGS (torch + torchvision; Qwen-VL processors in transformers 5 need torchvision).
# With an NVIDIA GPU (nvidia-smi found), PyPI's CUDA build. Without one, the CPU build from
# TORCH_CPU_INDEX (a few hundred MB instead of several GB); where that index cannot be reached (a
# PyPI mirror only), PyPI's build, which runs on a CPU too. TORCH_INDEX_URL forces an index.
set -euo pipefail

PY=${PY:-python3}
VENV=${VENV:-.venv}
INSTALLER=${INSTALLER:-uv}
CONSTRAINTS=${CONSTRAINTS:-constraints.txt}
TORCH_PKGS=${TORCH_PKGS:-torch==2.14.1 torchvision==0.29.1}
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-}
BIN=$VENV/bin

command -v "$PY" >/dev/null || { echo "need Python >= 3.11 as $PY (make PY=python3.11 ...)"; exit 1; }
"$PY" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] <= (3, 12) else 1)' || {
  echo "cotlib needs Python 3.11-3.12; found $("$PY" --version). Try: make PY=python3.11 ..."
  exit 1
}
test -f "$CONSTRAINTS" || { echo "$CONSTRAINTS is missing: git checkout $CONSTRAINTS"; exit 1; }
test -x "$BIN/python" || "$PY" -m venv "$VENV"

pip_install() { "$BIN/python" -m pip install --quiet "$@"; }
if [ "$INSTALLER" = uv ] && pip_install -c "$CONSTRAINTS" uv; then
  echo "installing with uv ($("$BIN/uv" --version))"
  # --compile-bytecode: write .pyc files now, as pip does, so that imports don't compile each
  # time. uv does not read pip's configuration: where only a mirror set in pip.conf is reachable,
  # each step it fails is done again by pip.
  uv_install() { "$BIN/uv" pip install --quiet --python "$BIN/python" --compile-bytecode "$@"; }
  install() { uv_install "$@" || { echo "uv failed: trying pip"; pip_install "$@"; }; }
  try_index() { UV_HTTP_RETRIES=0 UV_HTTP_TIMEOUT=20 uv_install --index-url "$@"; }
else
  [ "$INSTALLER" = uv ] && echo "uv could not be installed: installing with pip"
  pip_install --upgrade pip
  install() { pip_install "$@"; }
  try_index() { pip_install --retries 0 --timeout 20 --index-url "$@"; }
fi

# shellcheck disable=SC2086  # TORCH_PKGS is a list of requirements
if [ -n "$TORCH_INDEX_URL" ]; then
  install --index-url "$TORCH_INDEX_URL" $TORCH_PKGS
elif command -v nvidia-smi >/dev/null 2>&1; then
  install -c "$CONSTRAINTS" $TORCH_PKGS
else
  echo "no NVIDIA GPU: installing torch's CPU build from $TORCH_CPU_INDEX"
  # (no constraints with another index: it has its own versions of torch's dependencies; the last
  # step below moves them to the tested ones)
  try_index "$TORCH_CPU_INDEX" $TORCH_PKGS 2>/dev/null || {
    echo "$TORCH_CPU_INDEX not reachable: installing PyPI's torch (runs on the CPU too)"
    install -c "$CONSTRAINTS" $TORCH_PKGS
  }
fi
"$BIN/python" -c "import torch; print('torch', torch.__version__)"
install -c "$CONSTRAINTS" -e ".[course,dev]"
