# Example site file: BSC CTE-POWER9 (2 x POWER9 and 4 x V100 16 GB per node, 160 hardware threads,
# GPFS). Use it with TLBENCH_SITE=slurm/sites/cte-power9.sh slurm/submit.sh slurm/tlbench_1node.sbatch ...
# POWER9 is ppc64le: there are no PyPI torch wheels. tlbench needs Python >= 3.10 and torch >= 2.1,
# newer than the site's python/3.7.4_ML module, so build the environment from Open-CE (conda) once
# on the login node and point TLBENCH_PYTHON at it. Replace <project> and the qos with yours.

# The checkout (sourced by hand on a login node, TLBENCH_HOME may not be set yet).
TLBENCH_HOME="${TLBENCH_HOME:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"

TLBENCH_PARTITION=""                  # CTE-POWER9 selects by qos
TLBENCH_QOS="bsc_ls"                  # debug (2 h), bsc_ls (48 h), training
TLBENCH_ACCOUNT=""                    # e.g. <project>
TLBENCH_TIME="48:00:00"
TLBENCH_SBATCH_ARGS="--cpus-per-task=40"   # 160 threads / 4 GPUs
if [ -n "$TLBENCH_PARTITION" ]; then export SBATCH_PARTITION="$TLBENCH_PARTITION"; fi
if [ -n "$TLBENCH_QOS" ]; then export SBATCH_QOS="$TLBENCH_QOS"; fi
if [ -n "$TLBENCH_ACCOUNT" ]; then export SBATCH_ACCOUNT="$TLBENCH_ACCOUNT"; fi
if [ -n "$TLBENCH_TIME" ]; then export SBATCH_TIMELIMIT="$TLBENCH_TIME"; fi

site_setup() {  # end each line with || return 1: the template stops when a module fails to load
  module purge || return 1
  module load gcc/8.3.0 cuda/10.2 cudnn/7.6.4 nccl/2.4.8 || return 1
  # An Open-CE conda environment with torch, timm, lightning and tlbench installed:
  TLBENCH_PYTHON="/gpfs/projects/<project>/envs/tlbench/bin/python"
}

export TLBENCH_OUTPUT_DIR="/gpfs/scratch/<project>/$USER/tlbench"
export TLBENCH_CACHE_DIR="/gpfs/scratch/<project>/$USER/tlbench-cache/features"
# Weights fetched on the login node (tlbench model.download=true there), read offline by the jobs:
export TORCH_HOME="/gpfs/projects/<project>/cache/torch" HF_HOME="/gpfs/projects/<project>/cache/hf"
export WANDB_DIR="/gpfs/scratch/<project>/$USER/wandb"
