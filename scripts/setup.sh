#!/usr/bin/env bash
# One-command setup: a virtual environment with the pinned packages and course_utils.
#   bash scripts/setup.sh            # creates ./.venv
#   bash scripts/setup.sh DIR        # creates the environment in DIR
# Then: source .venv/bin/activate
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet -r requirements.txt
"$venv/bin/python" -m pip install --quiet --no-deps -e .
echo "environment ready: source $venv/bin/activate"
