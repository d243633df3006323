#!/usr/bin/env bash
# Summary: helpers shared by scripts/stack/up.sh and down.sh (sourced, not run).
# Usage: source scripts/stack/lib.sh
#
# Every service the stack starts is a process-group leader (setsid) whose pid is
# recorded in $STACK_DIR/pids/<name>.pid; stop_service signals that group only.

STACK_LIB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STACK_VENV="$STACK_LIB_ROOT/.venv"
STACK_PY="$STACK_VENV/bin/python"

# say MESSAGE...: one logfmt line on stderr.
say() { printf 'stack: %s\n' "$*" >&2; }

# die MESSAGE...: one clear line on stderr, exit 1 (callers' EXIT traps clean up).
die() {
  printf 'stack: error: %s\n' "$*" >&2
  exit "${STACK_DIE_CODE:-1}"
}

# free_port: prints a TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
  "$STACK_PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_port PORT SECONDS NAME: waits until 127.0.0.1:PORT accepts connections, or dies.
wait_port() {
  local port=$1 seconds=$2 name=$3 deadline
  deadline=$((SECONDS + seconds))
  until (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      die "$name did not listen on 127.0.0.1:$port within ${seconds}s (log: $STACK_DIR/logs/$name.log)"
    fi
    if ! service_alive "$name"; then
      die "$name exited while starting (log: $STACK_DIR/logs/$name.log): $(tail -n 3 "$STACK_DIR/logs/$name.log" 2>/dev/null | tr '\n' ' ')"
    fi
    sleep 0.1
  done
}

# start_service NAME CMD...: runs CMD in its own session with output to logs/NAME.log; records its pid.
start_service() {
  local name=$1
  shift
  mkdir -p "$STACK_DIR/pids" "$STACK_DIR/logs"
  setsid "$@" </dev/null >>"$STACK_DIR/logs/$name.log" 2>&1 &
  echo $! >"$STACK_DIR/pids/$name.pid"
}

# service_alive NAME: true when NAME's recorded process still runs.
service_alive() {
  local pid
  pid=$(cat "$STACK_DIR/pids/$1.pid" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && group_alive "$pid"
}

# group_alive PGID: true while a process of group PGID runs (zombies waiting for a slow reaper do not count).
group_alive() {
  ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}

# stop_service NAME [SECONDS] [SIGNAL]: SIGNAL (default TERM) to NAME's process group, KILL after
# SECONDS (default 10); forgets the pid.
stop_service() {
  local name=$1 seconds=${2:-10} signal=${3:-TERM} pidfile pid deadline
  pidfile="$STACK_DIR/pids/$name.pid"
  [[ -f "$pidfile" ]] || return 0
  pid=$(cat "$pidfile")
  if [[ "$pid" =~ ^[0-9]+$ ]] && group_alive "$pid"; then
    kill "-$signal" -- "-$pid" 2>/dev/null || true
    deadline=$((SECONDS + seconds))
    while group_alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
    if group_alive "$pid"; then
      say "service=$name did not stop on $signal; sending KILL"
      kill -KILL -- "-$pid" 2>/dev/null || true
      sleep 0.2
    fi
  fi
  rm -f "$pidfile"
}

# stop_all: stops every recorded service, newest first.
stop_all() {
  local pidfile name
  [[ -d "$STACK_DIR/pids" ]] || return 0
  while IFS= read -r pidfile; do
    name=$(basename "$pidfile" .pid)
    stop_service "$name"
  done < <(ls -t "$STACK_DIR"/pids/*.pid 2>/dev/null)
}
