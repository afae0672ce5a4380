# Site settings for the slurm/ templates. The jobs source this file at start; slurm/submit.sh also
# sources it before calling sbatch, so the SBATCH_* variables below set partition, qos and account.
# For another cluster, copy one of slurm/sites/*.sh and point TLBENCH_SITE at it.
# This default suits a cluster where the checkout has its own .venv (`pip install -e .` there).

# The checkout (sourced by hand on a login node, TLBENCH_HOME may not be set yet).
TLBENCH_HOME="${TLBENCH_HOME:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"

# --- scheduler (empty: the cluster's default) ---
TLBENCH_PARTITION=""
TLBENCH_QOS=""
TLBENCH_ACCOUNT=""
TLBENCH_TIME=""                       # e.g. 02:00:00; empty keeps the template's --time
TLBENCH_SBATCH_ARGS=""                # extra sbatch options, e.g. "--cpus-per-task=40 --constraint=v100"
if [ -n "$TLBENCH_PARTITION" ]; then export SBATCH_PARTITION="$TLBENCH_PARTITION"; fi
if [ -n "$TLBENCH_QOS" ]; then export SBATCH_QOS="$TLBENCH_QOS"; fi
if [ -n "$TLBENCH_ACCOUNT" ]; then export SBATCH_ACCOUNT="$TLBENCH_ACCOUNT"; fi
if [ -n "$TLBENCH_TIME" ]; then export SBATCH_TIMELIMIT="$TLBENCH_TIME"; fi

# --- software: module lines and the python that has tlbench ---
site_setup() {  # end each module line with || return 1: the template then stops on a failed load
  # module purge || return 1
  # module load cuda/12.1 python/3.11 || return 1
  TLBENCH_PYTHON="${TLBENCH_PYTHON:-$TLBENCH_HOME/.venv/bin/python}"
}

# --- storage: shared by all nodes (runs, feature cache, offline weights) ---
export TLBENCH_OUTPUT_DIR="${TLBENCH_OUTPUT_DIR:-$TLBENCH_HOME/outputs}"
export TLBENCH_CACHE_DIR="${TLBENCH_CACHE_DIR:-$TLBENCH_OUTPUT_DIR/cache/features}"
# export TORCH_HOME=/gpfs/projects/<project>/cache/torch HF_HOME=/gpfs/projects/<project>/cache/hf
