#!/usr/bin/env bash
# Single-host GPU launcher: a venv with the pinned requirements plus the CUDA build of the same JAX version,
# then the main command on every local GPU (pmap). Rerun the same command to resume.
#
#   launch/gpu.sh configs/cuhk_pedes.py /runs/cuhk1 --config.data.manual_dir=/data/CUHK-PEDES
set -euo pipefail
CONFIG=${1:?usage: $0 CONFIG WORKDIR [flags...]}
WORKDIR=${2:?usage: $0 CONFIG WORKDIR [flags...]}
shift 2
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-gpu}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r requirements.txt
  "$VENV/bin/pip" install -q "jax[cuda12]==0.10.2"
fi
# tf.data must not reserve GPU memory; XLA may use the rest.
export TF_FORCE_GPU_ALLOW_GROWTH=true XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
exec "$VENV/bin/python" -m axm_jax.main --config="$CONFIG" --workdir="$WORKDIR" "$@"
