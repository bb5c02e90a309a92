#!/usr/bin/env bash
# Installs everything into ./.venv and runs the whole test suite (slow tests
# included). Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh || { echo "install failed"; exit 1; }
. .venv/bin/activate
export JAX_PLATFORMS=cpu TF_CPP_MIN_LOG_LEVEL=2
# Huge pages for XLA:CPU's buffers, as the entry points set for themselves
# (ki2hoi_jax/host_memory.py); a glibc.malloc.hugetlb set already is kept.
case "${GLIBC_TUNABLES:-}" in
  *glibc.malloc.hugetlb=*) ;;
  *) export GLIBC_TUNABLES="${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}glibc.malloc.hugetlb=1" ;;
esac
python -m pytest --timeout=1200 --durations=25 "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: treating as a failure" >&2
  exit 1
fi
exit "$rc"
