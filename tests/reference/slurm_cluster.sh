#!/bin/bash
# A throw-away single-node Slurm cluster for the tests (Debian 12: slurmctld, slurmd, munge,
# Slurm 22.05). Everything it writes (configuration, munge key and socket, state, spool,
# logs, pid files) is under DIR; nothing in /etc/slurm or /etc/munge is read or written.
#
#   slurm_cluster.sh start DIR   install the packages if missing (apt-get, needs root), write
#                                DIR/slurm.conf, start munged, slurmctld and slurmd as root,
#                                wait until the node is idle
#   slurm_cluster.sh env DIR     print the `export ...` lines client commands need
#                                (eval "$(slurm_cluster.sh env DIR)"; then sbatch, squeue, ...)
#   slurm_cluster.sh stop DIR    stop exactly the daemons `start` started (their pid files),
#                                wait until they are gone
#
# Optional environment for `start`: SLURM_TEST_CPUS (default: all of the machine's),
# SLURM_TEST_MEMORY_MB (default: the machine's memory less 1 GiB), SLURM_TEST_CTLD_PORT /
# SLURM_TEST_SLURMD_PORT (default 6817 / 6818), SLURM_TEST_TIMEOUT (seconds to wait for the
# node to be idle, default 60). Needs root (the daemons run as root, SlurmUser=root), and no
# other Slurm cluster on the same ports.
set -euo pipefail

die() {
    echo "slurm_cluster.sh: $*" >&2
    exit 1
}

usage() {
    echo "usage: $0 start|env|stop DIR" >&2
    exit 2
}

