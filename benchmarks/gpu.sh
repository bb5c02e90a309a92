#!/usr/bin/env bash
# One command on one GPU (<= 8 minutes on an H200): images/s of the paper-config
# train step at global batch 8 and 16 in float32 and bfloat16 (model.dtype and
# model.frozen_dtype), inference images/s, peak device memory and compile
# times, as a table (benchmarks/gpu.py; random weights and inputs at 800x1088).
#
# On a bare machine with the repository and Python 3.11:
#
#   python -m venv .venv && . .venv/bin/activate
#   pip install -r requirements.txt          # CPU pins (jax==0.10.2, jaxlib, TF-CPU, ...)
#   pip install --no-deps -e .               # the ki2hoi_jax package itself
#   pip install "jax[cuda12]==0.10.2"        # the CUDA plugin of the pinned jax
#                                            # (jax[cuda13] on a CUDA 13 driver)
#   bash benchmarks/gpu.sh                   # extra flags go to benchmarks/gpu.py
#
# requirements.txt stays CPU-only; the GPU wheels are the one extra install.
# The script stops with an error when JAX sees no GPU (ALLOW_CPU=1 runs anyway;
# on a CPU: ALLOW_CPU=1 bash benchmarks/gpu.sh --config demo --steps 2).
# Each dtype runs in its own process (its own peak memory); rows are printed as
# they finish, so a run cut short by the time limit still reports.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
"$PY" - <<'PYEOF'
import os, sys
import jax
print("jax", jax.__version__, "devices:", jax.devices(), flush=True)
if jax.default_backend() != "gpu" and os.environ.get("ALLOW_CPU") != "1":
  sys.exit("no GPU visible to JAX: pip install 'jax[cuda12]==0.10.2' "
           "(or set ALLOW_CPU=1)")
PYEOF
exec timeout "${TIME_LIMIT_S:-470}" "$PY" benchmarks/gpu.py --config paper \
    --batches 8,16 --dtypes float32,bfloat16 "$@"
