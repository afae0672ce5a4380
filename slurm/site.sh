# Site settings for the slurm/ templates. The jobs source this file at start; slurm/submit.sh also
# sources it before calling sbatch, so the SBATCH_* variables below set partition, qos and account.
# For another cluster, copy one of slurm/sites/*.sh and point TLBENCH_SITE at it.
# This default suits a cluster where the checkout has its own .venv (`pip install -e .` there).

# --- scheduler (empty: the cluster's default) ---
TLBENCH_PARTITION=""
TLBENCH_QOS=""
TLBENCH_ACCOUNT=""
TLBENCH_TIME=""                       # e.g. 02:00:00; empty keeps the template's --time
TLBENCH_SBATCH_ARGS=""                # extra sbatch options, e.g. "--cpus-per-task=40 --constraint=v100"
[ -n "$TLBENCH_PARTITION" ] && export SBATCH_PARTITION="$TLBENCH_PARTITION"
[ -n "$TLBENCH_QOS" ] && export SBATCH_QOS="$TLBENCH_QOS"
[ -n "$TLBENCH_ACCOUNT" ] && export SBATCH_ACCOUNT="$TLBENCH_ACCOUNT"
[ -n "$TLBENCH_TIME" ] && export SBATCH_TIMELIMIT="$TLBENCH_TIME"

# --- software: module lines and the python that has tlbench ---
site_setup() {
  # module purge
  # module load cuda/12.1 python/3.11
  TLBENCH_PYTHON="${TLBENCH_PYTHON:-$TLBENCH_HOME/.venv/bin/python}"
}

# --- storage: shared by all nodes (runs, feature cache, offline weights) ---
export TLBENCH_OUTPUT_DIR="${TLBENCH_OUTPUT_DIR:-$TLBENCH_HOME/outputs}"
export TLBENCH_CACHE_DIR="${TLBENCH_CACHE_DIR:-$TLBENCH_OUTPUT_DIR/cache/features}"
# export TORCH_HOME=/gpfs/projects/<project>/cache/torch HF_HOME=/gpfs/projects/<project>/cache/hf
