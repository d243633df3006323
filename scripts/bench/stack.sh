#!/usr/bin/env bash
# Summary: issue 2's local stack: wall time of up.sh --seed tiny (target < 30 s) and down.sh, leftovers
#          after down, and a benchmark-size seed (default 2GiB): time per step and bytes per component.
# Usage: scripts/bench/stack.sh      (run by scripts/bench.sh; the 2GiB seed takes several minutes)
#
# KDL_BENCH_SIZE: the large seed's size (default 2GiB; `skip` leaves it out).
set -Eeuo pipefail
umask 077

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DIRS=()
ROWS=()

# cleanup: stops and removes every stack started here.
cleanup() {
  local dir
  for dir in "${DIRS[@]}"; do
    "$ROOT/scripts/stack/down.sh" --dir "$dir" >/dev/null 2>&1 || true
    rm -rf "$dir"
  done
}

# new_dir: a stack folder under /tmp (traversable by the postgres user); prints its path.
new_dir() {
  local dir
  dir=$(mktemp -d /tmp/kdl-bench-stack.XXXXXX)
  chmod 711 "$dir"
  echo "$dir"
}

# seconds_of CMD...: runs CMD quietly, prints its wall time in seconds (2 decimals); fails with CMD.
seconds_of() {
  local start end
  start=$(date +%s.%N)
  "$@" >/dev/null 2>&1
  end=$(date +%s.%N)
  awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", e - s }'
}

# leftovers GROUPS: live processes still in the comma-separated process groups.
leftovers() {
  local groups=$1
  [[ -n "$groups" ]] || { echo 0; return; }
  ps -e -o pgid=,stat= | awk -v gs="$groups" 'BEGIN { n = split(gs, g, ","); for (i = 1; i <= n; i++) want[g[i]] = 1 }
    want[$1] && $2 !~ /^Z/ { c++ } END { print c + 0 }'
}

# bench_tiny: two up/down rounds with --seed tiny.
bench_tiny() {
  local round dir up down groups
  for round in 1 2; do
    dir=$(new_dir)
    DIRS+=("$dir")
    up=$(seconds_of "$ROOT/scripts/stack/up.sh" --dir "$dir" --seed tiny)
    groups=$(cat "$dir"/pids/*.pid | paste -sd, -)
    down=$(seconds_of "$ROOT/scripts/stack/down.sh" --dir "$dir")
    ROWS+=("| up.sh --seed tiny, round $round | ${up} s | < 30 s | $(awk -v u="$up" 'BEGIN { print (u < 30) ? "met" : "MISSED" }') |")
    ROWS+=("| down.sh, round $round | ${down} s | (none) | processes left: $(leftovers "$groups") |")
  done
}

# bench_large SIZE: one up.sh --seed SIZE; time per seed step and bytes on disk per component.
bench_large() {
  local size=$1 dir up
  dir=$(new_dir)
  DIRS+=("$dir")
  up=$(seconds_of "$ROOT/scripts/stack/up.sh" --dir "$dir" --seed "$size")
  ROWS+=("| up.sh --seed $size | ${up} s | (none; CI uses tiny) | |")
  local line step secs
  while read -r line; do
    step=$(sed -E 's/.*step=([^ ]+).*/\1/' <<<"$line")
    secs=$(sed -E 's/.*seconds=([0-9.]+).*/\1/' <<<"$line")
    ROWS+=("| seed step $step | ${secs} s | | |")
  done < <(grep -E '^seed: step=' "$dir/logs/seed.log")
  local component bytes total=0
  for component in gitea-data mlflow pg mongo k8s; do
    bytes=$(du -sb "$dir/$component" | cut -f1)
    total=$((total + bytes))
    ROWS+=("| bytes on disk: $component | $(numfmt --to=iec-i --suffix=B "$bytes") | | |")
  done
  ROWS+=("| bytes on disk: all components | $(numfmt --to=iec-i --suffix=B "$total") | ~$size (Postgres adds its ~40MiB empty cluster) | |")
  local objects
  objects=$("$ROOT/.venv/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["k8s"]["total"])' "$dir/seed-summary.json")
  ROWS+=("| Kubernetes objects in kdl | $objects | 2,000 | |")
}

main() {
  trap cleanup EXIT
  bench_tiny
  local size=${KDL_BENCH_SIZE:-2GiB}
  [[ "$size" == skip ]] || bench_large "$size"
  echo "| measure | figure | target | note |"
  echo "|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
