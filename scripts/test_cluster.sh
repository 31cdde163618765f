#!/usr/bin/env bash
# `make test-cluster`: the SLURM profile on a real one-node SLURM cluster started on this machine.
#
# Installs the distribution's packages if missing (Debian/Ubuntu: slurm-wlm, slurmdbd, munge, mariadb-server;
# needs root), starts munged, a private MariaDB, slurmdbd (the executor polls `sacct`), slurmctld and slurmd,
# all with their state under a scratch folder, runs the `tiny` profile through `profiles/slurm` (every job
# submitted with sbatch, each running the workflow's worker processes on the node), checks the tables and
# that SLURM accounted every job, and stops every daemon it started, whatever happens.
# Not part of `make test`: it installs system packages and starts daemons.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
WORK=$(mktemp -d /tmp/vitcompress-cluster.XXXXXX)
NODE=$(hostname -s)
CLUSTER=vitcompress
DB_PORT=${DB_PORT:-3399}
export SLURM_CONF=$WORK/etc/slurm.conf
SYSTEM_CONF=/etc/slurm/slurm.conf  # where a job's srun looks (slurmd does not pass SLURM_CONF on)
LINKED=""
PIDS=()

log() { echo "[test-cluster] $*"; }

stop_all() {
    local status=$?
    log "stopping the daemons this run started"
    command -v scancel >/dev/null && scancel --user "$(id -un)" 2>/dev/null || true
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        local pidfile=${PIDS[i]}
        if [[ -s $pidfile ]]; then
            local pid
            pid=$(cat "$pidfile")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            kill -9 "$pid" 2>/dev/null || true
        fi
    done
    [[ -n $LINKED ]] && rm -f "$SYSTEM_CONF"
    if [[ $status -eq 0 ]]; then
        rm -rf "$WORK"
    else
        log "FAILED (exit $status); daemon logs and the workflow copy are kept in $WORK"
    fi
    exit "$status"
}
trap stop_all EXIT INT TERM

# -- packages ----------------------------------------------------------------------------------------
missing=()
for cmd in slurmctld slurmd slurmdbd munged mariadbd mariadb-install-db sbatch sacct; do
    command -v "$cmd" >/dev/null || missing+=("$cmd")
