#!/usr/bin/env bash
# Sets up .venv and runs ovsdp's demo (see README.md).
set -euo pipefail
cd "$(dirname "$0")"
py=$(tools/venv.sh)
exec "$py" -m ovsdp demo "$@"
