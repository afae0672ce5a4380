# Shared by the slurm/ templates (sourced inside the job): site settings, checks, environment, launch.
# Not a job script itself.

tlbench_fail() {
  echo "tlbench: error: $*" >&2
  exit 2
}

# The checkout the job was submitted from (sbatch runs a copy of the script, so $0 is no guide).
TLBENCH_HOME="${TLBENCH_HOME:-$SLURM_SUBMIT_DIR}"
[ -f "$TLBENCH_HOME/slurm/common.sh" ] ||
  tlbench_fail "no tlbench checkout at TLBENCH_HOME=$TLBENCH_HOME: submit from the repository root or export TLBENCH_HOME"
export TLBENCH_HOME

# The site file: TLBENCH_SITE (sourcing a site file exports it, and sbatch passes it on), else the
# checkout's slurm/site.sh. Its absolute path goes into the log.
if [ -n "${TLBENCH_SITE:-}" ]; then tlbench_site_from="TLBENCH_SITE"; else tlbench_site_from="default: TLBENCH_SITE is not set"; fi
TLBENCH_SITE="${TLBENCH_SITE:-$TLBENCH_HOME/slurm/site.sh}"
case "$TLBENCH_SITE" in /*) ;; *) TLBENCH_SITE="$PWD/$TLBENCH_SITE" ;; esac
echo "tlbench: site file: $TLBENCH_SITE ($tlbench_site_from)"
[ -f "$TLBENCH_SITE" ] || tlbench_fail "site file $TLBENCH_SITE not found (set TLBENCH_SITE, see slurm/README.md)"
export TLBENCH_SITE
# shellcheck source=/dev/null
source "$TLBENCH_SITE" || tlbench_fail "sourcing the site file $TLBENCH_SITE failed (its message is above)"
if declare -F site_setup >/dev/null; then
  site_setup || tlbench_fail "site_setup in $TLBENCH_SITE failed (module loads, environment activation)"
fi
# TLBENCH_SBATCH_ARGS are sbatch options: only slurm/submit.sh applies them (it marks the job so).
if [ -n "${TLBENCH_SBATCH_ARGS:-}" ] && [ "${TLBENCH_SBATCH_ARGS_APPLIED-}" != "$TLBENCH_SBATCH_ARGS" ]; then
  echo "tlbench: warning: $TLBENCH_SITE sets TLBENCH_SBATCH_ARGS=\"$TLBENCH_SBATCH_ARGS\", but this job was not" \
    "submitted with slurm/submit.sh, and plain sbatch does not read it: unless you passed those options yourself," \
    "the job runs with the template's #SBATCH lines (${SLURM_CPUS_PER_TASK:-1} CPU(s) per task here)." \
    "Submit with slurm/submit.sh, or sbatch \$TLBENCH_SBATCH_ARGS <template> ..." >&2
fi

# What every job needs; the site file sets it.
[ -n "${TLBENCH_PYTHON:-}" ] || tlbench_fail "TLBENCH_PYTHON is not set: in $TLBENCH_SITE, set it to the python of the environment where tlbench is installed"
[ -n "${TLBENCH_OUTPUT_DIR:-}" ] || tlbench_fail "TLBENCH_OUTPUT_DIR is not set: in $TLBENCH_SITE, set it to a shared folder for run directories (e.g. on GPFS scratch)"
[ -n "${TLBENCH_CACHE_DIR:-}" ] || tlbench_fail "TLBENCH_CACHE_DIR is not set: in $TLBENCH_SITE, set it to a shared folder for extracted features"
"$TLBENCH_PYTHON" -c "import tlbench" 2>/dev/null ||
  tlbench_fail "$TLBENCH_PYTHON cannot import tlbench: install it there (pip install -e $TLBENCH_HOME) or fix TLBENCH_PYTHON in $TLBENCH_SITE"
export TLBENCH_OUTPUT_DIR TLBENCH_CACHE_DIR

# srun does not inherit --cpus-per-task since Slurm 22.05: without this every rank gets one core.
export SRUN_CPUS_PER_TASK="${SLURM_CPUS_PER_TASK:-1}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"
# Full Hydra tracebacks, Python tracebacks on a hang/crash, unbuffered logs in the .out file.
export HYDRA_FULL_ERROR=1 PYTHONFAULTHANDLER=1 PYTHONUNBUFFERED=1
# Compute nodes have no internet: nothing may try the hubs; W&B writes offline (`wandb sync` later).
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE="${WANDB_MODE:-offline}"

tlbench_srun() {
  echo "tlbench: job ${SLURM_JOB_ID} (restart ${SLURM_RESTART_COUNT:-0}) on ${SLURM_JOB_NODELIST}:" \
    "${SLURM_NNODES} node(s) x ${SLURM_NTASKS_PER_NODE:-?} task(s), ${SLURM_CPUS_PER_TASK:-1} CPU(s) per task"
  echo "tlbench: overrides: $*"
  # One rank per task; Lightning's SLURMEnvironment reads the ranks, the run directory is keyed by
  # the job id (the same on every rank and after a requeue), the device count defaults to the tasks.
  srun --kill-on-bad-exit=1 "$TLBENCH_PYTHON" -m tlbench.cli "$@"
}
