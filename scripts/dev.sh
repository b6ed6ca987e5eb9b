#!/usr/bin/env bash
# One command to run xnovu locally: installs into .venv, then `xnovu dev` (embedded Postgres, Temporal + Web UI,
# Novu emulator, worker). Extra arguments go to `xnovu dev`, e.g. --demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap-venv.sh
exec .venv/bin/xnovu dev "$@"
