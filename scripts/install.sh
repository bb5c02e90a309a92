#!/usr/bin/env bash
# Creates ./.venv (if missing) and installs the pinned dependencies.
#   bash scripts/install.sh        # runtime + test dependencies
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -r requirements-dev.txt
# Reference CLIP tokenizer for the tokenizer parity test. --no-deps: it must
# not pull in an unpinned torch/torchvision.
python -m pip install --quiet --no-deps clip-anytorch==2.6.0
