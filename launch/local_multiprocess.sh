#!/usr/bin/env bash
# Two (or N) processes on this host joined by jax.distributed over localhost, 4 CPU devices each: the
# multi-host code path without a pod. Same flags as the main command.
#
#   launch/local_multiprocess.sh 2 --config=configs/synthetic.py --workdir=/tmp/axm_mp
set -euo pipefail
NUM_PROCESSES=${1:?usage: $0 NUM_PROCESSES [main flags...]}
shift
PORT=${PORT:-$((20000 + RANDOM % 20000))}
export JAX_COORDINATOR_ADDRESS=127.0.0.1:$PORT JAX_NUM_PROCESSES=$NUM_PROCESSES JAX_PLATFORMS=cpu
export XLA_FLAGS="--xla_force_host_platform_device_count=${DEVICES_PER_PROCESS:-4}"
PYTHON=${PYTHON:-python3}
pids=()
for ((i = 0; i < NUM_PROCESSES; i++)); do
  JAX_PROCESS_ID=$i "$PYTHON" -m axm_jax.main "$@" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit "$status"
