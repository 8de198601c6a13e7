#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, for tests and CI.
#
#   sudo scripts/slurm-cluster.sh up      # install (if needed), configure, start, wait for an idle node
#   sudo scripts/slurm-cluster.sh status  # daemons, sinfo, GPU gres of the node
#   sudo scripts/slurm-cluster.sh down    # stop what `up` started and remove what it wrote
#
# Exit status: 0 ok, 1 error, 2 usage, 3 packages missing and not installable (see die_install).
# To change LEGO_SLURM_* settings of a running cluster: `down`, then `up`.
#
# Works as root on Debian/Ubuntu, with or without an init system (containers, CI runners): the
# daemons are started directly, never through systemd.  `up` is idempotent (a second `up` finds the cluster
# running and returns at once); `down` is safe to run when nothing is up.
#
# What it touches:
#   - packages slurmctld, slurmd, slurm-client (what Debian's slurm-wlm metapackage depends on) and
#     munge, installed with apt-get if missing (left installed by `down`: ~10 s to reinstall);
#   - /etc/munge/munge.key (created only if missing, kept by `down`: munge needs one anyway);
#   - /etc/slurm/slurm.conf and /etc/slurm/gres.conf, written with a marker line.  An existing
#     slurm.conf without the marker (a real cluster's) is never overwritten; `down` deletes
#     only files that carry the marker;
#   - $LEGO_SLURM_DIR (default /tmp/lego-edit-slurm): state, spool, logs, pid files.  `down` removes it.
#
# Environment knobs:
#   LEGO_SLURM_DIR        state directory (default /tmp/lego-edit-slurm)
#   LEGO_SLURM_PARTITION  partition name (default "debug"; .test/slurm/config.yaml uses it)
#   LEGO_SLURM_GPUS       number of fake GPUs declared on the node (default 2; 0 disables gres)
#   LEGO_SLURM_GPU_TYPE   their type, the profile's gpu_model (default "fake"; empty: untyped)
#   LEGO_SLURM_TIMEOUT    seconds to wait for the node to become idle (default 60)
#
# Fake GPUs (Slurm 22.05.8, tried on a machine with no GPU):
#   - A gres.conf line with a count and NO File= (`NodeName=<n> Name=gpu Count=2`, with or without
#     `AutoDetect=off`) does NOT work for gres/gpu: slurmd drops it ("Removing file-less GPU
#     gpu:(null) from final GRES list", `_find_fileless_gres` in src/common/gres.c; only the gpu
#     plugin does this), registers 0 GPUs, and slurmctld sets the node to INVAL/DRAIN with
#     "gres/gpu count reported lower than configured (0 < 2)".  No job can then run at all.
#   - What works: give each fake GPU a File= that is a character device.  We make symlinks to
#     /dev/null ($LEGO_SLURM_DIR/dev/fakegpu0, fakegpu1, ...; no mknod needed) and declare
#     `File=$LEGO_SLURM_DIR/dev/fakegpu[0-N]`.  (Plain files are also counted but slurmd logs
#     "is not a valid character or block device" for each.)  The node then registers gres/gpu=N,
#     and jobs asking `--gpus=1` (what the Snakemake plugin sends for `gpu=1`) or `--gres=gpu:1`
#     are scheduled and run; inside the job Slurm sets CUDA_VISIBLE_DEVICES (and SLURM_JOB_GPUS in
#     the batch step, SLURM_GPUS_ON_NODE in job steps) to the index taken from the file name
#     (0, 1, ...).  Nothing opens the device: with TaskPlugin=task/none there is no cgroup device
#     fencing, and with no NVIDIA driver torch.cuda.is_available() stays False (checked with
#     CUDA_VISIBLE_DEVICES=0, torch 2.14.1+cu130), so the code still runs on CPU.
#   - The fake GPUs are typed (`Gres=gpu:fake:N`, gres.conf `Type=fake`), so both plugin forms work:
#     `--gpus=1` (rule resource gpu=1) and `--gpus=fake:1` (gpu_model: fake, as
#     .test/slurm/config.yaml sets it, the same code path as a real cluster's gpu_model).
#     LEGO_SLURM_GPU_TYPE= (empty) declares untyped ones.
set -euo pipefail

LEGO_SLURM_DIR=${LEGO_SLURM_DIR:-/tmp/lego-edit-slurm}
PARTITION=${LEGO_SLURM_PARTITION:-debug}
NGPUS=${LEGO_SLURM_GPUS:-2}
GPU_TYPE=${LEGO_SLURM_GPU_TYPE-fake}
WAIT_S=${LEGO_SLURM_TIMEOUT:-60}
CONF_DIR=/etc/slurm
MARKER="# written by lego-edit scripts/slurm-cluster.sh; removed by 'slurm-cluster.sh down'"

log() { printf '[slurm-cluster] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# Exit status 3: the packages cannot be installed here (no apt-get, no mirror).  tests/slurm_helpers.py
# skips the Slurm tests on it (fails them when CI=true); any other failure is a real error.
die_install() { log "ERROR: $*"; exit 3; }

need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages and starts daemons)"; }

