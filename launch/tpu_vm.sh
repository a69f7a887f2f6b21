#!/usr/bin/env bash
# Cloud TPU VM / pod slice launcher. Every worker gets the same code, the pinned requirements with the TPU
# build of the same JAX version, and runs the same command; JAX joins the workers into one run.
#
#   export TPU_NAME=axm ZONE=us-central2-b ACCELERATOR_TYPE=v4-32 PROJECT=my-project
#   launch/tpu_vm.sh create            # add SPOT=1 for a preemptible slice
#   launch/tpu_vm.sh setup             # venv + requirements + jax[tpu] on every worker
#   launch/tpu_vm.sh copy              # this checkout -> ~/axm_jax on every worker
#   WORKDIR=gs://bucket/runs/cuhk1 CONFIG=configs/cuhk_pedes.py:tpu \
#     ARGS='--config.data.data_dir=gs://bucket/tfds --config.data.manual_dir=/data/CUHK-PEDES' \
#     launch/tpu_vm.sh run             # same command on --worker=all; rerun it to resume after preemption
#   launch/tpu_vm.sh delete
# The workdir and TFDS data_dir should be on GCS so that all workers see them; the dataset is prepared by
# process 0 on first use (its manual_dir must exist on worker 0).
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
JAX_VERSION=0.10.2
RUNTIME_VERSION=${RUNTIME_VERSION:-tpu-ubuntu2204-base}
gcloud_tpu() { gcloud compute tpus tpu-vm "$@" --zone="$ZONE" ${PROJECT:+--project="$PROJECT"}; }
on_all() { gcloud_tpu ssh "$TPU_NAME" --worker=all --command="$1"; }

case "${1:-}" in
  create)
    gcloud_tpu create "$TPU_NAME" --accelerator-type="${ACCELERATOR_TYPE:?set ACCELERATOR_TYPE}" \
      --version="$RUNTIME_VERSION" ${SPOT:+--spot} ;;
  setup)
    gcloud_tpu scp requirements.txt "$TPU_NAME":/tmp/axm_requirements.txt --worker=all
    on_all "python3 -m venv ~/axm_venv && ~/axm_venv/bin/pip install -q -r /tmp/axm_requirements.txt \
      && ~/axm_venv/bin/pip install -q 'jax[tpu]==${JAX_VERSION}'" ;;
  copy)
    tar czf /tmp/axm_jax.tgz --exclude=.git --exclude=.venv --exclude=workdirs .
    gcloud_tpu scp /tmp/axm_jax.tgz "$TPU_NAME":/tmp/axm_jax.tgz --worker=all
    on_all "mkdir -p ~/axm_jax && tar xzf /tmp/axm_jax.tgz -C ~/axm_jax" ;;
  run)
    on_all "cd ~/axm_jax && ~/axm_venv/bin/python -m axm_jax.main --config=${CONFIG:?set CONFIG} \
      --workdir=${WORKDIR:?set WORKDIR} ${ARGS:-} 2>&1 | tee -a ~/axm_run.log" ;;
  delete)
    gcloud_tpu delete "$TPU_NAME" --quiet ;;
  *)
    echo "usage: $0 create|setup|copy|run|delete" >&2; exit 2 ;;
esac
