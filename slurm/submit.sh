#!/bin/bash
# Submit a slurm/ template with the site settings applied and the inputs checked on the login node:
#   slurm/submit.sh slurm/tlbench_1node.sbatch dataset=mit67 strategy=fne
#   slurm/submit.sh --array=0-2 slurm/tlbench_array.sbatch slurm/sweeps/example.txt
# Options before the template go to sbatch; everything after it goes to the job (Hydra overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
export TLBENCH_HOME="$PWD"
TLBENCH_SITE="${TLBENCH_SITE:-$TLBENCH_HOME/slurm/site.sh}"
[ -f "$TLBENCH_SITE" ] || { echo "tlbench: error: site file $TLBENCH_SITE not found" >&2; exit 2; }
export TLBENCH_SITE
# shellcheck source=/dev/null
source "$TLBENCH_SITE"

sbatch_args=()
while [ $# -gt 0 ] && [[ "$1" == -* ]]; do sbatch_args+=("$1"); shift; done
template="${1:-}"
[ -f "$template" ] || { echo "tlbench: error: no template '$template'; one of: $(ls slurm/*.sbatch | tr '\n' ' ')" >&2; exit 2; }
shift
# shellcheck disable=SC2086  # TLBENCH_SBATCH_ARGS holds several options
exec sbatch ${TLBENCH_SBATCH_ARGS:-} "${sbatch_args[@]}" "$template" "$@"
