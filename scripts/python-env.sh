#!/usr/bin/env bash
# The Python environment for stub generation, sdk/python's tests and its type
# check: a venv in .venv (gitignored; pip refuses system installs on many hosts),
# the exact versions of sdk/python/requirements-dev.txt, and the SDK itself
# installed editable with its test extra. Idempotent and quick when nothing
# changed: a stamp of the inputs skips pip entirely.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
requirements=sdk/python/requirements-dev.txt
stamp="$venv/.agentmesh-python-env"
want="$(cat "$requirements" sdk/python/pyproject.toml | sha256sum | cut -d' ' -f1)"

if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "python-env: $python is $("$python" --version 2>&1); sdk/python needs Python 3.11 or newer (set PYTHON=...)" >&2
  exit 1
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
# No build isolation: the pinned setuptools above builds it, so this step needs nothing new from the network.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-build-isolation --no-deps -e sdk/python
echo "$want" > "$stamp"
echo "python-env: $("$venv/bin/python" --version) ready in $venv"
