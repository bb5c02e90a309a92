#!/usr/bin/env bash
# Installs everything into ./.venv and runs the whole test suite (slow tests
# included). Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh || { echo "install failed"; exit 1; }
. .venv/bin/activate
export JAX_PLATFORMS=cpu TF_CPP_MIN_LOG_LEVEL=2
python -m pytest --timeout=1200 --durations=25 "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: treating as a failure" >&2
  exit 1
fi
exit "$rc"
