#!/usr/bin/env bash
# stop-local-slurm.sh - stop what tests/slurm/start-local-slurm.sh started.
#
# Only processes named in the pid files under $SLURM_LOCAL_BASE/run are stopped, and only
# if the process still has the expected command name (no stale pid is ever signalled):
#   1. cancel all jobs if slurmctld is up (scancel --full, best effort) and wait for them
#   2. SIGTERM slurmd (both nodes) and slurmctld, SIGKILL after a timeout
#   3. the same for munged, but only if the start script started it
# Idempotent: with nothing running it only removes stale pid files. Must run as root.
#
# Environment:
#   SLURM_LOCAL_BASE          pid/log/state directory            (default /tmp/parsl-es-slurm)
#   SLURM_LOCAL_STOP_TIMEOUT  seconds before SIGKILL per stage   (default 15)
set -uo pipefail

BASE=${SLURM_LOCAL_BASE:-/tmp/parsl-es-slurm}
TIMEOUT=${SLURM_LOCAL_STOP_TIMEOUT:-15}
RUN=$BASE/run

T0=${EPOCHREALTIME/./}
elapsed() { local now=${EPOCHREALTIME/./}; printf '%d.%01d' $(((now - T0) / 1000000)) $(((now - T0) / 100000 % 10)); }
log() { printf '[stop-local-slurm %5ss] %s\n' "$(elapsed)" "$*"; }

[[ $(id -u) -eq 0 ]] || {
  echo "stop-local-slurm: must run as root" >&2
  exit 1
}
[[ -d $RUN ]] || {
  log "nothing to stop ($RUN does not exist)"
  exit 0
}

# pid_of PIDFILE NAME: print the pid if the file names a live process whose command is NAME
pid_of() {
  local pid
  [[ -s $1 ]] || return 1
  pid=$(<"$1")
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/comm ]] || return 1
  [[ $(</proc/"$pid"/comm) == "$2" ]] || return 1
  echo "$pid"
}

# still_running PID...: those of the pids that are still alive (a zombie waiting for
# init to reap it has exited)
still_running() {
  local pid stat
  for pid in "$@"; do
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    stat=${stat##*) }
    [[ ${stat%% *} == Z ]] || echo "$pid"
  done
  return 0
}

# stop LABEL NAME PIDFILE...: SIGTERM the processes, SIGKILL them after $TIMEOUT s,
# remove the pid files
stop() {
  local label=$1 name=$2 f pid
  shift 2
  local pids=() files=() left=()
  for f in "$@"; do
    [[ -e $f ]] || continue
    files+=("$f")
    if pid=$(pid_of "$f" "$name"); then
      pids+=("$pid")
    elif [[ -s $f ]]; then
      log "$label: $f names pid $(<"$f"), which is not a running $name; not signalled"
    fi
  done
  if ((${#pids[@]})); then
    kill -TERM "${pids[@]}" 2>/dev/null
    local deadline=$((${EPOCHREALTIME/./} + TIMEOUT * 1000000))
    mapfile -t left < <(still_running "${pids[@]}")
    while ((${#left[@]})) && ((${EPOCHREALTIME/./} < deadline)); do
      sleep 0.1
      mapfile -t left < <(still_running "${pids[@]}")
    done
    if ((${#left[@]})); then
      log "$label: pid ${left[*]} still running ${TIMEOUT}s after SIGTERM: SIGKILL"
      kill -KILL "${left[@]}" 2>/dev/null
      sleep 0.2
    fi
    log "stopped $label (pid ${pids[*]})"
  fi
  ((${#files[@]})) && rm -f "${files[@]}"
  return 0
}

# ------------------------------------------------------------------ 1. cancel jobs
if pid_of "$RUN/slurmctld.pid" slurmctld >/dev/null; then
  mapfile -t jobs < <(timeout 10 squeue -h -o %A 2>/dev/null)
  if ((${#jobs[@]})); then
    log "cancelling jobs: ${jobs[*]}"
    timeout 10 scancel --full "${jobs[@]}" 2>/dev/null || log "scancel failed (ignored)"
    deadline=$((${EPOCHREALTIME/./} + TIMEOUT * 1000000))
    while [[ -n $(timeout 10 squeue -h -o %A 2>/dev/null) ]] && ((${EPOCHREALTIME/./} < deadline)); do
      sleep 0.2
    done
    remaining=$(timeout 10 squeue -h -o '%A:%T' 2>/dev/null | paste -sd' ' -)
    [[ -z $remaining ]] || log "jobs still listed after ${TIMEOUT}s (ignored): $remaining"
  fi
fi

# ------------------------------------------------------------------ 2. slurm daemons
shopt -s nullglob
stop "slurmd" slurmd "$RUN"/slurmd-*.pid
stop "slurmctld" slurmctld "$RUN/slurmctld.pid"

# job steps whose slurmd is gone (only if jobs could not be cancelled): report, do not kill
mapfile -t steps < <(pgrep -x slurmstepd)
orphans=$(still_running "${steps[@]}" | paste -sd' ' -)
[[ -z $orphans ]] || log "warning: slurmstepd still running (pid $orphans); not ours to kill"

# ------------------------------------------------------------------ 3. munged, if ours
# start-local-slurm.sh writes $RUN/munged.pid only for a munged it started itself.
stop "munged" munged "$RUN/munged.pid"

log "done"
exit 0
