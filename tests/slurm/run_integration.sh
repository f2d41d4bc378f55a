#!/usr/bin/env bash
# SLURM integration: start a one-node cluster, run one phantom cohort's preprocessing through
#   snakemake --profile profiles/slurm
# to completion, check its outputs, stop the daemons. Run as root from anywhere:
#   bash tests/slurm/run_integration.sh
# Overrides for this test cluster only (the real profile keeps the plugin's defaults):
#   --slurm-status-command squeue  there is no slurmdbd, so sacct fails and the plugin would wait forever
#   --slurm-init-seconds-before-status-checks 5   (default 40) so the test does not idle
# Env: BRAING3N_SLURM_TIMEOUT (seconds, default 1800), BRAING3N_SLURM_KEEP=1 keeps the temp folder
# and the cluster running for inspection, BRAING3N_SLURM_CONFIG another config template (@TMP@ is
# replaced by the run's temporary folder).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
PY=${PYTHON:-$REPO/.venv/bin/python}
SNAKEMAKE=$(dirname "$PY")/snakemake
TIMEOUT=${BRAING3N_SLURM_TIMEOUT:-1800}
TMP=$(mktemp -d /tmp/braing3n-slurm-it.XXXXXX)
LOG=$TMP/snakemake.log

cleanup() {
    rc=$?
    if [ "${BRAING3N_SLURM_KEEP:-0}" = 1 ]; then
        echo "run_integration: kept $TMP and the cluster (bash tests/slurm/stop.sh to stop it)"
    else
        bash "$REPO/tests/slurm/stop.sh" || true
        rm -rf "$TMP"
    fi
    exit $rc
}
trap cleanup EXIT

[ -x "$SNAKEMAKE" ] || { echo "run_integration: $SNAKEMAKE not found (make the venv first: make test)" >&2; exit 1; }
bash "$REPO/tests/slurm/start.sh"

sed "s#@TMP@#$TMP#g" "${BRAING3N_SLURM_CONFIG:-tests/slurm/config.yaml}" > "$TMP/config.yaml"
# The targets: the cohort's QC table, i.e. every scan's preprocessing (and the phantom it needs).
TARGETS=$("$PY" - "$TMP/config.yaml" <<'PYEOF'
import sys
from braing3n.config import load_config
from braing3n.paths import Layout
config = load_config(sys.argv[1])
print(" ".join(Layout(config["results"]).qc_table(c) for c in config["cohorts"]))
PYEOF
)
echo "run_integration: targets $TARGETS"

# The job step's snakemake must find the same python: put the venv first on PATH.
export PATH="$(dirname "$PY"):$PATH"
# The profile's `cores: 4` sizes each job; this node may have fewer CPUs (a job asking for more
# than any node has pends forever with reason PartitionConfig).
NODE_CPUS=$(sinfo -h -o '%c' | sort -n | tail -1)
set +e
timeout -k 30 "$TIMEOUT" "$SNAKEMAKE" --profile profiles/slurm --configfile "$TMP/config.yaml" \
    --cores "$NODE_CPUS" --slurm-status-command squeue --slurm-init-seconds-before-status-checks 5 \
    --slurm-logdir "$TMP/slurm-logs" --slurm-keep-successful-logs \
    $TARGETS > "$LOG" 2>&1
rc=$?
set -e
if [ $rc -ne 0 ]; then
    echo "run_integration: snakemake exited $rc (124 = timed out after ${TIMEOUT}s); last lines of $LOG:" >&2
    tail -n 60 "$LOG" >&2
    for f in $(find "$TMP/slurm-logs" -name '*.log' 2>/dev/null | head -5); do echo "--- $f" >&2; tail -n 30 "$f" >&2; done
    exit 1
fi

"$PY" - "$TMP/config.yaml" "$LOG" <<'PYEOF'
import re
import sys

import pandas as pd

from braing3n.config import load_config
from braing3n.paths import Layout

config = load_config(sys.argv[1])
log = open(sys.argv[2]).read()
L = Layout(config["results"])
errors = []
for cohort in config["cohorts"]:
    qc = pd.read_parquet(L.qc_table(cohort))
    if len(qc) == 0:
        errors.append(f"{L.qc_table(cohort)} has no rows")
    status = qc["status"].value_counts().to_dict() if "status" in qc else {}
    print(f"run_integration: {cohort}: {len(qc)} scans in the QC table, status {status}")
    if status.get("ok", 0) != len(qc):
        errors.append(f"{cohort}: not every scan preprocessed ok: {status}")
# "Job <id> has been submitted with SLURM jobid 12 (log: .../group_preprocess.../12.log)."
submitted = dict(re.findall(r"has been submitted with SLURM jobid (\d+) \(log: ([^)]*)\)", log))
groups = sum("/group_preprocess" in path for path in submitted.values())
print(f"run_integration: {len(submitted)} SLURM jobs submitted ({groups} preprocess group job(s))")
if not submitted:
    errors.append("no job went through sbatch")
if groups != 1:
    errors.append(f"expected the two sessions' preprocessing in one group job, saw {groups}")
if errors:
    sys.exit("run_integration: FAILED: " + "; ".join(errors))
print("run_integration: OK")
PYEOF
