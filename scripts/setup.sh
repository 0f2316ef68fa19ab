#!/usr/bin/env bash
# One-command setup: a virtual environment with the pinned packages and course_utils.
#   bash scripts/setup.sh                          # students: ./.venv with requirements-student.txt
#   bash scripts/setup.sh DIR                      # the same in DIR
#   bash scripts/setup.sh DIR requirements.txt     # instructors and CI: also the grading and test tooling
# Then: source .venv/bin/activate
# Both files are generated from pyproject.toml (scripts/pin_requirements.py).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venv}"
requirements="${2:-requirements-student.txt}"
python="${PYTHON:-python3}"
if [ ! -f "$requirements" ]; then
  echo "setup.sh: no file $requirements (use requirements-student.txt or requirements.txt)" >&2
  exit 2
fi
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet -r "$requirements"
"$venv/bin/python" -m pip install --quiet --no-deps -e .
# The Validate button's verdict (course_utils/validate_button.py): an editable install leaves out data files.
"$venv/bin/python" -m course_utils install-verdict >/dev/null
echo "environment ready ($requirements): source $venv/bin/activate"
