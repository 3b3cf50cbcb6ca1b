#!/usr/bin/env bash
# Set up .venv for this project on a CPU machine: torch pinned first, then the app, then the embedded model.
#   bash scripts/setup.sh          # app and core
#   bash scripts/setup.sh --dev    # plus test tools
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# Some machines list local package indexes that are not there; pip warns once per package. Keep other output.
exec 2> >(grep -v "^WARNING: Location 'file://" >&2)
CONSTRAINTS=requirements/constraints-cpu.txt
"${PIP[@]}" -c "$CONSTRAINTS" torch
"${PIP[@]}" -c "$CONSTRAINTS" -r requirements.txt -r requirements/train.txt -r requirements/annotate.txt -r requirements/baseline.txt
"${PIP[@]}" --no-deps -r requirements/embedded.txt
"${PIP[@]}" --no-deps -e .  # the guardreasoner library (the stages run from this folder: python -m eval ...)
if [ "${1:-}" = "--dev" ]; then
  "${PIP[@]}" -c "$CONSTRAINTS" -r requirements/dev.txt
fi
echo "setup done: $(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
