#!/usr/bin/env bash
# Installs everything into ./.venv and runs the whole test suite (slow tests
# included). Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh || { echo "install failed"; exit 1; }
. .venv/bin/activate
export JAX_PLATFORMS=cpu TF_CPP_MIN_LOG_LEVEL=2
# Huge pages for XLA:CPU's buffers, by the rule the entry points apply to
# themselves (ki2hoi_jax/host_memory.py; a glibc.malloc.hugetlb set already is
# kept).
tunables="$(python -c 'import os; from ki2hoi_jax import host_memory as h
print(h.tunables_with_huge_pages(os.environ.get("GLIBC_TUNABLES")) or "")')"
if [ -n "$tunables" ]; then export GLIBC_TUNABLES="$tunables"; fi
python -m pytest --timeout=1200 --durations=25 "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: treating as a failure" >&2
  exit 1
fi
exit "$rc"
