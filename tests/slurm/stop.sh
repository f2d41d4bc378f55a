#!/usr/bin/env bash
# Stop the one-node test cluster started by tests/slurm/start.sh, by the PIDs it recorded.
# Only those processes are signalled; jobs still queued are cancelled first so slurmd exits cleanly.
set -uo pipefail

STATE=${BRAING3N_SLURM_STATE:-/tmp/braing3n-slurm}
[ -d "$STATE" ] || { echo "stop.sh: no state dir $STATE, nothing to stop"; exit 0; }

if command -v scancel >/dev/null && [ -f "$STATE/slurmctld.pid" ] && kill -0 "$(cat "$STATE/slurmctld.pid")" 2>/dev/null; then
    scancel --full --quiet "--user=$(id -un)" 2>/dev/null || true
fi
for d in slurmd slurmctld munged; do
    f="$STATE/$d.pid"
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && { echo "stop.sh: $d ($pid) ignored TERM, sending KILL"; kill -KILL "$pid"; }
        echo "stop.sh: stopped $d ($pid)"
    fi
    rm -f "$f"
done
