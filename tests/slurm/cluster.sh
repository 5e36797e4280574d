#!/usr/bin/env bash
# A real single-node SLURM cluster for the test suite, from Debian's packages:
# munge, slurmctld, slurmd, slurm-client, and slurmdbd with MariaDB, so that the SLURM
# executor plugin's default status path (sacct) is the one tested, as on real sites.
#
#   tests/slurm/cluster.sh up     # install (if needed), configure, start; prints the SLURM_CONF to export
#   tests/slurm/cluster.sh down   # stop every daemon it started
#
# Needs root and no systemd (daemons are started by hand); for a throwaway test machine: it
# writes /etc/slurm/{slurm,slurmdbd}.conf (the default place, where job steps' srun looks too).
# State and logs live in $LIONFLOW_SLURM_DIR.
set -euo pipefail
DIR=${LIONFLOW_SLURM_DIR:-/tmp/lionflow-slurm}
ETC=/etc/slurm
CLUSTER=lionflow
PARTITION=${LIONFLOW_SLURM_PARTITION:-debug}
NODE=$(hostname -s)

log() { echo "[slurm-cluster] $*" >&2; }

install() {
  local missing=()
  for cmd in munged slurmctld slurmd sbatch slurmdbd mariadbd; do command -v "$cmd" >/dev/null || missing+=("$cmd"); done
  [ ${#missing[@]} -eq 0 ] && return
  log "installing Debian packages (missing: ${missing[*]})"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends munge slurmctld slurmd slurm-client slurmdbd mariadb-server >/dev/null
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2; shift 2
  for _ in $(seq $((seconds * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  log "timed out waiting for $what"; return 1
}

up() {
  install
  mkdir -p "$DIR"/{state,spool,log,run,mysql} "$ETC"
  getent hosts "$NODE" >/dev/null || echo "127.0.0.1 $NODE" >>/etc/hosts  # NodeName must resolve

  # munge: authentication between SLURM daemons and clients
  mkdir -p /run/munge && chown munge:munge /run/munge
  [ -f /etc/munge/munge.key ] || mungekey -c >/dev/null
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  pgrep -x munged >/dev/null || runuser -u munge -- munged
  wait_for 10 munged munge -n

  # MariaDB + slurmdbd: job accounting, what sacct reads
  if ! pgrep -x mariadbd >/dev/null; then
    [ -d "$DIR/mysql/mysql" ] || mariadb-install-db --user=mysql --datadir="$DIR/mysql" >/dev/null
    chown -R mysql:mysql "$DIR/mysql"
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    (mariadbd --user=mysql --datadir="$DIR/mysql" --bind-address=127.0.0.1 --socket=/run/mysqld/mysqld.sock \
      >"$DIR/log/mariadb.log" 2>&1 &)
    wait_for 30 mariadb mariadb -uroot -e "SELECT 1"
  fi
  mariadb -uroot -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

  cat >"$ETC/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
CONF
  chmod 600 "$ETC/slurmdbd.conf"

  cat >"$ETC/slurm.conf" <<CONF
ClusterName=$CLUSTER
SlurmctldHost=$NODE
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
MinJobAge=600
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoreFlags=job_comment
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
NodeName=$NODE CPUs=$(nproc) RealMemory=20000 State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
  export SLURM_CONF="$ETC/slurm.conf"

  pgrep -x slurmdbd >/dev/null || slurmdbd
  wait_for 30 slurmdbd sacctmgr -i list cluster
  sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
  pgrep -x slurmctld >/dev/null || slurmctld -f "$SLURM_CONF"
  pgrep -x slurmd >/dev/null || slurmd -f "$SLURM_CONF"
  wait_for 60 "node idle" bash -c "sinfo -h -o %T | grep -qx idle"
  log "up: partition $PARTITION on $NODE; export SLURM_CONF=$SLURM_CONF"
  echo "export SLURM_CONF=$SLURM_CONF"
}

down() {
  for daemon in slurmd slurmctld slurmdbd mariadbd munged; do
    pkill -x "$daemon" 2>/dev/null || true
    wait_for 30 "$daemon to stop" bash -c "! pgrep -x $daemon" || pkill -9 -x "$daemon" || true
  done
  log "down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
