#!/usr/bin/env bash
# The benchmark suite of benchmarks/gpu_suite.py in one run: no TensorFlow, no network, nothing to install.
#
#   bash benchmarks/gpu_suite.sh [--out=gpu_suite.json]    # GPU machine: about 7 minutes, at most 8
#   bash benchmarks/gpu_suite.sh --part=cpu                 # the CPU half: start-up breakdown, CPU inference
#
# Needs python3 with jax, flax, optax and numpy (torch for the torchreid rows). ml_collections is imported from
# the wheel carried in benchmarks/third_party/ when the interpreter lacks it. PYTHON selects the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import ml_collections' 2>/dev/null; then
  export PYTHONPATH="$PWD/benchmarks/third_party/ml_collections-1.1.0-py3-none-any.whl${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3
# The start-up breakdown runs in child processes beside the suite's own: each JAX process takes 45% of the GPU.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.45}
case " $* " in *" --part=cpu "*) limit=0 ;; *) limit=470 ;; esac  # the CPU half takes minutes more than 8
exec timeout --signal=INT --kill-after=10 "$limit" "$PYTHON" -m benchmarks.gpu_suite "$@"
