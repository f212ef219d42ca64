#!/usr/bin/env bash
# Sets up .venv and runs every check: ruff, mypy, then the test suite.
# Extra arguments go to pytest (for example: ./run-tests.sh -k codec).
set -euo pipefail
cd "$(dirname "$0")"
py=$(tools/venv.sh)
echo "== ruff"; "$py" -m ruff check ovsdp userspace tests bench
echo "== mypy"; "$py" -m mypy
echo "== pytest"; "$py" -m pytest "$@"
