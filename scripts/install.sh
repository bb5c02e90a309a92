#!/usr/bin/env bash
# Creates ./.venv (if missing), installs the pinned dependencies and the
# ki2hoi_jax package itself (editable: its console scripts, `import ki2hoi_jax`
# from anywhere, benchmarks/*.py).
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
# The package, editable; --no-deps: the pins above are its dependencies.
python -m pip install --quiet --no-deps -e .