done
if ((${#missing[@]})); then
    log "installing SLURM, munge and MariaDB (missing: ${missing[*]})"
    [[ $(id -u) -eq 0 ]] || { log "needs root to install packages (or install slurm-wlm slurmdbd munge mariadb-server)"; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        slurm-wlm slurmdbd munge mariadb-server mariadb-client >/dev/null
fi
[[ $(id -u) -eq 0 ]] || { log "the daemons run as root in this one-node setup: run it as root"; exit 1; }
mkdir -p "$WORK"/{etc,state,spool,log,run,db}

# -- munge -------------------------------------------------------------------------------------------
if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating a munge key"
    mkdir -p /etc/munge
    (command -v mungekey >/dev/null && mungekey --create --keyfile=/etc/munge/munge.key) ||
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown munge:munge /etc/munge/munge.key 2>/dev/null || true
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null || true
if ! munge -n </dev/null >/dev/null 2>&1; then
    log "starting munged"
    runuser -u munge -- munged --force --pid-file="$WORK/run/munged.pid" 2>/dev/null ||
        munged --force --pid-file="$WORK/run/munged.pid"
    PIDS+=("$WORK/run/munged.pid")
    for _ in $(seq 50); do munge -n </dev/null >/dev/null 2>&1 && break; sleep 0.2; done
fi

# -- MariaDB (private instance, TCP on 127.0.0.1:$DB_PORT) -------------------------------------------------
log "starting MariaDB for slurmdbd"
mariadb-install-db --user=root --datadir="$WORK/db" --auth-root-authentication-method=normal >"$WORK/log/mariadb-install.log" 2>&1
mariadbd --user=root --datadir="$WORK/db" --socket="$WORK/run/mysql.sock" --port="$DB_PORT" --bind-address=127.0.0.1 \
    --pid-file="$WORK/run/mariadb.pid" --log-error="$WORK/log/mariadb.log" &
PIDS+=("$WORK/run/mariadb.pid")
for _ in $(seq 100); do mariadb --socket="$WORK/run/mysql.sock" -uroot -e "select 1" >/dev/null 2>&1 && break; sleep 0.3; done
mariadb --socket="$WORK/run/mysql.sock" -uroot <<'SQL'
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL

# -- SLURM -------------------------------------------------------------------------------------------
CPUS=$(nproc)
MEM=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))
cat >"$WORK/etc/slurm.conf" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/run/slurmctld.pid
SlurmdPidFile=$WORK/run/slurmd.pid
SlurmctldLogFile=$WORK/log/slurmctld.log
SlurmdLogFile=$WORK/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$NODE CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
cat >"$WORK/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
LogFile=$WORK/log/slurmdbd.log
PidFile=$WORK/run/slurmdbd.pid
EOF
chmod 600 "$WORK/etc/slurmdbd.conf"
if [[ -e $SYSTEM_CONF || -L $SYSTEM_CONF ]]; then
    log "$SYSTEM_CONF exists: this machine has a SLURM configured already; run test-cluster on one without"
    exit 1
fi
mkdir -p "$(dirname "$SYSTEM_CONF")" && ln -s "$SLURM_CONF" "$SYSTEM_CONF" && LINKED=1

log "starting slurmdbd, slurmctld, slurmd (cluster $CLUSTER, node $NODE: $CPUS CPUs, $MEM MB)"
slurmdbd
PIDS+=("$WORK/run/slurmdbd.pid")
for _ in $(seq 100); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.3; done
sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
sacctmgr -i add account vitcompress Cluster="$CLUSTER" >/dev/null 2>&1 || true
sacctmgr -i add user "$(id -un)" Account=vitcompress Cluster="$CLUSTER" >/dev/null 2>&1 || true
slurmctld
PIDS+=("$WORK/run/slurmctld.pid")
slurmd
PIDS+=("$WORK/run/slurmd.pid")
for _ in $(seq 100); do [[ $(sinfo -h -N -o %t 2>/dev/null) == idle* ]] && break; sleep 0.5; done
sinfo

# -- the workflow through profiles/slurm ---------------------------------------------------------------
log "running the tiny profile through profiles/slurm"
mkdir -p "$WORK/wf"
for item in Snakefile params.yaml dvc.yaml .dvcignore rules scripts envs profiles; do
    cp -r "$ROOT/$item" "$WORK/wf/"
done
cd "$WORK/wf"
export PATH="$VENV/bin:$PATH"
snakemake --profile profiles/slurm --config profile=tiny device=cpu \
    --default-resources mem_mb=2000 runtime=30 slurm_account=vitcompress \
    --set-resources prepare_data:mem_mb=2000 --jobs 4 --latency-wait 5

# -- checks ------------------------------------------------------------------------------------------
test -s reports/tables.md || { log "no tables"; exit 1; }
rows=$(grep -c '^| ' reports/tables.md || true)
want=$("$VENV/bin/python" -c "from vitcompress.config import load_params; print(len(load_params('params.yaml', {'profile': 'tiny'}).rows))")
(( rows >= want + 1 )) || { log "tables.md has $rows table lines, expected the tiny profile's $want rows"; exit 1; }
# the accounting database is this run's own (fresh MariaDB): every job in it was submitted by this run
submitted=$(sacct -n -X -o JobID,State --starttime=now-2hours | grep -c COMPLETED || true)
(( submitted > 0 )) || { log "sacct accounts no completed job"; exit 1; }
failed=$(sacct -n -X -o State --starttime=now-2hours | grep -cv -E "COMPLETED|^\s*$" || true)
(( failed == 0 )) || { log "$failed SLURM job(s) did not complete"; sacct -X --starttime=now-2hours; exit 1; }
log "OK: $submitted jobs completed on SLURM; reports/tables.md has the tiny profile's $want rows"
