#!/bin/bash
# Submit a slurm/ template with the site settings applied and the inputs checked on the login node:
#   slurm/submit.sh slurm/tlbench_1node.sbatch dataset=mit67 strategy=fne
#   slurm/submit.sh --array=0-2 slurm/tlbench_array.sbatch slurm/sweeps/example.txt
#   TLBENCH_SITE=~/my-site.sh slurm/submit.sh slurm/tlbench_1node.sbatch ...
# Options before the template go to sbatch (after the site's TLBENCH_SBATCH_ARGS, so they win over
# them, and both win over the template's #SBATCH lines); everything after it goes to the job
# (Hydra overrides). The site file is TLBENCH_SITE (a sourced site file exports it), else
# slurm/site.sh. The job runs from the repository root and logs to slurm/logs/.
set -euo pipefail
if [ -n "${TLBENCH_SITE:-}" ] && [[ "$TLBENCH_SITE" != /* ]]; then TLBENCH_SITE="$PWD/$TLBENCH_SITE"; fi
cd "$(dirname "$0")/.."
export TLBENCH_HOME="$PWD"
TLBENCH_SITE="${TLBENCH_SITE:-$TLBENCH_HOME/slurm/site.sh}"
[ -f "$TLBENCH_SITE" ] || { echo "tlbench: error: site file $TLBENCH_SITE not found (TLBENCH_SITE)" >&2; exit 2; }
export TLBENCH_SITE
# shellcheck source=/dev/null
source "$TLBENCH_SITE" || { echo "tlbench: error: sourcing the site file $TLBENCH_SITE failed" >&2; exit 2; }

sbatch_args=()
while [ $# -gt 0 ] && [[ "$1" == -* ]]; do sbatch_args+=("$1"); shift; done
template="${1:-}"
[ -f "$template" ] || { echo "tlbench: error: no template '$template'; one of: $(ls slurm/*.sbatch | tr '\n' ' ')" >&2; exit 2; }
shift
mkdir -p slurm/logs # the templates' --output: Slurm fails a job whose log folder is missing, silently
# The job checks this to know that the site's sbatch options were applied (plain sbatch ignores them).
export TLBENCH_SBATCH_ARGS_APPLIED="${TLBENCH_SBATCH_ARGS:-}"
echo "tlbench: site file $TLBENCH_SITE; sbatch ${TLBENCH_SBATCH_ARGS:-}${TLBENCH_SBATCH_ARGS:+ }${sbatch_args[*]-} $template; log in slurm/logs/" >&2
# shellcheck disable=SC2086  # TLBENCH_SBATCH_ARGS holds several options
exec sbatch ${TLBENCH_SBATCH_ARGS:-} "${sbatch_args[@]}" "$template" "$@"