[ $# -eq 2 ] || usage
cmd=$1
dir=$2

DAEMONS="slurmd slurmctld munged" # the order they are stopped in

install_packages() {
    local missing=()
    for p in slurmd slurmctld slurm-client munge; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "packages ${missing[*]} are missing and installing them needs root"
    echo "installing ${missing[*]} ..." >&2
    # Keep the packages' init scripts from starting daemons of their own (Docker-style images
    # have this policy already; leave theirs alone).
    local policy=/usr/sbin/policy-rc.d made_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        made_policy=1
    fi
    local rc=0
    if ! DEBIAN_FRONTEND=noninteractive apt-get -y -q install --no-install-recommends \
        "${missing[@]}" >"$dir/apt.log" 2>&1; then
        # The package lists may be missing or stale.
        DEBIAN_FRONTEND=noninteractive apt-get -q update >>"$dir/apt.log" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get -y -q install --no-install-recommends \
            "${missing[@]}" >>"$dir/apt.log" 2>&1 || rc=$?
    fi
    [ -n "$made_policy" ] && rm -f "$policy"
    if [ $rc -ne 0 ]; then
        tail -n 30 "$dir/apt.log" >&2
        die "apt-get install ${missing[*]} failed (log: $dir/apt.log)"
    fi
}

alive() { # the process exists and is not a zombie (exited, not yet reaped by its parent)
    kill -0 "$1" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

pid_of() { # the pid in DIR/run/NAME.pid if that process is alive, else nothing
    local f="$dir/run/$1.pid" pid
    [ -s "$f" ] || return 0
    pid=$(tr -dc 0-9 <"$f")
    [ -n "$pid" ] && alive "$pid" && echo "$pid"
    return 0
}

show_logs() {
    for f in "$dir"/log/*.log; do
        [ -e "$f" ] || continue
        echo "===== $f (last 40 lines) =====" >&2
        tail -n 40 "$f" >&2
    done
}

fail() {
    echo "slurm_cluster.sh: $*" >&2
    show_logs
    echo "slurm_cluster.sh: stopping what was started" >&2
    stop_daemons || true
    exit 1
}

stop_daemons() {
    local d pid left=() gone=()
    # Jobs first, while slurmctld and slurmd can still end them (their slurmstepd processes
    # would outlive slurmd otherwise).
    if [ -n "$(pid_of slurmctld)" ] && [ -f "$dir/slurm.conf" ]; then
        SLURM_CONF="$dir/slurm.conf" scancel --quiet --user=root 2>/dev/null || true
        for _ in $(seq 1 30); do
            [ -z "$(SLURM_CONF="$dir/slurm.conf" squeue -h -t R,CG,S,PD -o %i 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
    for d in $DAEMONS; do
        pid=$(pid_of "$d")
        if [ -z "$pid" ]; then
            rm -f "$dir/run/$d.pid"
            continue
        fi
        # Only a process that is this daemon with our configuration.
        if ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$dir"; then
            echo "slurm_cluster.sh: pid $pid in $dir/run/$d.pid is not our $d; left alone" >&2
            continue
        fi
        kill -TERM "$pid" 2>/dev/null || true
        # Wait for the process itself: slurmctld removes its pid file before it has exited.
        for _ in $(seq 1 150); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            echo "slurm_cluster.sh: $d (pid $pid) ignored SIGTERM for 15 s; SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
        fi
        alive "$pid" && left+=("$d:$pid")
        gone+=("$pid")
        rm -f "$dir/run/$d.pid"
    done
    # A job step whose slurmstepd outlived slurmd (slurmstepd runs in slurmd's log folder,
    # DIR/log): end it and its job's processes.
    local p
    for p in $(pgrep -x slurmstepd 2>/dev/null || true); do
        case "$(readlink "/proc/$p/cwd" 2>/dev/null)" in
        "$dir"/*)
            echo "slurm_cluster.sh: slurmstepd $p of this cluster outlived slurmd; killing its session" >&2
            local sid q
            sid=$(ps -o sid= -p "$p" | tr -d ' ')
            for q in $(ps -o pid= -s "$sid" 2>/dev/null || true); do
                kill -KILL "$q" 2>/dev/null || true
            done
            ;;
        esac
    done
    sleep 0.2
    for p in $(pgrep -x slurmstepd 2>/dev/null || true); do
        case "$(readlink "/proc/$p/cwd" 2>/dev/null)" in
        "$dir"/*) left+=("slurmstepd:$p") ;;
        esac
    done
    [ ${#left[@]} -eq 0 ] || die "still running: ${left[*]}"
    # Daemons re-parented to init stay zombies until it reaps them: give it a moment, so that
    # `pgrep slurm` right after stop is empty.
    for _ in $(seq 1 50); do
        p=""
        for p in "${gone[@]}"; do
            kill -0 "$p" 2>/dev/null && break
            p=""
        done
        [ -z "$p" ] && break
        sleep 0.1
    done
}

write_config() {
    local host cpus mem_mb total_mb ctld_port slurmd_port
    host=$(hostname -s)
    cpus=${SLURM_TEST_CPUS:-$(nproc)}
    total_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    mem_mb=${SLURM_TEST_MEMORY_MB:-$((total_mb - 1024))}
    [ "$mem_mb" -gt 0 ] || mem_mb=$((total_mb / 2))
    ctld_port=${SLURM_TEST_CTLD_PORT:-6817}
    slurmd_port=${SLURM_TEST_SLURMD_PORT:-6818}
    : >"$dir/plugstack.conf"
    cat >"$dir/slurm.conf" <<EOF
# Written by tests/reference/slurm_cluster.sh: one node, everything under $dir.
ClusterName=eoinfer-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket.2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/slurmd
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$dir/plugstack.conf
MpiDefault=none
MailProg=/bin/true
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.txt
# Finished jobs stay visible to squeue -t all / scontrol show job for 5 minutes. Plain sacct
# needs slurmdbd ("accounting storage is disabled"); sacct -c reads JobCompLoc, but names
# array tasks by their raw job id (and warns about the ArrayJobId/ArrayTaskId fields).
MinJobAge=300
JobRequeue=1
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=10
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
MaxArraySize=1001
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

start() {
    [ "$(id -u)" -eq 0 ] || die "start needs root (the daemons run as root)"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    for d in $DAEMONS; do
        [ -z "$(pid_of "$d")" ] || die "$d is already running for $dir (stop it first)"
    done
    local port
    for port in "${SLURM_TEST_CTLD_PORT:-6817}" "${SLURM_TEST_SLURMD_PORT:-6818}"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            die "port $port is in use (another Slurm cluster? stop it, or set SLURM_TEST_CTLD_PORT / SLURM_TEST_SLURMD_PORT)"
        fi
    done
    install_packages
    local t0=$SECONDS
    mkdir -p "$dir/run" "$dir/log" "$dir/state" "$dir/spool/slurmd" "$dir/munge"
    chmod 755 "$dir/munge" # munged: the socket folder must be searchable by all
    # munged insists the key is private and its parent folders are not writable by others.
    if [ ! -s "$dir/munge.key" ]; then
        (umask 077 && head -c 1024 /dev/urandom >"$dir/munge.key")
    fi
    chmod 600 "$dir/munge.key"
    write_config

    munged --key-file="$dir/munge.key" --socket="$dir/munge/munge.socket.2" \
        --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" \
        --seed-file="$dir/munge/munged.seed" --num-threads=2 \
        >>"$dir/log/munged.out" 2>&1 || fail "munged did not start"
    for _ in $(seq 1 50); do
        [ -S "$dir/munge/munge.socket.2" ] && break
        sleep 0.1
    done
    munge -n --socket="$dir/munge/munge.socket.2" | unmunge --socket="$dir/munge/munge.socket.2" \
        >/dev/null 2>&1 || fail "munge round trip through $dir/munge/munge.socket.2 failed"

    # -i: ignore state from an earlier cluster in DIR (clean start).
    slurmctld -f "$dir/slurm.conf" -i >>"$dir/log/slurmctld.out" 2>&1 ||
        fail "slurmctld did not start"
    slurmd -f "$dir/slurm.conf" -N "$(hostname -s)" >>"$dir/log/slurmd.out" 2>&1 ||
        fail "slurmd did not start"

    export SLURM_CONF="$dir/slurm.conf"
    local timeout=${SLURM_TEST_TIMEOUT:-60} state=""
    local deadline=$((SECONDS + timeout))
    while [ $SECONDS -lt $deadline ]; do
        state=$(sinfo -h -N -o '%t' 2>/dev/null | head -n 1 || true)
        [ "$state" = idle ] && break
        for d in $DAEMONS; do
            [ -n "$(pid_of "$d")" ] || fail "$d exited while starting"
        done
        sleep 0.5
    done
    [ "$state" = idle ] ||
        fail "the node is not idle after ${timeout} s (sinfo: '${state:-no answer}')"
    echo "slurm_cluster.sh: cluster up in $((SECONDS - t0)) s; node idle; use:" >&2
    echo "  eval \"\$($0 env $dir)\"" >&2
}

case "$cmd" in
start) start ;;
env)
    dir=$(cd "$dir" && pwd)
    [ -f "$dir/slurm.conf" ] || die "no $dir/slurm.conf (run start first)"
    echo "export SLURM_CONF=$dir/slurm.conf"
    ;;
stop)
    [ -d "$dir" ] || die "no folder $dir"
    dir=$(cd "$dir" && pwd)
    stop_daemons
    echo "slurm_cluster.sh: stopped" >&2
    ;;
*) usage ;;
esac