# /proc rather than `kill -0`, so that `status` also works for a non-root user.
pid_alive() { [[ -s $1 ]] && [[ -d /proc/$(cat "$1") ]]; }

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null || die_install "apt-get not found: install ${missing[*]} by hand"
    log "installing ${missing[*]} (apt-get)"
    # No init system in containers/CI: keep the packages' maintainer scripts from starting
    # daemons with the stock config (policy-rc.d exit 101 = "action forbidden").  Only if the
    # machine has no policy-rc.d of its own, and removed again right after.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
    fi
    local rc=0
    {
        export DEBIAN_FRONTEND=noninteractive
        timeout 600 apt-get update -qq </dev/null || true
        # slurm-wlm (the metapackage) is slurmctld + slurmd + slurm-client; naming the three avoids
        # its Recommends (docs, sview and X libraries) even without --no-install-recommends.
        timeout 900 apt-get install -y -qq --no-install-recommends \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
            slurmctld slurmd slurm-client munge </dev/null
    } || rc=$?
    [[ $made_policy -eq 1 ]] && rm -f "$policy"
    [[ $rc -eq 0 ]] || die_install "apt-get install ${missing[*]} failed (rc=$rc)"
}

start_munge() {
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null; then
            mungekey --create --force --keyfile=/etc/munge/munge.key
        else
            dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
        fi
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
    if timeout 5 munge -n </dev/null 2>/dev/null | timeout 5 unmunge >/dev/null 2>&1; then
        return 0 # a munged is already serving (ours from a previous `up`, or the machine's)
    fi
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged --force
    # munged forks; remember its pid so that `down` stops only the one we started.
    local i
    for i in $(seq 50); do
        if [[ -s /run/munge/munged.pid ]]; then
            cp /run/munge/munged.pid "$LEGO_SLURM_DIR/munged.pid"
            break
        fi
        sleep 0.1
    done
    timeout 5 munge -n </dev/null | timeout 5 unmunge >/dev/null || die "munge does not work"
}

write_config() {
    local host
    host=$(hostname -s)
    if [[ -e $CONF_DIR/slurm.conf ]] && ! grep -qF "$MARKER" "$CONF_DIR/slurm.conf"; then
        die "$CONF_DIR/slurm.conf exists and was not written by this script; refusing to overwrite it"
    fi
    # Hardware as slurmd itself detects it, so the node is not drained for "Low RealMemory" or
    # a socket/core mismatch.  slurmd -C prints e.g.
    #   NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105
    local hw
    hw=$(timeout 20 slurmd -C | head -1 | sed -e 's/^NodeName=[^ ]* //')
    [[ $hw == *CPUs=* && $hw == *RealMemory=* ]] || die "could not read the hardware from 'slurmd -C': $hw"

    local gres_node="" gres_types="" i
    if [[ $NGPUS -gt 0 ]]; then
        gres_types="GresTypes=gpu"
        gres_node="Gres=gpu:${GPU_TYPE:+$GPU_TYPE:}$NGPUS"
        # Fake device files (see the header): gres/gpu drops GPUs that have no File=.
        rm -rf "$LEGO_SLURM_DIR/dev"
        mkdir -p "$LEGO_SLURM_DIR/dev"
        for ((i = 0; i < NGPUS; i++)); do ln -s /dev/null "$LEGO_SLURM_DIR/dev/fakegpu$i"; done
    fi

    mkdir -p "$CONF_DIR" "$LEGO_SLURM_DIR"/{ctld,d,log}
    cat >"$CONF_DIR/slurm.conf" <<EOF
$MARKER
# A one-node cluster: this host is the controller and the only compute node.
ClusterName=legoedit
# NodeAddr/SlurmctldHost on loopback: no DNS needed, nothing reachable from outside.
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# No cgroups in containers: track processes by parent pid, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# cons_tres is what understands --gpus (the plugin's gpu=N); CR_Core_Memory makes mem_mb count.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# No slurmdbd: sacct does not work, so the profile uses slurm-status-command: squeue.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Finished jobs stay visible to 'squeue --states=all' this long; the plugin polls at most every
# 180 s and falls back to sacct when MinJobAge < 3 x its first polling delay.
MinJobAge=600
# A node that was down (e.g. slurmd restarted) returns to service by itself.
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$LEGO_SLURM_DIR/ctld
SlurmdSpoolDir=$LEGO_SLURM_DIR/d
SlurmctldPidFile=$LEGO_SLURM_DIR/slurmctld.pid
SlurmdPidFile=$LEGO_SLURM_DIR/slurmd.pid
SlurmctldLogFile=$LEGO_SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$LEGO_SLURM_DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# Quick kills for scancel in tests.
KillWait=5
$gres_types
NodeName=$host NodeAddr=127.0.0.1 $hw $gres_node State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    if [[ $NGPUS -gt 0 ]]; then
        cat >"$CONF_DIR/gres.conf" <<EOF
$MARKER
# Fake GPUs.  File= is required: without it gres/gpu drops the GPUs ("Removing file-less GPU")
# and the node is drained.  The files are symlinks to /dev/null; nothing opens them.
# AutoDetect=off keeps slurmd from asking NVML for real devices.
AutoDetect=off
NodeName=$host Name=gpu ${GPU_TYPE:+Type=$GPU_TYPE }File=$LEGO_SLURM_DIR/dev/fakegpu[0-$((NGPUS - 1))]
EOF
    else
        rm -f "$CONF_DIR/gres.conf"
    fi
}

