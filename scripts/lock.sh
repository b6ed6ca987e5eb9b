#!/usr/bin/env bash
# Re-locks every dependency from pyproject.toml (README "Installation and dependencies"), with hashes, for every
# platform and every Python >= 3.11:
#   requirements/dev.txt     the `dev` extra + the build backend: CI, scripts/dev.sh and scripts/test.sh install it
#   requirements/docker.txt  the `otel` extra + the build backend: the Docker image installs it (same versions)
# Run it after changing a dependency in pyproject.toml: a version already locked is kept while it still fits.
#   bash scripts/lock.sh --upgrade                    everything to the newest releases the bounds allow
#   bash scripts/lock.sh --upgrade-package httpx      one package (and what it needs)
# uv resolves from PyPI itself (never pip's index settings), so no mirror URL ends up in the files.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/uv ]; then
  # uv is in the `dev` extra; a venv made before that, or a lock too stale to install, gets the locked uv alone.
  [ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
  .venv/bin/python -m pip install --quiet "$(grep -m1 -oE '^uv==[^ ;]+' requirements/dev.txt 2>/dev/null || echo uv)"
fi
# The build backend ([build-system] requires) is locked too: the image and the venv build xnovu without fetching it.
build_requires=$(.venv/bin/python - <<'EOF'
import tomllib

with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["build-system"]["requires"]))
EOF
)
compile() {
  printf '%s\n' "$build_requires" | .venv/bin/uv pip compile pyproject.toml - --universal --python-version 3.11 \
    --generate-hashes --custom-compile-command "bash scripts/lock.sh" --quiet "$@"
}
mkdir -p requirements
compile --extra dev --output-file requirements/dev.txt "$@"
# Constrained by the dev lock, so the image runs the versions CI tested.
compile --extra otel --constraint requirements/dev.txt --output-file requirements/docker.txt "$@"
echo "locked: requirements/dev.txt ($(grep -c '^[a-z]' requirements/dev.txt) packages)," \
  "requirements/docker.txt ($(grep -c '^[a-z]' requirements/docker.txt) packages)"
