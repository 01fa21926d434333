#!/usr/bin/env bash
# Multi-GPU, multi-node training on SLURM with Lightning's own DDP: one task per GPU, Lightning reads the SLURM
# environment (ranks, master address and port). Submit: sbatch pipelines/slurm_fit.sh [extra `brainage fit` args]
# Adapt the #SBATCH lines to your cluster; --ntasks-per-node MUST equal --gpus-per-node and trainer.devices, and
# --nodes MUST equal trainer.num_nodes.
#SBATCH --job-name=brainage-fit
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --mem=0
#SBATCH --time=24:00:00
#SBATCH --signal=SIGUSR1@120
#SBATCH --output=slurm-%j.out
set -euo pipefail
NODES=${SLURM_JOB_NUM_NODES:-2}
GPUS=${SLURM_NTASKS_PER_NODE:-4}
# One shared MLflow store for all ranks (only rank 0 logs); a server or a path on the shared filesystem.
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$PWD/mlflow.db}
# --signal=SIGUSR1 lets Lightning save a checkpoint and requeue the job before the time limit;
# a resubmitted job continues with --ckpt_path last.
srun brainage fit \
  --config configs/experiment/ixi.yaml --data configs/data/ixi_1p5mm.yaml \
  --config configs/model/vit_ermoe_ixi_1p5mm.yaml --config configs/trainer/gpu.yaml \
  --trainer.devices "$GPUS" --trainer.num_nodes "$NODES" --trainer.strategy ddp \
  --data.num_workers "${SLURM_CPUS_PER_TASK:-8}" \
  "$@"
