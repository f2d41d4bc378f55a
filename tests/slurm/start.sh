#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine (root, Debian/Ubuntu, no systemd needed).
#   bash tests/slurm/start.sh        # installs the packages if missing, starts munged/slurmctld/slurmd
#   bash tests/slurm/stop.sh         # stops them by the PIDs recorded here
# The config goes to /etc/slurm/slurm.conf because the executor plugin's job step drops SLURM_CONF.
# Daemons run in the foreground (-D/-F) under `&`, so $! is the daemon itself and stop.sh kills
# exactly what this script started. State (PIDs, logs, spool) lives in $BRAING3N_SLURM_STATE.
set -euo pipefail

STATE=${BRAING3N_SLURM_STATE:-/tmp/braing3n-slurm}
MEM_MB=${BRAING3N_SLURM_MEM_MB:-20000}     # memory the node offers to jobs (capped at the real amount)
CONF=/etc/slurm/slurm.conf

die() { echo "start.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and writes $CONF)"

alive() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }
if alive munged && alive slurmctld && alive slurmd; then
    echo "start.sh: cluster already running (PIDs in $STATE)"
    exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sinfo >/dev/null \
    || ! command -v munged >/dev/null; then
    echo "start.sh: installing slurmctld slurmd slurm-client munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi

mkdir -p "$STATE"/{spool/ctld,spool/d,log}
NODE=$(hostname -s)
# slurmd -C reports the real CPU/socket layout; slurmctld drains a node that claims more than it has.
NODE_LINE=$(slurmd -C | head -1)
CPUS=$(tr ' ' '\n' <<<"$NODE_LINE" | sed -n 's/^CPUs=//p')
LAYOUT=$(tr ' ' '\n' <<<"$NODE_LINE" | grep -E '^(Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=' | tr '\n' ' ')
REAL_MEM=$(tr ' ' '\n' <<<"$NODE_LINE" | sed -n 's/^RealMemory=//p')
[ "$MEM_MB" -le "$REAL_MEM" ] || MEM_MB=$REAL_MEM

mkdir -p /etc/slurm
cat > "$CONF" <<EOF
# Written by tests/slurm/start.sh: one-node test cluster, no accounting database, no cgroups.
ClusterName=braing3n
SlurmctldHost=$NODE(127.0.0.1)
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/slurmctld.daemon.pid
SlurmdPidFile=$STATE/slurmd.daemon.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# Containers without systemd/cgroup v2 delegation: track processes by parent PID, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
# Finished jobs stay visible to squeue for 5 min: the plugin's squeue status command needs >= 120 s.
MinJobAge=300
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS ${LAYOUT}RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
printf 'ConstrainCores=no\nConstrainRAMSpace=no\n' > /etc/slurm/cgroup.conf

# munged as the munge user; its socket dir must belong to it.
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge
chmod 0755 /run/munge
[ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null;
                                 chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key; }
if ! alive munged; then
    runuser -u munge -- /usr/sbin/munged -F --force >"$STATE/log/munged.log" 2>&1 &
    echo $! > "$STATE/munged.pid"
fi
munge_ok() { { munge -n </dev/null | unmunge; } >/dev/null 2>&1; }
for _ in $(seq 50); do munge_ok && break; sleep 0.2; done
munge_ok || die "munged did not start (see $STATE/log/munged.log)"

if ! alive slurmctld; then
    slurmctld -D -i >"$STATE/log/slurmctld.out" 2>&1 &
    echo $! > "$STATE/slurmctld.pid"
fi
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q "is UP" && break; sleep 0.2; done
scontrol ping | grep -q "is UP" || die "slurmctld did not come up (see $STATE/log/slurmctld.log)"

if ! alive slurmd; then
    slurmd -D >"$STATE/log/slurmd.out" 2>&1 &
    echo $! > "$STATE/slurmd.pid"
fi
# A node left DOWN/DRAIN by an earlier run is resumed; then wait until it is idle.
for i in $(seq 150); do
    st=$(sinfo -h -n "$NODE" -o '%T' 2>/dev/null | head -1)
    case "$st" in
        idle|idle~|mixed|allocated) break ;;
        down*|drain*|fail*) [ $((i % 10)) = 0 ] && scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 0.2
done
st=$(sinfo -h -n "$NODE" -o '%T' | head -1)
case "$st" in
    idle|mixed|allocated) ;;
    *) die "node $NODE is '$st', not idle (see $STATE/log/slurmd.log and $STATE/log/slurmctld.log)" ;;
esac
echo "start.sh: one-node SLURM up: node $NODE, $CPUS CPUs, ${MEM_MB} MB, partition debug (state in $STATE)"
