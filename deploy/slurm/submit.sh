#!/bin/bash
# Queues the shards as an array job and the merge to run once all of them succeeded.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p logs
array=$(sbatch --parsable deploy/slurm/predict-array.sbatch)
sbatch --dependency=afterok:"$array" deploy/slurm/merge.sbatch
