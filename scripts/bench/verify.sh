#!/usr/bin/env bash
# Summary: measure restore.sh on a set made by backup.sh: `verify latest` without and with an identity,
#          with the scratch-database check, and a restore of every component into fresh targets; wall
#          time, peak RSS and peak temporary disk, as a markdown table against the design's bounds.
# Usage: scripts/bench/verify.sh     (run by scripts/bench.sh)
#
# KDL_BIN_DIR: the release helpers (default .build/release). KDL_STACK_ENV: a running local stack;
# otherwise one is started with --seed ${KDL_BENCH_SEED:-small} and stopped at the end.
# Issues 8 and 11 set no figures; the bounds are the design's: every object read once per check (bytes
# read = the set's size), no process above 64 MiB RSS (issue 7's bound), and temporary disk no larger
# than the largest MLflow database plus 1 MiB of manifests and logs (verify stages one database at a
# time for PRAGMA integrity_check). Peak RSS is the largest VmHWM in the run's process tree (the
# mongorestore test double included; its name is shown), sampled every 0.1 s, as is TMPDIR's size.
set -Eeuo pipefail
umask 077

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# measure NAME DISK_DIR CMD... (and PY, WORK) from the backup bench, which is sourceable.
# shellcheck source=scripts/bench/backup.sh
source "$ROOT/scripts/bench/backup.sh"
BIN_DIR=${KDL_BIN_DIR:-$ROOT/.build/release}
# Not STACK_DIR: stack.env sets that one, and only a stack started here may be stopped.
OWN_STACK=""
WORK=""
ROLE=""

cleanup() {
  if [[ -n "$ROLE" ]]; then
    PGUSER=$STACK_PG_SUPERUSER PGPASSWORD=$STACK_PG_SUPERUSER_PASSWORD psql -X -q -d postgres \
      -c "DROP DATABASE IF EXISTS bench_restored WITH (FORCE)" -c "DROP ROLE IF EXISTS $ROLE" >/dev/null 2>&1 || true
  fi
  if [[ -n "$OWN_STACK" ]]; then
    "$ROOT/scripts/stack/down.sh" --dir "$OWN_STACK" >/dev/null 2>&1 || true
    rm -rf "$OWN_STACK"
  fi
  if [[ -n "$WORK" ]]; then rm -rf "$WORK"; fi
}

# run_measured NAME CMD...: CMD with TMPDIR=$WORK/tmp-NAME through bench/backup.sh's measure (process
# tree VmHWM and TMPDIR sampled every 0.1 s); prints "seconds status peak_rss_kib peak_tmp_bytes process".
run_measured() {
  local name=$1
  shift
  mkdir -p "$WORK/tmp-$name"
  TMPDIR="$WORK/tmp-$name" measure "$name" "$WORK/tmp-$name" "$@"
  # A failed run's own error lines (not its logfmt progress), for the note under the table.
  if [[ -s "$WORK/$name.json.log" ]] && grep -qv '^ts=' "$WORK/$name.json.log"; then
    grep -v '^ts=' "$WORK/$name.json.log" | tail -n 3 >&2
  fi
  jq -r '"\(.seconds * 100 | round / 100) \(.status) \(.peak_rss_kib) \(.peak_disk_bytes) \(.peak_rss_process | gsub(" "; "_"))"' "$WORK/$name.json"
}

mib() {
  awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'
}

main() {
  [[ -x "$BIN_DIR/s3-get" ]] || { echo "verify bench: no helpers in $BIN_DIR (swift build -c release)" >&2; exit 66; }
  WORK=$(mktemp -d /tmp/kdl-bench-verify.XXXXXX)
  trap cleanup EXIT
  local env_file=${KDL_STACK_ENV:-}
  if [[ -z "$env_file" ]]; then
    OWN_STACK=$(mktemp -d /tmp/kdl-bench-stack.XXXXXX)
    "$ROOT/scripts/stack/up.sh" --dir "$OWN_STACK" --seed "${KDL_BENCH_SEED:-small}" >&2
    env_file="$OWN_STACK/stack.env"
  fi
  set -a
  # shellcheck source=/dev/null
  source "$env_file"
  set +a
  export PATH="$BIN_DIR:$STACK_BIN_DIR:$PATH" BACKUP_S3_PREFIX="bench-verify-$$-$RANDOM" BACKUP_KEEP_LAST=0
  unset BACKUP_ID
  age-keygen -o "$WORK/identity.txt" 2>/dev/null
  BACKUP_AGE_RECIPIENTS=$(age-keygen -y "$WORK/identity.txt")
  export BACKUP_AGE_RECIPIENTS
  "$ROOT/backup/backup.sh" 2>"$WORK/backup.err" || { tail -n 5 "$WORK/backup.err" >&2; exit 1; }
  local set_bytes largest_db
  set_bytes=$("$ROOT/backup/restore.sh" show latest --json 2>/dev/null | jq '[.components[].objects[].bytes] | add')
  largest_db=$(find "$MLFLOW_ROOT" -name mlflow.db -printf '%s\n' | sort -n | tail -n1)

  ROLE="bench_restorer_$$"
  PGUSER=$STACK_PG_SUPERUSER PGPASSWORD=$STACK_PG_SUPERUSER_PASSWORD psql -X -q -d postgres \
    -c "CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD 'bench-$$'" >/dev/null
  mkdir -p "$WORK/stub" "$WORK/data" "$WORK/mlflow"
  printf '#!/bin/sh\ncat >/dev/null\n' >"$WORK/stub/kubectl"
  chmod 755 "$WORK/stub/kubectl"

  local rows=() line
  line=$(run_measured verify "$ROOT/backup/restore.sh" verify latest)
  rows+=("verify latest (no identity)|$line")
  line=$(run_measured verify-id "$ROOT/backup/restore.sh" verify latest --identity "$WORK/identity.txt")
  rows+=("verify latest --identity|$line")
  line=$(PGUSER=$ROLE PGPASSWORD="bench-$$" BACKUP_VERIFY_SCRATCH_PGDATABASE=bench_scratch \
    run_measured verify-scratch "$ROOT/backup/restore.sh" verify latest --identity "$WORK/identity.txt")
  rows+=("verify latest --identity + scratch database|$line")
  line=$(PGUSER=$ROLE PGPASSWORD="bench-$$" PGDATABASE=bench_restored GITEA_DATA_DIR="$WORK/data" MLFLOW_ROOT="$WORK/mlflow" \
    PATH="$WORK/stub:$PATH" run_measured restore-all "$ROOT/backup/restore.sh" restore all latest --identity "$WORK/identity.txt" --yes)
  rows+=("restore all into fresh targets (kubectl discarded)|$line")

  echo "set: $(mib "$set_bytes") MiB stored; largest MLflow database $(mib "$largest_db") MiB; stack: ${OWN_STACK:+seed ${KDL_BENCH_SEED:-small}, started in }${OWN_STACK:-$env_file}" >&2
  echo "| run | seconds | exit | peak RSS (MiB) | bound | largest process | peak TMPDIR (MiB) | bound |"
  echo "|---|---|---|---|---|---|---|---|"
  local name seconds status rss tmp process
  for line in "${rows[@]}"; do
    name=${line%%|*}
    read -r seconds status rss tmp process <<<"${line#*|}"
    ((status == 0)) || echo "verify bench: $name exited $status (its last lines are above)" >&2
    printf '| %s | %s | %s | %s | 64 | %s | %s | %s |\n' "$name" "$seconds" "$status" "$(mib $((rss * 1024)))" "${process//_/ }" "$(mib "$tmp")" \
      "$(mib $((largest_db + 1048576)))"
  done
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
