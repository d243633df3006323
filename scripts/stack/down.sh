#!/usr/bin/env bash
# Summary: stop every service of the local KDL stack started by scripts/stack/up.sh --dir DIR.
# Usage: scripts/stack/down.sh --dir DIR
#
# Each service's process group gets TERM (PostgreSQL: INT, its fast shutdown), then KILL after 10 s.
# State under DIR stays (remove DIR yourself); exit 1 if a process of the stack is still alive.
set -Eeuo pipefail
umask 077

# shellcheck source=scripts/stack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STACK_DIR=""

# parse_args: --dir DIR (required).
parse_args() {
  while (($#)); do
    case "$1" in
      --dir)
        [[ -n "${2:-}" ]] || STACK_DIE_CODE=64 die "--dir needs a value"
        STACK_DIR=$2
        shift 2
        ;;
      --dir=*) STACK_DIR=${1#--dir=}; shift ;;
      -h | --help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
      *) STACK_DIE_CODE=64 die "unknown argument $1 (see --help)" ;;
    esac
  done
  [[ -n "$STACK_DIR" ]] || STACK_DIE_CODE=64 die "--dir DIR is required"
  [[ -d "$STACK_DIR" ]] || STACK_DIE_CODE=66 die "no such stack directory: $STACK_DIR"
}

main() {
  parse_args "$@"
  local pids=() pidfile
  for pidfile in "$STACK_DIR"/pids/*.pid; do
    [[ -f "$pidfile" ]] && pids+=("$(cat "$pidfile")")
  done
  stop_service postgres 10 INT
  stop_all
  local pid
  for pid in "${pids[@]}"; do
    if [[ "$pid" =~ ^[0-9]+$ ]] && group_alive "$pid"; then
      die "process group $pid of the stack is still alive"
    fi
  done
  rm -f "$STACK_DIR/stack.env"
  say "down: stopped ${#pids[@]} services in $STACK_DIR"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
