# Example site file: BSC CTE-POWER9 (2 x POWER9 and 4 x V100 16 GB per node, 160 hardware threads,
# GPFS). Copy it (anywhere: it uses absolute paths only), replace <project> and the qos with yours,
# and `source` the copy on the login node: that exports TLBENCH_SITE=<the copy>, which
# slurm/submit.sh, plain sbatch and the submitit launcher then use (each job's log names it).
# POWER9 is ppc64le: there are no PyPI torch wheels. tlbench needs Python >= 3.10 and torch >= 2.1,
# newer than the site's python/3.7.4_ML module, so build the environment from Open-CE (conda) once
# on the login node and point TLBENCH_PYTHON at it.

TLBENCH_SITE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
export TLBENCH_SITE

TLBENCH_PARTITION=""                  # CTE-POWER9 selects by qos
TLBENCH_QOS="bsc_ls"                  # debug (2 h), bsc_ls (48 h), training
TLBENCH_ACCOUNT=""                    # e.g. <project>
TLBENCH_TIME="48:00:00"
TLBENCH_SBATCH_ARGS="--cpus-per-task=40"   # 160 threads / 4 GPUs; applied by slurm/submit.sh only
if [ -n "$TLBENCH_PARTITION" ]; then export SBATCH_PARTITION="$TLBENCH_PARTITION"; fi
if [ -n "$TLBENCH_QOS" ]; then export SBATCH_QOS="$TLBENCH_QOS"; fi
if [ -n "$TLBENCH_ACCOUNT" ]; then export SBATCH_ACCOUNT="$TLBENCH_ACCOUNT"; fi
if [ -n "$TLBENCH_TIME" ]; then export SBATCH_TIMELIMIT="$TLBENCH_TIME"; fi

site_setup() {  # run in every job (sbatch and submitit); end each line with || return 1: the job
                #  stops when a module fails to load
  module purge || return 1
  module load gcc/8.3.0 cuda/10.2 cudnn/7.6.4 nccl/2.4.8 || return 1
  # An Open-CE conda environment with torch, timm, lightning and tlbench installed:
  TLBENCH_PYTHON="/gpfs/projects/<project>/envs/tlbench/bin/python"
}

export TLBENCH_OUTPUT_DIR="/gpfs/scratch/<project>/$USER/tlbench"
export TLBENCH_CACHE_DIR="/gpfs/scratch/<project>/$USER/tlbench-cache/features"
# Weights fetched on the login node (tlbench model.download=true there), read offline by the jobs:
export TORCH_HOME="/gpfs/projects/<project>/cache/torch" HF_HOME="/gpfs/projects/<project>/cache/hf"
# W&B (logger=wandb) writes its offline runs into each run directory (wandb/ there), whatever WANDB_DIR says.
