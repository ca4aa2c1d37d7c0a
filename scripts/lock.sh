#!/usr/bin/env bash
# Rewrites constraints.txt, the tested set: every package the course installs (pyproject.toml's
# dependencies with the course and dev extras, and uv, the installer), pinned for Python 3.11-3.12
# on every platform (uv's universal resolution; markers where versions differ). `make env` and the
# Colab cell install with it as pip/uv constraints.
#
# Versions already in constraints.txt are kept where they still fit. To move one, change its line
# (or delete it to take the newest), run this script, run `make test` in a fresh clone, and update
# README "Tested with" (tests/test_package.py checks that the two agree).
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-.venv/bin/uv}
echo uv | "$UV" pip compile pyproject.toml - --extra course --extra dev --universal \
  --python-version 3.11 --no-annotate --custom-compile-command "bash scripts/lock.sh" \
  --output-file constraints.txt --quiet
