#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment in .venv and prints its python.
# Used by run-demo.sh and run-tests.sh; safe to run again: it reinstalls only when
# pyproject.toml changed since the last install.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
venv="$top/.venv"
py=""
for cand in python3.11 python3.12 python3.13 python3; do
    if command -v "$cand" >/dev/null 2>&1 &&
        "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        py=$(command -v "$cand"); break
    fi
done
if [ -z "$py" ]; then
    echo "ovsdp needs Python 3.11 or newer (python3.11 or python3 on PATH)" >&2
    exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv" >&2
fi
stamp="$venv/.ovsdp-installed"
want=$(sha256sum "$top/pyproject.toml" | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log="$venv/install.log"
    if ! { "$venv/bin/python" -m pip install --upgrade pip &&
        "$venv/bin/python" -m pip install -e "$top[test]"; } >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        echo "installing ovsdp's dependencies failed; the whole log is $log" >&2
        exit 1
    fi
    echo "$want" >"$stamp"
fi
echo "$venv/bin/python"
