#!/usr/bin/env bash
# Installs everything into ./.venv and runs the synthetic demo end to end:
# generate data, train, evaluate (mAP table), predict (annotated PNGs).
#   bash scripts/demo.sh [WORKDIR] [--config.field=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
WORKDIR="${1:-workdirs/demo}"
shift || true
bash scripts/install.sh
. .venv/bin/activate
export TF_CPP_MIN_LOG_LEVEL=2
python -m ki2hoi_jax.main --config=configs/demo.py --workdir="$WORKDIR" "$@"