node_state() { timeout 10 sinfo -h -N -o '%T' 2>/dev/null | head -1; }

wait_idle() {
    local t0=$SECONDS state=""
    while ((SECONDS - t0 < WAIT_S)); do
        state=$(node_state || true)
        case $state in
            idle | mixed | allocated) log "node is $state after $((SECONDS - t0)) s"; return 0 ;;
            drain* | down*)
                # ReturnToService=2 should clear this; nudge it once.
                timeout 10 scontrol update NodeName="$(hostname -s)" State=RESUME 2>/dev/null || true ;;
        esac
        sleep 1
    done
    log "node state after ${WAIT_S}s: '${state:-none}'"
    tail -n 20 "$LEGO_SLURM_DIR"/log/*.log >&2 || true
    return 1
}

cmd_up() {
    need_root
    if pid_alive "$LEGO_SLURM_DIR/slurmctld.pid" && pid_alive "$LEGO_SLURM_DIR/slurmd.pid" &&
        grep -qF "$MARKER" "$CONF_DIR/slurm.conf" 2>/dev/null; then
        log "already up"
        wait_idle
        return
    fi
    install_packages
    mkdir -p "$LEGO_SLURM_DIR"
    # `down` deletes $LEGO_SLURM_DIR only if this stamp is in it (a mistyped LEGO_SLURM_DIR=/ stays safe).
    : >"$LEGO_SLURM_DIR/.lego-edit-slurm"
    start_munge
    write_config
    # A half-started earlier run: stop its daemons before starting fresh ones.
    stop_daemons
    log "starting slurmctld and slurmd"
    # -c: start with a clean controller state (no jobs from an earlier run).
    slurmctld -c
    slurmd
    wait_idle || die "the node did not become idle (logs in $LEGO_SLURM_DIR/log)"
}

stop_pidfile() { # name pidfile
    local pid
    pid_alive "$2" || return 0
    pid=$(cat "$2")
    log "stopping $1 ($pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
}

stop_daemons() {
    stop_pidfile slurmd "$LEGO_SLURM_DIR/slurmd.pid"
    stop_pidfile slurmctld "$LEGO_SLURM_DIR/slurmctld.pid"
}

cmd_down() {
    need_root
    if pid_alive "$LEGO_SLURM_DIR/slurmctld.pid"; then
        # Cancel whatever is still queued or running, so no job outlives the cluster.
        # (Killing slurmd alone would leave the jobs' slurmstepd processes running.)  All users'
        # jobs: the tests may run as a non-root user against a cluster started with sudo.
        local ids
        ids=$(timeout 10 squeue -h -o %i 2>/dev/null || true)
        if [[ -n $ids ]]; then
            # shellcheck disable=SC2086  # one argument per job id
            timeout 10 scancel --full --quiet $ids 2>/dev/null || true
        fi
        local i
        for i in $(seq 30); do
            [[ -z $(timeout 10 squeue -h -t RUNNING,COMPLETING,PENDING -o %i 2>/dev/null) ]] && break
            sleep 0.5
        done
    fi
    stop_daemons
    stop_pidfile munged "$LEGO_SLURM_DIR/munged.pid"
    local f
    for f in "$CONF_DIR/slurm.conf" "$CONF_DIR/gres.conf"; do
        if [[ -e $f ]] && grep -qF "$MARKER" "$f"; then rm -f "$f"; fi
    done
    if [[ -e $LEGO_SLURM_DIR/.lego-edit-slurm ]]; then
        rm -rf "$LEGO_SLURM_DIR"
    fi
    log "down"
}

cmd_status() {
    local ok=0
    pid_alive "$LEGO_SLURM_DIR/munged.pid" && echo "munged: running ($(cat "$LEGO_SLURM_DIR/munged.pid"))" ||
        echo "munged: not started by this script"
    pid_alive "$LEGO_SLURM_DIR/slurmctld.pid" && echo "slurmctld: running ($(cat "$LEGO_SLURM_DIR/slurmctld.pid"))" ||
        { echo "slurmctld: not running"; ok=1; }
    pid_alive "$LEGO_SLURM_DIR/slurmd.pid" && echo "slurmd: running ($(cat "$LEGO_SLURM_DIR/slurmd.pid"))" ||
        { echo "slurmd: not running"; ok=1; }
    if [[ $ok -eq 0 ]]; then
        timeout 10 sinfo -N -o '%N %P %T %c %m %G' || ok=1
    fi
    return $ok
}

case ${1:-} in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
