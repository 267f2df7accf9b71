#!/bin/bash
# A sweep of the paper's grid on a SLURM cluster: one shard of the grid per array task, one GPU each.
#
#   jobid=$(sbatch --parsable docs/sweep_slurm.sh)
#   sbatch --dependency=afterany:$jobid --wrap "python -m afl_core.sweep --out runs/sweep-picai --collect"
#
# The second job writes the tables over every finished run once all shards have ended.
# Submit the same array again to continue after a time limit, a preemption or a crash:
# finished runs are skipped and unfinished ones continue from their last completed epoch.
# Extra arguments go to afl_core.sweep (e.g. `sbatch docs/sweep_slurm.sh --epochs 100`);
# DATA and SWEEP may be set in the environment (`sbatch --export=ALL,DATA=...`).
# Each task logs to afl-sweep-<job>_<task>.out in the folder sbatch was called from (SLURM opens that
# file before the script runs and does not create folders: a path like logs/... must exist beforehand).
# Adapt the #SBATCH lines (partition, account, memory, time) to your cluster; docs/sweep.md explains.

#SBATCH --job-name=afl-sweep
#SBATCH --array=1-10
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=48G
#SBATCH --time=24:00:00
#SBATCH --output=afl-sweep-%A_%a.out

set -euo pipefail
# Activate the project's environment here if the job does not inherit it, e.g.
# source .venv/bin/activate   or   conda activate afl-tutorial

DATA=${DATA:-data/picai}
SWEEP=${SWEEP:-runs/sweep-picai}
# Shard i of n, 1-based, whatever range --array was given (1-10, 0-9, ...).
SHARD="$((SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN + 1))/${SLURM_ARRAY_TASK_COUNT}"

echo "shard ${SHARD} on $(hostname), GPU ${CUDA_VISIBLE_DEVICES:-none}"
python -m afl_core.sweep --data "$DATA" --out "$SWEEP" --shard "$SHARD" --no-progress \
    --losses comparison --seeds 0 1 2 --folds 5 \
    --encoder resnet50 --epochs 50 --num-workers "$((SLURM_CPUS_PER_TASK - 1))" \
    "$@"
