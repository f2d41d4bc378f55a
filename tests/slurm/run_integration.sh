#!/usr/bin/env bash
# SLURM integration: start a one-node cluster, run a demo-sized chain through
#   snakemake --profile slurm ...       (the profile name, resolved from the repository root)
# to completion, check its outputs, stop the daemons. The chain (tests/slurm/config.yaml): one tiny
# phantom cohort -> preprocessing of three sessions (one group job) -> QC table -> harmonise ->
# manifest -> store -> MAE and decoder trained for two steps, each under the DDP launcher with two
# CPU processes (gloo) inside its SLURM allocation -> export -> the MAE's probe table -> report.
# Run as root from anywhere:
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
# The target: the report, which waits for the products listed in the config's report.needs.
TARGETS=$("$PY" - "$TMP/config.yaml" <<'PYEOF'
import sys
from braing3n.config import load_config
config = load_config(sys.argv[1])
print(f"{config['results']}/report/index.html")
PYEOF
)
echo "run_integration: targets $TARGETS"

# The job step's snakemake must find the same python: put the venv first on PATH.
export PATH="$(dirname "$PY"):$PATH"
# The profile's `cores: 4` sizes each job; this node may have fewer CPUs (a job asking for more
# than any node has pends forever with reason PartitionConfig).
NODE_CPUS=$(sinfo -h -o '%c' | sort -n | tail -1)
# A CPU-only node: the chain's GPU rules (training, export) ask for no GPU and little memory here
# (this replaces the profile's set-resources; the rest of the profile applies as on a cluster).
CPU_ONLY=()
for rule in train_mae train_decoder export; do CPU_ONLY+=("$rule:gpu=0" "$rule:mem_mb=6000"); done
set +e
START=$(date +%s)
timeout -k 30 "$TIMEOUT" "$SNAKEMAKE" --profile slurm "$TARGETS" --configfile "$TMP/config.yaml" \
    --cores "$NODE_CPUS" --slurm-status-command squeue --slurm-init-seconds-before-status-checks 5 \
    --slurm-logdir "$TMP/slurm-logs" --slurm-keep-successful-logs --set-resources "${CPU_ONLY[@]}" > "$LOG" 2>&1
rc=$?
set -e
echo "run_integration: snakemake took $(( $(date +%s) - START )) s (exit $rc)"
if [ $rc -ne 0 ]; then
    echo "run_integration: snakemake exited $rc (124 = timed out after ${TIMEOUT}s); last lines of $LOG:" >&2
    tail -n 60 "$LOG" >&2
    for f in $(find "$TMP/slurm-logs" "$TMP/results/logs" -name '*.log' 2>/dev/null | head -20); do
        echo "--- $f" >&2; tail -n 20 "$f" >&2
    done
    exit 1
fi

"$PY" - "$TMP/config.yaml" "$LOG" <<'PYEOF'
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from braing3n.config import load_config
from braing3n.paths import Layout
from braing3n.train.checkpoint import load_latest

config = load_config(sys.argv[1])
log = open(sys.argv[2]).read()
R = config["results"]
L = Layout(R)
errors = []
for cohort in config["cohorts"]:
    qc = pd.read_parquet(L.qc_table(cohort))
    status = qc["status"].value_counts().to_dict() if "status" in qc else {}
    print(f"run_integration: {cohort}: {len(qc)} scans in the QC table, status {status}")
    if len(qc) == 0 or status.get("ok", 0) != len(qc):
        errors.append(f"{cohort}: not every scan preprocessed ok: {status}")
    store = pd.read_parquet(L.store_index(cohort))
    emb = np.load(f"{R}/embeddings/{cohort}.npz", allow_pickle=False)
    n_emb = len(emb["scan_id"]) if "scan_id" in emb else -1
    print(f"run_integration: {cohort}: {len(store)} scans in the store, {n_emb} exported embeddings")
    if not (len(store) == len(qc) == n_emb):
        errors.append(f"{cohort}: store {len(store)} / embeddings {n_emb} / QC {len(qc)} scans differ")
manifest = pd.read_parquet(L.manifest)
print(f"run_integration: manifest {len(manifest)} rows")
for name in ("mae", "decoder"):
    folder = Path(L.model_dir(name))
    state = load_latest(folder / "checkpoints")
    world = len(state["rng"]) if state else 0
    launch = re.findall(r"braing3n launch: (\S+), (\d+) node\(s\) x (\d+) process", (Path(R) / "logs" / f"train_{name}.log").read_text())
    print(f"run_integration: train_{name}: launcher {launch}, checkpoint written by {world} process(es), "
          f"final weights {(folder / 'final.safetensors').exists()}")
    if launch != [("torchrun", "1", "2")] or world != 2 or not (folder / "final.safetensors").exists():
        errors.append(f"train_{name}: expected torchrun with 2 processes and final weights")
probes = pd.read_csv(L.table("probes_mae"), comment="#")
html = Path(R, "report", "index.html").read_text()
print(f"run_integration: probes_mae {len(probes)} rows; report {len(html)} bytes")
if "probes_mae" not in html or "phantommem_qc" not in html:
    errors.append("the report lacks the probe table or the QC table")
# "Job <id> has been submitted with SLURM jobid 12 (log: .../group_preprocess.../12.log)."
submitted = dict(re.findall(r"has been submitted with SLURM jobid (\d+) \(log: ([^)]*)\)", log))
paths = sorted(submitted.values())
groups = sum("/group_preprocess" in p for p in paths)
print(f"run_integration: {len(submitted)} SLURM jobs submitted ({groups} preprocess group job(s))")
expected = ["phantom_phantommem", "qc_table", "harmonise", "manifest", "store", "train_mae", "train_decoder",
            "export", "probes", "report"]  # the plugin's logs: {slurm-logdir}/rule_{rule}/{wildcards}/{jobid}.log
missing = [rule for rule in expected if not any(f"/rule_{rule}/" in p for p in paths)]
if groups != 1:
    errors.append(f"expected the three sessions' preprocessing in one group job, saw {groups}")
if missing or len(submitted) != len(expected) + 1:
    errors.append(f"expected one sbatch submission per job ({len(expected)} + the group), saw {len(submitted)}; "
                  f"not submitted: {missing}")
if errors:
    sys.exit("run_integration: FAILED: " + "; ".join(errors))
print("run_integration: OK")
PYEOF
