#!/usr/bin/env bash
# A two-node Slurm cluster on this one host, to try recipes/slurm before a real cluster (and for its tests):
#   scripts/local_slurm.sh up [DIR]     start it; prints the `export SLURM_CONF=...` that points sbatch/srun at it
#   scripts/local_slurm.sh down [DIR]   cancel its jobs, stop its daemons, remove DIR
# DIR (default $AM_RL_LOCAL_SLURM_DIR, else /tmp/am_rl-slurm) holds everything: slurm.conf, state, logs, and a private
# munged with its own key and socket, so the host's Slurm or munge (if any) is neither used nor touched. Every port is
# a free one picked at `up`. Nodes n1 and n2 (slurmd -N) both run here, each offering the host's CPUs and no GPU.
# Needs Debian's slurm-wlm and munge (scripts/setup_system_slurm.sh) and root (slurmd starts job steps as any user).
set -euo pipefail

cmd=${1:?usage: local_slurm.sh up|down [DIR]}
dir=$(realpath -m "${2:-${AM_RL_LOCAL_SLURM_DIR:-/tmp/am_rl-slurm}}")
conf=$dir/slurm.conf
nodes=(n1 n2)
export SLURM_CONF=$conf

log() { echo "[local_slurm] $*" >&2; }

# N free TCP ports on this host, one per line.
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))
PY
}

write_conf() {
    local ports cpus mem_mb
    mapfile -t ports < <(free_ports 3)
    cpus=$(nproc)
    mem_mb=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2))  # each node claims half: Slurm never
    # enforces it here (no cgroups), it only has to be below what slurmd measures
    cat >"$conf" <<EOF
ClusterName=am_rl_local
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=${ports[0]}
SlurmdPort=${ports[1]}
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge.socket
StateSaveLocation=$dir/ctld
SlurmdSpoolDir=$dir/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/%n/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/%n/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# Finished jobs' states for `sacct --completion` (no slurmdbd here).
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.txt
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
# Allow a job's srun steps to be killed quickly on scancel (default 30 s between TERM and KILL).
KillWait=10
NodeName=n1 NodeHostname=$(hostname -s) NodeAddr=127.0.0.1 Port=${ports[1]} CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
NodeName=n2 NodeHostname=$(hostname -s) NodeAddr=127.0.0.1 Port=${ports[2]} CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

start_munged() {
    (umask 077 && head -c 1024 /dev/urandom >"$dir/munge.key")
    chmod 400 "$dir/munge.key"
    # --force: munged refuses root and a socket directory that is not world-executable otherwise; both are ours.
    munged --force -S "$dir/munge.socket" --key-file="$dir/munge.key" --pid-file="$dir/munged.pid" \
        --log-file="$dir/munged.log" --seed-file="$dir/munged.seed"
}

# wait_idle TIMEOUT_S: until sinfo lists every node idle.
wait_idle() {
    local waited=0 states
    while :; do
        states=$(sinfo --noheader --Node --format='%N %t' 2>/dev/null || true)
        if [[ $(grep -c ' idle$' <<<"$states") == "${#nodes[@]}" ]]; then
            log "nodes idle: $(tr '\n' ' ' <<<"$states")"
            return 0
        fi
        if ((waited >= $1)); then
            log "nodes not idle after ${1}s (sinfo: ${states:-no answer}); logs in $dir"
            tail -n 20 "$dir/slurmctld.log" "$dir"/n*/slurmd.log >&2 || true
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
}

# stop_pid FILE: TERM the daemon whose pid FILE holds (if it still runs), KILL it after 10 s.
stop_pid() {
    [[ -s $1 ]] || return 0
    local pid waited=0
    pid=$(<"$1")
    kill -TERM "$pid" 2>/dev/null || return 0
    while kill -0 "$pid" 2>/dev/null && ((waited < 20)); do
        sleep 0.5
        waited=$((waited + 1))
    done
    kill -KILL "$pid" 2>/dev/null || true
}

up() {
    if [[ -e $conf ]]; then
        log "$dir already holds a cluster: run 'local_slurm.sh down $dir' first"
        exit 1
    fi
    local missing=() bin
    for bin in slurmctld slurmd sinfo munged; do command -v "$bin" >/dev/null || missing+=("$bin"); done
    if ((${#missing[@]})); then
        log "missing ${missing[*]}: run scripts/setup_system_slurm.sh (Debian's slurm-wlm and munge)"
        exit 1
    fi
    mkdir -p "$dir/ctld" "${nodes[@]/#/$dir/}"
    chmod 700 "$dir"
    write_conf
    start_munged
    slurmctld -f "$conf"
    local node
    for node in "${nodes[@]}"; do slurmd -f "$conf" -N "$node"; done
    if ! wait_idle 60; then
        down
        exit 1
    fi
    echo "export SLURM_CONF=$conf"
}

down() {
    if [[ -e $conf ]] && scontrol ping >/dev/null 2>&1; then
        scancel --full --quiet --user="$(id -un)" 2>/dev/null || true  # running jobs: their steps get killed
        local waited=0
        while [[ -n $(squeue --noheader 2>/dev/null) ]] && ((waited < 60)); do
            sleep 1
            waited=$((waited + 1))
        done
        scontrol shutdown >/dev/null 2>&1 || true
    fi
    local pid_file
    for pid_file in "$dir"/n*/slurmd.pid "$dir/slurmctld.pid" "$dir/munged.pid"; do stop_pid "$pid_file"; done
    rm -rf "$dir"
    log "stopped; $dir removed"
}

case $cmd in
    up) up ;;
    down) down ;;
    *)
        log "unknown command '$cmd': use up or down"
        exit 2
        ;;
esac
