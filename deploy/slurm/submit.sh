#!/bin/bash
# Queues the shards as an array job and the merge to run once all of them succeeded.
#   [EOINFER_SHARDS=8] [EOINFER_MODEL=... EOINFER_SCENES=... EOINFER_AOI=... EOINFER_OUT=... EOINFER_NAME=...] \
#   [EOINFER_MERGE_OPTS="--cpus-per-task=1 --mem=1G"] \
#     deploy/slurm/submit.sh [sbatch options for the shards] [-- eoinfer predict options]
# A failed task makes the merge impossible (it is cancelled: --kill-on-invalid-dep): fix the
# cause, `scontrol requeue <array>_<i>` (it resumes from its journal), then queue the merge
# again after that task: `sbatch --dependency=afterok:<array>_<i> deploy/slurm/merge.sbatch`.
# Runs in the current folder (relative paths, logs/ and outputs/ are relative to it).
# Prints the array's and the merge's job ids.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
shards=${EOINFER_SHARDS:-8}
sbatch_opts=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do sbatch_opts+=("$1"); shift; done
[ "${1:-}" = -- ] && shift
mkdir -p logs
array=$(sbatch --parsable --array="0-$((shards - 1))" "${sbatch_opts[@]}" "$here/predict-array.sbatch" "$@")
# shellcheck disable=SC2086 # EOINFER_MERGE_OPTS is a list of sbatch options
merge=$(sbatch --parsable --dependency=afterok:"${array%%;*}" --kill-on-invalid-dep=yes ${EOINFER_MERGE_OPTS:-} "$here/merge.sbatch")
echo "${array%%;*} $merge"
