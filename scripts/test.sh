#!/usr/bin/env bash
# The project's test command: set up (or refresh) .venv, then run pytest from the repo root.
#   bash scripts/test.sh                 # = pytest -q -ra
#   bash scripts/test.sh tests/unit/data      # one tier or folder: unit, server, app, browser, integration
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh

if [ "$#" -eq 0 ]; then
    set -- -q -ra
fi
exec "$ROOT/.venv/bin/python" -m pytest "$@"
