# Site settings for the slurm/ templates. slurm/submit.sh sources this file before calling sbatch
# (so the SBATCH_* variables below set partition, qos, account and time), and every job sources it
# again at start (its log names the file: "tlbench: site file: ..."). Sourcing a site file exports
# TLBENCH_SITE=<that file>, so plain `sbatch`, slurm/submit.sh and the submitit launcher (which
# runs site_setup in its jobs too) then use it. For another cluster, copy this file or one of
# slurm/sites/*.sh anywhere and `source` the copy (or set TLBENCH_SITE to it).
# This default suits a cluster where the checkout has its own .venv (`pip install -e .` there).

TLBENCH_SITE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
export TLBENCH_SITE

# The checkout, for the defaults below. Jobs and slurm/submit.sh set TLBENCH_HOME; sourced by hand
# it is the folder above this file when that is a checkout (this file is its slurm/site.sh), else
# the current folder when that is one. A copy elsewhere that sets TLBENCH_PYTHON and
# TLBENCH_OUTPUT_DIR itself does not need it.
if [ -z "${TLBENCH_HOME:-}" ]; then
  for tlbench_dir in "$(dirname "${BASH_SOURCE[0]}")/.." "$PWD"; do
    if [ -f "$tlbench_dir/slurm/common.sh" ]; then TLBENCH_HOME="$(cd "$tlbench_dir" && pwd)" && break; fi
  done
  unset tlbench_dir
fi

# --- scheduler (empty: the cluster's default) ---
TLBENCH_PARTITION=""
TLBENCH_QOS=""
TLBENCH_ACCOUNT=""
TLBENCH_TIME=""                       # e.g. 02:00:00; empty keeps the template's --time (24:00:00)
# Extra sbatch options, applied by slurm/submit.sh only (plain sbatch has no variable for them;
# there, pass them yourself: sbatch $TLBENCH_SBATCH_ARGS <template> ...). They win over the
# templates' #SBATCH lines (4 tasks x 10 CPUs, 4 GPUs), e.g.
#   "--cpus-per-task=40 --constraint=v100"                      (160 hardware threads / 4 GPUs)
#   "--gres=none --ntasks-per-node=1 --cpus-per-task=16"        (CPU nodes: no GPUs, one rank)
TLBENCH_SBATCH_ARGS=""
if [ -n "$TLBENCH_PARTITION" ]; then export SBATCH_PARTITION="$TLBENCH_PARTITION"; fi
if [ -n "$TLBENCH_QOS" ]; then export SBATCH_QOS="$TLBENCH_QOS"; fi
if [ -n "$TLBENCH_ACCOUNT" ]; then export SBATCH_ACCOUNT="$TLBENCH_ACCOUNT"; fi
if [ -n "$TLBENCH_TIME" ]; then export SBATCH_TIMELIMIT="$TLBENCH_TIME"; fi

# --- software: module lines and the python that has tlbench (run inside every job) ---
site_setup() {  # end each module line with || return 1: the template then stops on a failed load
  # module purge || return 1
  # module load cuda/12.1 python/3.11 || return 1
  TLBENCH_PYTHON="${TLBENCH_PYTHON:-$TLBENCH_HOME/.venv/bin/python}"
}

# --- storage: shared by all nodes (runs, feature cache, offline weights) ---
# Runs land in $TLBENCH_OUTPUT_DIR/runs (sbatch jobs) and $TLBENCH_OUTPUT_DIR/multiruns (submitit
# sweeps); `tlbench-report` with no path reads both once this file is sourced.
export TLBENCH_OUTPUT_DIR="${TLBENCH_OUTPUT_DIR:-${TLBENCH_HOME:+$TLBENCH_HOME/outputs}}"
if [ -z "$TLBENCH_OUTPUT_DIR" ]; then
  echo "tlbench: error: TLBENCH_OUTPUT_DIR is not set and no checkout was found for its default:" \
    "set it in $TLBENCH_SITE, or source this file from the repository root" >&2
  return 2
fi
export TLBENCH_CACHE_DIR="${TLBENCH_CACHE_DIR:-$TLBENCH_OUTPUT_DIR/cache/features}"
# export TORCH_HOME=/gpfs/projects/<project>/cache/torch HF_HOME=/gpfs/projects/<project>/cache/hf
